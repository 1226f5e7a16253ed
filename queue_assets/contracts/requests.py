"""Request/reply messages of the service queues (seeds 002 and 004); the hub only observes them.

| queue | model | direction |
|---|---|---|
| `llm_requests` / `llm_results` | `LlmRequest` / `LlmResult` | agent -> LLM router -> agent |
| `approval_requests` / `approval_responses` | `ApprovalRequest` / `ApprovalResponse` | agent <-> HITL |
| `question_requests` / `question_responses` | `QuestionRequest` / `QuestionResponse` | agent <-> HITL |
| `job_requests` / `job_results` | `JobRequest` / `JobResult` | agent -> Genesis -> agent |

Real messages on these queues often carry no `type` (seed 004 sends
`{"agent_id": "test", "task": "hello"}`), so they are parsed by queue (`QUEUE_MODELS`,
`parse_for_queue`) and `type` defaults to the model's own type. A `type` naming *another* contract
type means the message is on the wrong queue; any other `type` value (e.g. a service's own job
kind) is kept as given. Correlation: a request's `request_id` is optional (the seed request has
none); a reply's `request_id` is required and refers to its request. Both also accept the name
`correlation_id`. All other fields are optional and unknown fields are kept.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import AliasChoices, BaseModel, Field

from .base import ContractModel, ShortText, UtcDatetime

_CORRELATION = AliasChoices("request_id", "correlation_id")


class ServiceMessage(ContractModel):
    """Common head of request/reply messages."""

    #: the `type` this model stands for in the discriminated union (overridden per class)
    TYPE: ClassVar[str] = ""
    type: str
    timestamp: UtcDatetime | None = None


class ServiceRequest(ServiceMessage):
    """A request; `request_id` lets its reply be matched to it."""

    request_id: ShortText | None = Field(
        default=None, validation_alias=_CORRELATION, description="correlation id (alias: correlation_id)"
    )
    agent_id: ShortText | None = None


class ServiceReply(ServiceMessage):
    """A reply; `request_id` names the request it answers."""

    request_id: ShortText = Field(
        validation_alias=_CORRELATION, description="id of the request answered (alias: correlation_id)"
    )


class LlmRequest(ServiceRequest):
    """An agent asks the LLM router for a completion."""

    TYPE: ClassVar[str] = "llm_request"
    type: str = "llm_request"
    task: Any = None


class LlmResult(ServiceReply):
    """The LLM router's answer to an `llm_request`."""

    TYPE: ClassVar[str] = "llm_result"
    type: str = "llm_result"
    result: Any = None
    error: Any = None


class ApprovalRequest(ServiceRequest):
    """An agent asks a human to approve a change."""

    TYPE: ClassVar[str] = "approval_request"
    type: str = "approval_request"
    description: Any = None


class ApprovalResponse(ServiceReply):
    """A human's approval decision."""

    TYPE: ClassVar[str] = "approval_response"
    type: str = "approval_response"
    approved: bool | None = None


class QuestionRequest(ServiceRequest):
    """An agent asks a human a question."""

    TYPE: ClassVar[str] = "question_request"
    type: str = "question_request"
    question: Any = None


class QuestionResponse(ServiceReply):
    """A human's answer to a `question_request`."""

    TYPE: ClassVar[str] = "question_response"
    type: str = "question_response"
    answer: Any = None


class JobRequest(ServiceRequest):
    """An agent asks Genesis to run a job (validate, lint, execute code)."""

    TYPE: ClassVar[str] = "job_request"
    type: str = "job_request"
    language: ShortText | None = None
    code: Any = None


class JobResult(ServiceReply):
    """Genesis's result for a `job_request`."""

    TYPE: ClassVar[str] = "job_result"
    type: str = "job_result"
    status: ShortText | None = None
    result: Any = None
    error: Any = None


QUEUE_MODELS: dict[str, type[BaseModel]] = {
    "llm_requests": LlmRequest,
    "llm_results": LlmResult,
    "approval_requests": ApprovalRequest,
    "approval_responses": ApprovalResponse,
    "question_requests": QuestionRequest,
    "question_responses": QuestionResponse,
    "job_requests": JobRequest,
    "job_results": JobResult,
}

SERVICE_MODELS: tuple[type[ServiceMessage], ...] = tuple(QUEUE_MODELS.values())  # type: ignore[arg-type]
