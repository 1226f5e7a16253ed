"""Instance -> hub messages: what the fleet sends to the ingest queues.

| type | queue |
|---|---|
| `pattern_detection`, `code_analysis` | `pattern_messages` |
| `learned_patterns` (also sent as `learned_artifacts`, same shape) | `learned_patterns` |
| `heartbeat` | `instance_heartbeat` |

The sending instance is `instance_id`, or `source` when only that is given (seed messages carry
both, some only `source`); every model exposes it as the property `instance`. A timestamp is
required on all of them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic.json_schema import JsonDict
from pydantic_core import PydanticCustomError

from .base import (
    ContractModel,
    Count,
    InstanceId,
    Name,
    PatternType,
    ShortText,
    UnitFloat,
    UtcDatetime,
    _instance_id,
)

INGEST_QUEUE_OF_TYPE: dict[str, str] = {
    "pattern_detection": "pattern_messages",
    "code_analysis": "pattern_messages",
    "learned_patterns": "learned_patterns",
    "learned_artifacts": "learned_patterns",
    "heartbeat": "instance_heartbeat",
}

_INSTANCE_SCHEMA: JsonDict = {
    "anyOf": [{"required": ["instance_id"]}, {"required": ["source"]}],
}


class InstanceMessage(ContractModel):
    """Common head of instance -> hub messages: who sent it and when."""

    model_config = ConfigDict(json_schema_extra=_INSTANCE_SCHEMA)

    instance_id: InstanceId | None = Field(default=None, description="the sending instance")
    source: ShortText | None = Field(
        default=None,
        description="the sender as the seeds name it; used as the instance when instance_id is absent "
        "(then it must be a valid instance id)",
    )
    timestamp: UtcDatetime = Field(description="when the producer created the message (UTC)")

    @model_validator(mode="after")
    def _has_instance(self) -> InstanceMessage:
        if self.instance_id is None:
            if self.source is None:
                raise PydanticCustomError(
                    "bad_instance_id",
                    "neither instance_id nor source is given; one of them must name the sending instance",
                )
            _instance_id(self.source)
        return self

    @property
    def instance(self) -> str:
        """The sending instance: `instance_id`, or `source` when only that is given."""
        return self.instance_id or self.source  # type: ignore[return-value]


class Pattern(ContractModel):
    """One detected pattern (seed 003 kinds: framework, technology, microservice, code)."""

    pattern_type: PatternType
    name: Name
    confidence: UnitFloat | None = Field(default=None, description="detector confidence in [0, 1]")
    indicators: list[str] = Field(default_factory=list, description="evidence, e.g. 'mix.exs has :phoenix'")
    language: ShortText | None = None
    examples: list[Any] = Field(default_factory=list, description="free-form JSON examples")


class PatternDetection(InstanceMessage):
    """Patterns an instance detected in its code (seed 000 `pattern_detection`)."""

    type: Literal["pattern_detection"]
    patterns: list[Pattern]


class CodeAnalysis(InstanceMessage):
    """Result of a code analysis run on an instance (seed 001 `code_analysis`)."""

    type: Literal["code_analysis"]
    analysis: dict[str, Any] = Field(description="free-form JSON object")


class LearnedArtifact(ContractModel):
    """One learned artifact (template, prompt, rule ...) with optional per-artifact statistics."""

    artifact_id: ShortText
    artifact_type: ShortText | None = None
    name: Name | None = None
    content: Any = Field(default=None, description="free-form JSON")
    usage_count: Count | None = None
    success_rate: UnitFloat | None = None


class LearnedPatterns(InstanceMessage):
    """What an instance learned: artifacts with usage statistics (seed 000 `learned_patterns`)."""

    type: Literal["learned_patterns"]
    usage_count: Count
    success_rate: UnitFloat
    artifacts: list[LearnedArtifact]


class LearnedArtifacts(LearnedPatterns):
    """The same message under the seed 001 name `learned_artifacts`; stored like learned_patterns."""

    type: Literal["learned_artifacts"]  # type: ignore[assignment]


class Heartbeat(InstanceMessage):
    """Liveness of an instance; makes the instance known to the hub (and gives it an inbox)."""

    type: Literal["heartbeat"]
    version: ShortText | None = None
    status: ShortText | None = None


INGEST_MODELS: tuple[type[InstanceMessage], ...] = (
    PatternDetection,
    CodeAnalysis,
    LearnedPatterns,
    LearnedArtifacts,
    Heartbeat,
)
