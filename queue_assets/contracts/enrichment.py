"""The hub as a client of the LLM router (issue 12): its `llm_request`, the router's `llm_result` on
`hub_llm_results`, and the length-limited enrichment every reply must parse into before anything is
stored. `pattern_learned` (the broadcast) is a hub -> instance message: `contracts.hub.PatternLearned`.

The generic `LlmRequest`/`LlmResult` (contracts.requests) describe what agents exchange and accept
almost anything; the models here are the hub's own, strict subset: a reply to the hub must name a
request id, and its `result` must fit `EnrichmentResult` (else it is a failed attempt, never a
stored pattern).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from .base import ContractModel, Name, PatternType, ShortText, UtcDatetime

HUB_REPLY_QUEUE = "hub_llm_results"
MAX_DESCRIPTION_CHARS = 2000
MAX_LIST_ITEMS = 20
MAX_ITEM_CHARS = 200

_Item = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ITEM_CHARS)]
_Items = Annotated[list[_Item], Field(max_length=MAX_LIST_ITEMS)]


class StrictModel(ContractModel):
    """Unknown fields are refused: an LLM's extra prose never rides along into the catalogue."""

    model_config = {"extra": "forbid"}


class Detection(StrictModel):
    files: _Items = Field(
        default_factory=list, description=f"file names that reveal it (at most {MAX_LIST_ITEMS})"
    )
    dependencies: _Items = Field(default_factory=list, description="package names that reveal it")


class EnrichmentResult(StrictModel):
    """What an enrichment may store about a pattern: every string and list is capped."""

    description: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_DESCRIPTION_CHARS)
    ]
    detection: Detection = Field(default_factory=Detection)
    related: _Items = Field(default_factory=list, description="related pattern names")
    languages: _Items = Field(default_factory=list, description="programming languages")


class Evidence(ContractModel):
    """What instances sent about the key (untrusted; each string already truncated by the hub)."""

    instances: int = Field(ge=0)
    names: list[str] = Field(default_factory=list)
    indicators: list[str] = Field(default_factory=list)
    examples: list[str] = Field(default_factory=list)


class EnrichmentTask(ContractModel):
    kind: Literal["pattern_enrichment"] = "pattern_enrichment"
    pattern_type: PatternType
    name: Name
    prompt: str = Field(description="the full prompt; the evidence is inside a delimited JSON block")
    evidence: Evidence
    response_schema: dict[str, Any]


class HubLlmRequest(ContractModel):
    """The hub's `llm_request` on `llm_requests`; the router must answer on `reply_to`."""

    type: Literal["llm_request"] = "llm_request"
    request_id: ShortText
    agent_id: Literal["centralcloud"] = "centralcloud"
    reply_to: Literal["hub_llm_results"] = "hub_llm_results"
    timestamp: UtcDatetime
    task: EnrichmentTask


class HubLlmResult(ContractModel):
    """A reply on `hub_llm_results`. `result` is checked against `EnrichmentResult` separately, so a
    reply that names its request but carries garbage still counts as that request's failed attempt."""

    type: Literal["llm_result"] = "llm_result"
    request_id: ShortText
    model: ShortText | None = None
    timestamp: UtcDatetime | None = None
    result: Any = None
    error: Any = None

    @property
    def instance(self) -> str:
        """The ledger's sender column: replies come from the router, not from an instance."""
        return "llm_router"
