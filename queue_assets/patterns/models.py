"""Typed results of the SQL query API (`hub_api.*`), as the SDK returns them (pydantic only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    # Fields the API adds later are kept, not rejected: an older SDK keeps working.
    model_config = ConfigDict(extra="allow", frozen=True)


class Provenance(_Model):
    provider: str | None = None
    model: str | None = None
    request_id: str | None = None
    enriched_at: datetime | None = None


class PatternInfo(_Model):
    """One catalogue entry (`hub.patterns`), found by any of its names."""

    status: Literal["observed", "enriching", "enriched", "approved", "rejected", "enrichment_failed"]
    pattern_type: str
    name: str = Field(description="the canonical name (the key with pattern_type)")
    display_name: str
    aliases: list[str] = Field(default_factory=list, description="names sent for it, most observed first")
    instances: int
    observations: int
    confidence: float | None = None
    confidence_instances: int = 0
    languages: list[str] = Field(default_factory=list)
    top_indicators: list[str] = Field(default_factory=list)
    examples: list[Any] = Field(default_factory=list)
    first_seen: datetime
    last_seen: datetime
    rank: int | None = None
    version: int
    enrichment: dict[str, Any] | None = None
    provenance: Provenance | None = None
    approval: Literal["pending", "approved", "rejected"] | None = Field(
        default=None,
        description="QUEUE_ASSETS_PATTERN_APPROVAL=required: a person's decision (pending: not yet)",
    )
    reviewed_by: str | None = None
    review_reason: str | None = None

    @property
    def known(self) -> bool:
        return True


class UnknownPattern(_Model):
    """A miss: nobody has sent this pattern; the hub recorded a discovery request."""

    status: Literal["unknown"]
    pattern_type: str
    name: str = Field(description="the canonical name that was looked up")
    asked_name: str
    discovery_request_id: int

    @property
    def known(self) -> bool:
        return False


class PatternList(_Model):
    patterns: list[PatternInfo]
    count: int
    limit: int


class PatternDiscovery(_Model):
    """The message `hub_api.query_pattern` sends to `pgmq.pattern_discovery` on a miss."""

    type: Literal["pattern_discovery"]
    source: str
    timestamp: datetime
    request_id: int
    pattern_type: str
    name: str
    canonical_name: str
    window_start: datetime


def parse_query_result(doc: dict[str, Any]) -> PatternInfo | UnknownPattern:
    """The JSON of `hub_api.query_pattern` as a model."""
    if doc.get("status") == "unknown":
        return UnknownPattern.model_validate(doc)
    return PatternInfo.model_validate(doc)
