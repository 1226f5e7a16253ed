-- Aggregation, fan-out and distribution state (issue 3, part A). Idempotent; recorded in
-- hub.schema_migrations. Column meanings are documented in docs/aggregation.md.

-- One row per aggregation run. The ranking of a run is in hub.aggregated_pattern_snapshots.
CREATE TABLE IF NOT EXISTS hub.aggregation_runs (
    run_id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at      timestamptz,
    observations     bigint,          -- observation rows the run aggregated
    patterns         integer,         -- distinct (pattern_type, name)
    instances        integer,         -- distinct instances across all observations
    max_stored_at    timestamptz,     -- newest stored_at seen; rows stored later count next run
    dagster_run_id   text
);
CREATE INDEX IF NOT EXISTS aggregation_runs_started_at ON hub.aggregation_runs (started_at);

-- The current ranking: one row per (pattern_type, name), replaced as a whole by each run.
-- No CHECK constraints on the computed values on purpose: the blocking asset checks are the guard,
-- and a corrupted row must be visible to them rather than rejected silently.
CREATE TABLE IF NOT EXISTS hub.aggregated_patterns (
    pattern_type       text             NOT NULL,
    name               text             NOT NULL,
    rank               integer          NOT NULL,
    score              double precision NOT NULL,
    instance_count     integer          NOT NULL,
    observation_count  bigint           NOT NULL,
    confidence         double precision,           -- instance-balanced mean; NULL if none reported
    confidence_instances integer        NOT NULL,  -- instances that reported a confidence
    language           text,                       -- most observed language, if any
    first_seen         timestamptz      NOT NULL,
    last_seen          timestamptz      NOT NULL,
    top_indicators     text[]           NOT NULL DEFAULT '{}',
    run_id             bigint           NOT NULL REFERENCES hub.aggregation_runs (run_id),
    PRIMARY KEY (pattern_type, name)
);
CREATE INDEX IF NOT EXISTS aggregated_patterns_rank ON hub.aggregated_patterns (rank);

-- Every run's ranking, kept for the retention period, so rank history is visible.
CREATE TABLE IF NOT EXISTS hub.aggregated_pattern_snapshots (
    run_id             bigint           NOT NULL REFERENCES hub.aggregation_runs (run_id) ON DELETE CASCADE,
    snapshot_at        timestamptz      NOT NULL,
    pattern_type       text             NOT NULL,
    name               text             NOT NULL,
    rank               integer          NOT NULL,
    score              double precision NOT NULL,
    instance_count     integer          NOT NULL,
    observation_count  bigint           NOT NULL,
    confidence         double precision,
    PRIMARY KEY (run_id, pattern_type, name)
);
CREATE INDEX IF NOT EXISTS aggregated_pattern_snapshots_pattern
    ON hub.aggregated_pattern_snapshots (pattern_type, name, run_id);

-- Rank history for people: each snapshot row with the pattern's rank in its previous snapshot.
CREATE OR REPLACE VIEW hub.pattern_rank_history AS
SELECT s.pattern_type,
       s.name,
       s.run_id,
       s.snapshot_at,
       s.rank,
       lag(s.rank) OVER w AS previous_rank,
       lag(s.rank) OVER w - s.rank AS rank_change,   -- positive: moved up
       s.score,
       s.instance_count,
       s.observation_count,
       s.confidence
FROM hub.aggregated_pattern_snapshots s
WINDOW w AS (PARTITION BY s.pattern_type, s.name ORDER BY s.run_id);

-- Inbox state per instance, kept by fanout.sync_inboxes: 'active' inboxes are bound to the hub's
-- topics and receive every publication; 'stale' ones keep their queue but are unbound.
CREATE TABLE IF NOT EXISTS hub.instance_inboxes (
    instance_id      text        PRIMARY KEY,
    inbox_queue      text        NOT NULL UNIQUE,
    state            text        NOT NULL CHECK (state IN ('active', 'stale')),
    state_since      timestamptz NOT NULL,
    last_heartbeat   timestamptz,
    synced_at        timestamptz NOT NULL
);

-- What the hub has published to the instances (log), one row per publication.
CREATE TABLE IF NOT EXISTS hub.distributions (
    distribution_id  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text        NOT NULL CHECK (kind IN ('aggregated_patterns', 'templates_updated')),
    git_url          text        NOT NULL,   -- without credentials
    commit           text,
    previous_commit  text,
    files            text[]      NOT NULL DEFAULT '{}',
    aggregation_run_id bigint,
    inbox_copies     integer     NOT NULL,   -- copies delivered by pgmq.send_topic
    queue_msg_id     bigint,                 -- message id in the template_updates queue, if sent there
    published_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    dagster_run_id   text
);
CREATE INDEX IF NOT EXISTS distributions_kind ON hub.distributions (kind, distribution_id);

-- The last commit each distribution has handled, per repository (credential-free URL).
CREATE TABLE IF NOT EXISTS hub.distribution_state (
    kind             text        NOT NULL,
    git_url          text        NOT NULL,
    last_commit      text        NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (kind, git_url)
);
