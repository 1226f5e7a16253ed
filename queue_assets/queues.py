"""The catalog of queues the hub knows: who writes them, who reads them, and their dead-letter queues."""

from __future__ import annotations

from .names import dlq_for

# Seed 004: the eight request/reply queues of the other services. The hub only observes them.
REQUEST_REPLY_QUEUES: tuple[str, ...] = (
    "llm_requests",
    "llm_results",
    "approval_requests",
    "approval_responses",
    "question_requests",
    "question_responses",
    "job_requests",
    "job_results",
)
# Seed 004: which reply queue answers which request queue (paired by correlation id).
REPLY_QUEUE_FOR: dict[str, str] = {
    "llm_requests": "llm_results",
    "approval_requests": "approval_responses",
    "question_requests": "question_responses",
    "job_requests": "job_results",
}

# Seed 000: the four queues added for pattern learning.
PATTERN_MESSAGES = "pattern_messages"
LEARNED_PATTERNS = "learned_patterns"
TEMPLATE_UPDATES = "template_updates"
INSTANCE_HEARTBEAT = "instance_heartbeat"
HUB_QUEUES: tuple[str, ...] = (PATTERN_MESSAGES, LEARNED_PATTERNS, TEMPLATE_UPDATES, INSTANCE_HEARTBEAT)

# The queues the hub consumes, and the ingest asset that drains each.
INGEST_ASSET_FOR: dict[str, str] = {
    PATTERN_MESSAGES: "pattern_messages",
    LEARNED_PATTERNS: "learned_patterns",
    INSTANCE_HEARTBEAT: "instance_heartbeats",
}
CONSUMED_QUEUES: tuple[str, ...] = tuple(INGEST_ASSET_FOR)
DLQ_QUEUES: tuple[str, ...] = tuple(dlq_for(q) for q in CONSUMED_QUEUES)

# The pattern authority (issue 11): hub_api.query_pattern sends one message here per unknown
# pattern key per hour; the hub's enrichment consumes it.
PATTERN_DISCOVERY = "pattern_discovery"
# Issue 12: the hub's own reply queue for its llm_requests (`reply_to`); the hub never reads llm_results.
HUB_LLM_RESULTS = "hub_llm_results"
# Issue 12: the hub's own reply queue for its approval_requests (QUEUE_ASSETS_PATTERN_APPROVAL=required);
# the hub never reads approval_responses.
HUB_APPROVAL_RESPONSES = "hub_approval_responses"
PATTERN_QUEUES: tuple[str, ...] = (
    PATTERN_DISCOVERY,
    dlq_for(PATTERN_DISCOVERY),
    HUB_LLM_RESULTS,
    dlq_for(HUB_LLM_RESULTS),
    HUB_APPROVAL_RESPONSES,
    dlq_for(HUB_APPROVAL_RESPONSES),
)

# Replies to the hub's own requests, ingested like the consumed queues (ledger, DLQ) but NOT writable
# by instances (they are not in CONSUMED_QUEUES, whose send rights security.py grants to instances).
REPLY_INGEST_ASSET_FOR: dict[str, str] = {
    HUB_LLM_RESULTS: "enrichment_replies",
    HUB_APPROVAL_RESPONSES: "approval_decisions",
}

ALL_STATIC_QUEUES: tuple[str, ...] = REQUEST_REPLY_QUEUES + HUB_QUEUES + DLQ_QUEUES + PATTERN_QUEUES

# Topics the hub publishes on (pgmq.send_topic); every inbox binds `hub.#`.
TOPIC_PREFIX = "hub"
INBOX_BINDING = "hub.#"
