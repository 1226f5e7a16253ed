"""The hub as a client of the HITL bridge (issue 12, seed 004): the `approval_request` it sends on
`approval_requests` when `QUEUE_ASSETS_PATTERN_APPROVAL=required`, and the `approval_response` it
accepts on its own reply queue `hub_approval_responses`.

The request keeps the seeds' `approval_request` shape (`request_id`, `agent_id`, `description`, a
`timestamp`) and adds `reply_to` and a `task` with the pattern and the enrichment a person is
asked to publish. The response is the seeds' `approval_response` made strict: it must name the
request, say `approved` true or false, and name the `reviewer`; `reason` is optional and capped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from .base import ContractModel, Name, PatternType, ShortText, UtcDatetime
from .enrichment import EnrichmentResult

HUB_APPROVAL_QUEUE = "hub_approval_responses"
MAX_REASON_CHARS = 2000


class ApprovalTask(ContractModel):
    kind: Literal["pattern_approval"] = "pattern_approval"
    pattern_type: PatternType
    name: Name
    version: int = Field(ge=1, description="the pattern version the person is asked about")
    instances: int = Field(ge=0, description="how many instances reported the key")
    aliases: list[str] = Field(default_factory=list)
    enrichment: EnrichmentResult
    provenance: dict[str, Any] = Field(description="provider, model and llm request id of the enrichment")
    response_schema: dict[str, Any]


class HubApprovalRequest(ContractModel):
    """The hub's `approval_request` on `approval_requests`; the bridge must answer on `reply_to`."""

    type: Literal["approval_request"] = "approval_request"
    request_id: ShortText
    agent_id: Literal["centralcloud"] = "centralcloud"
    reply_to: Literal["hub_approval_responses"] = "hub_approval_responses"
    timestamp: UtcDatetime
    description: str = Field(description="what the person is asked, in one paragraph")
    task: ApprovalTask


class HubApprovalResponse(ContractModel):
    """A person's decision on `hub_approval_responses`. Unknown fields are refused: a decision is
    only what it says."""

    model_config = {"extra": "forbid"}

    type: Literal["approval_response"] = "approval_response"
    request_id: ShortText
    approved: bool
    reviewer: ShortText = Field(description="who decided (a person's name or login)")
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_REASON_CHARS)] | None = (
        None
    )
    timestamp: UtcDatetime | None = None
    pattern_type: PatternType | None = Field(
        default=None, description="optional echo of the request's pattern; must match it if given"
    )
    name: Name | None = Field(default=None, description="optional echo of the request's pattern name")

    @property
    def instance(self) -> str:
        """The ledger's sender column: responses come from the HITL bridge, not from an instance."""
        return "hitl_bridge"
