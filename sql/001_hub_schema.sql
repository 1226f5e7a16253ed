-- The hub's own tables (schema `hub`). pgmq's tables live in schema `pgmq` and are not created here.
-- Applied by `queue-assets init`; recorded in hub.schema_migrations. Idempotent.
CREATE SCHEMA IF NOT EXISTS hub;

-- Ingest ledger: one row per message the hub has taken from a consumed queue, whatever became of it.
-- (queue, msg_id) makes a re-read of the same message a no-op; (queue, instance_id, idempotency_key)
-- makes a producer's retry with the same key a no-op.
CREATE TABLE IF NOT EXISTS hub.ingest_ledger (
    queue            text        NOT NULL,
    msg_id           bigint      NOT NULL,
    message_type     text,
    instance_id      text,
    idempotency_key  text,
    outcome          text        NOT NULL CHECK (outcome IN ('stored', 'duplicate', 'dead_lettered')),
    enqueued_at      timestamptz NOT NULL,
    produced_at      timestamptz,
    stored_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    read_ct          integer     NOT NULL,
    PRIMARY KEY (queue, msg_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS ingest_ledger_idempotency
    ON hub.ingest_ledger (queue, instance_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL AND outcome = 'stored';

-- Instances, known through heartbeats (and any message that names one).
CREATE TABLE IF NOT EXISTS hub.instances (
    instance_id      text        PRIMARY KEY,
    inbox_queue      text        NOT NULL UNIQUE,
    first_seen       timestamptz NOT NULL,
    last_seen        timestamptz NOT NULL,
    last_heartbeat   timestamptz,
    version          text,
    status           text,
    heartbeat_count  bigint      NOT NULL DEFAULT 0
);

-- One row per pattern per stored pattern_detection message.
CREATE TABLE IF NOT EXISTS hub.pattern_observations (
    queue            text        NOT NULL,
    msg_id           bigint      NOT NULL,
    ordinal          integer     NOT NULL,
    instance_id      text        NOT NULL,
    pattern_type     text        NOT NULL,
    name             text        NOT NULL,
    confidence       double precision CHECK (confidence BETWEEN 0 AND 1),
    language         text,
    indicators       text[]      NOT NULL DEFAULT '{}',
    attributes       jsonb       NOT NULL DEFAULT '{}',
    observed_at      timestamptz NOT NULL,
    stored_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (queue, msg_id, ordinal)
);
CREATE INDEX IF NOT EXISTS pattern_observations_stored_at ON hub.pattern_observations (stored_at);

CREATE TABLE IF NOT EXISTS hub.code_analyses (
    queue            text        NOT NULL,
    msg_id           bigint      NOT NULL,
    instance_id      text        NOT NULL,
    analysis         jsonb       NOT NULL,
    observed_at      timestamptz NOT NULL,
    stored_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (queue, msg_id)
);

-- One row per artifact per stored learned_patterns message.
CREATE TABLE IF NOT EXISTS hub.learned_artifacts (
    queue            text        NOT NULL,
    msg_id           bigint      NOT NULL,
    ordinal          integer     NOT NULL,
    instance_id      text        NOT NULL,
    artifact_id      text        NOT NULL,
    artifact_type    text,
    name             text,
    content          jsonb,
    usage_count      bigint      NOT NULL CHECK (usage_count >= 0),
    success_rate     double precision NOT NULL CHECK (success_rate BETWEEN 0 AND 1),
    observed_at      timestamptz NOT NULL,
    stored_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (queue, msg_id, ordinal)
);
CREATE INDEX IF NOT EXISTS learned_artifacts_artifact ON hub.learned_artifacts (artifact_id);

-- Heartbeat log (one row per stored heartbeat); hub.instances holds the latest state.
CREATE TABLE IF NOT EXISTS hub.heartbeats (
    queue            text        NOT NULL,
    msg_id           bigint      NOT NULL,
    instance_id      text        NOT NULL,
    version          text,
    status           text,
    observed_at      timestamptz NOT NULL,
    stored_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (queue, msg_id)
);
