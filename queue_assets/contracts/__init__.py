"""Message contracts of the hub: pydantic models, parsing with dead-letter reasons, JSON Schema.

Pure Python (pydantic only): no Dagster, no database. Modules:

- `base`: field types (instance ids, names, UTC timestamps, unit floats, counts) and limits;
- `ingest`: instance -> hub messages (`pattern_detection`, `code_analysis`, `learned_patterns` /
  `learned_artifacts`, `heartbeat`);
- `hub`: hub -> instance messages (`aggregated_patterns`, `patterns_updated`, `templates_updated`,
  `learning_exported`, `aggregated_learning`, `pattern_learned`);
- `requests`: request/reply messages of the service queues and `QUEUE_MODELS`;
- `errors`: `ContractError` and the wording of reasons;
- `parse`: the `Message` union and `parse_message` / `parse_ingest` / `parse_for_queue`;
- `schema`: JSON Schema + `docs/contracts.md` generation (`python -m queue_assets.contracts.schema`).
"""

from .base import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_YEAR,
    MIN_YEAR,
    PATTERN_TYPES,
    ContractModel,
    InstanceId,
    Name,
    UtcDatetime,
    parse_timestamp,
)
from .errors import ERROR_KINDS, ContractError
from .hub import (
    AggregatedLearning,
    AggregatedPattern,
    AggregatedPatterns,
    HubMessage,
    LearningExported,
    PatternsUpdated,
    TemplatesUpdated,
)
from .ingest import (
    CodeAnalysis,
    Heartbeat,
    InstanceMessage,
    LearnedArtifact,
    LearnedArtifacts,
    LearnedPatterns,
    Pattern,
    PatternDetection,
)
from .parse import (
    ALL_TYPES,
    HUB_MESSAGE_TYPES,
    INGEST_MESSAGE_TYPES,
    INGEST_TYPES,
    MODEL_OF_TYPE,
    QUEUE_OF_TYPE,
    SERVICE_MESSAGE_TYPES,
    HubToInstanceMessage,
    IngestMessage,
    Message,
    model_for_type,
    nesting_depth,
    parse_for_queue,
    parse_ingest,
    parse_ingest_as,
    parse_message,
)
from .requests import (
    QUEUE_MODELS,
    ApprovalRequest,
    ApprovalResponse,
    JobRequest,
    JobResult,
    LlmRequest,
    LlmResult,
    QuestionRequest,
    QuestionResponse,
    ServiceMessage,
    ServiceReply,
    ServiceRequest,
)

__all__ = [
    "ALL_TYPES",
    "ERROR_KINDS",
    "HUB_MESSAGE_TYPES",
    "INGEST_MESSAGE_TYPES",
    "INGEST_TYPES",
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_YEAR",
    "MIN_YEAR",
    "MODEL_OF_TYPE",
    "PATTERN_TYPES",
    "QUEUE_MODELS",
    "QUEUE_OF_TYPE",
    "SERVICE_MESSAGE_TYPES",
    "AggregatedLearning",
    "AggregatedPattern",
    "AggregatedPatterns",
    "ApprovalRequest",
    "ApprovalResponse",
    "CodeAnalysis",
    "ContractError",
    "ContractModel",
    "Heartbeat",
    "HubMessage",
    "HubToInstanceMessage",
    "IngestMessage",
    "InstanceId",
    "InstanceMessage",
    "JobRequest",
    "JobResult",
    "LearnedArtifact",
    "LearnedArtifacts",
    "LearnedPatterns",
    "LearningExported",
    "LlmRequest",
    "LlmResult",
    "Message",
    "Name",
    "Pattern",
    "PatternDetection",
    "PatternsUpdated",
    "QuestionRequest",
    "QuestionResponse",
    "ServiceMessage",
    "ServiceReply",
    "ServiceRequest",
    "TemplatesUpdated",
    "UtcDatetime",
    "model_for_type",
    "nesting_depth",
    "parse_for_queue",
    "parse_ingest",
    "parse_ingest_as",
    "parse_message",
    "parse_timestamp",
]
