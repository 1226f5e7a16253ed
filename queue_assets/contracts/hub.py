"""Hub -> instances messages: what the hub publishes to the `inbox_<instance>` queues (via pgmq
topics) and, for `templates_updated`, to the `template_updates` queue.

These are built by the hub, so a timestamp is required on all of them; `source` defaults to
`centralcloud`. Instances should ignore fields they do not know (extra fields are kept here too).
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import AliasChoices, Field

from .base import (
    HUB_SOURCE,
    ContractModel,
    Count,
    Name,
    PatternType,
    ShortText,
    Text,
    UnitFloat,
    UtcDatetime,
)
from .ingest import LearnedArtifact


class HubMessage(ContractModel):
    """Common head of hub -> instance messages."""

    timestamp: UtcDatetime = Field(description="when the hub created the message (UTC)")
    source: ShortText = Field(default=HUB_SOURCE, description="always the hub")


class AggregatedPattern(ContractModel):
    """One entry of the hub's pattern ranking."""

    pattern_type: PatternType
    name: Name
    language: ShortText | None = None
    confidence: UnitFloat | None = Field(default=None, description="aggregated confidence in [0, 1]")
    success_rate: UnitFloat | None = None
    frequency: Count | None = Field(default=None, description="observations across the fleet")
    instance_count: Count | None = Field(default=None, description="distinct instances that reported it")
    score: float | None = Field(default=None, description="ranking score (higher ranks first)")
    rank: Count | None = Field(default=None, description="1-based position in the ranking")
    indicators: list[str] = Field(default_factory=list)
    examples: list[Any] = Field(default_factory=list)


class AggregatedPatterns(HubMessage):
    """The current pattern ranking (seed 000/001 `aggregated_patterns`)."""

    type: Literal["aggregated_patterns"]
    patterns: list[AggregatedPattern]
    stats: dict[str, Any] | None = Field(default=None, description="free-form JSON statistics")


class PatternsUpdated(HubMessage):
    """Aggregated patterns were committed to the templates repository (seed 001)."""

    type: Literal["patterns_updated"]
    git_url: Text = Field(
        validation_alias=AliasChoices("git_url", "url"), description="also accepted as `url`"
    )
    commit: ShortText | None = None
    updated_files: list[Text] = Field(default_factory=list)


class TemplatesUpdated(HubMessage):
    """Templates changed in the templates repository since the last distribution (seed 000)."""

    type: Literal["templates_updated"]
    git_url: Text
    commit: ShortText | None = Field(default=None, description="the commit the update is at")
    updated_files: list[Text] = Field(default_factory=list, description="paths changed since the last update")


class LearningExported(HubMessage):
    """Learned patterns were exported to a Git branch (and a pull request when configured)."""

    type: Literal["learning_exported"]
    branch: ShortText
    pr_url: Text | None = None
    artifacts_count: Count


class AggregatedLearning(HubMessage):
    """Aggregated learned artifacts across the fleet (seed 001 `aggregated_learning`)."""

    type: Literal["aggregated_learning"]
    artifacts: list[LearnedArtifact]
    export_pr_url: Text | None = None
    stats: dict[str, Any] | None = Field(default=None, description="free-form JSON statistics")


class PatternLearned(HubMessage):
    """A new visible version of a catalogue pattern (issue 12), sent to every active inbox with one
    `pgmq.send_topic`. `answers` lists the discovery request ids it answers; `provisional` is true
    while only one instance has seen the key (unless a person approved it)."""

    type: Literal["pattern_learned"]
    pattern_type: PatternType
    name: Name
    aliases: list[Name] = Field(default_factory=list)
    version: Count
    status: Literal["observed", "enriching", "enriched", "approved", "rejected", "enrichment_failed"]
    provisional: bool
    description: Text | None = None
    detection: dict[str, Any] | None = Field(
        default=None, description="files and dependencies that reveal it"
    )
    related: list[ShortText] = Field(default_factory=list)
    languages: list[ShortText] = Field(default_factory=list)
    answers: list[ShortText] = Field(default_factory=list, description="discovery request ids answered")
    reviewed_by: ShortText | None = Field(
        default=None, description="who approved or rejected it (QUEUE_ASSETS_PATTERN_APPROVAL=required)"
    )
    review_reason: Text | None = Field(default=None, description="the reviewer's reason, if given")


#: Final, not `tuple[type[HubMessage], ...]`: `isinstance(x, HUB_MODELS)` then narrows to the union.
HUB_MODELS: Final = (
    AggregatedPatterns,
    PatternsUpdated,
    TemplatesUpdated,
    LearningExported,
    AggregatedLearning,
    PatternLearned,
)
