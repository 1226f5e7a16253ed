-- Pattern enrichment through the LLM router (issue 12). Idempotent. docs/patterns.md, "Enrichment".
--
-- One row per llm_request the hub sent. The row is inserted in the transaction that sends the
-- request (pgmq.send), so a request is never on llm_requests without its row, nor the reverse.
--   attempt      1, 2, ... per key; request_id = 'enrich-<type>-<key>-<attempt>-<random>'
--   status       in_flight -> answered | failed (the reply broke the contract) | timed_out
--   error        why it failed or timed out
--   late         answered after it had timed out (a late reply is still accepted while the key is
--                not yet enriched)
CREATE TABLE IF NOT EXISTS hub.enrichment_requests (
    request_id      text        PRIMARY KEY,
    pattern_type    text        NOT NULL,
    canonical_name  text        NOT NULL,
    attempt         integer     NOT NULL CHECK (attempt >= 1),
    status          text        NOT NULL DEFAULT 'in_flight'
                    CHECK (status IN ('in_flight', 'answered', 'failed', 'timed_out')),
    provider        text        NOT NULL,
    msg_id          bigint,
    sent_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    answered_at     timestamptz,
    error           text,
    late            boolean     NOT NULL DEFAULT false,
    FOREIGN KEY (pattern_type, canonical_name) REFERENCES hub.patterns (pattern_type, canonical_name)
);
-- At most one request in flight per key.
CREATE UNIQUE INDEX IF NOT EXISTS enrichment_requests_one_in_flight
    ON hub.enrichment_requests (pattern_type, canonical_name) WHERE status = 'in_flight';
CREATE INDEX IF NOT EXISTS enrichment_requests_key
    ON hub.enrichment_requests (pattern_type, canonical_name, attempt);
CREATE INDEX IF NOT EXISTS enrichment_requests_in_flight_sent
    ON hub.enrichment_requests (sent_at) WHERE status = 'in_flight';

-- Requests sent per UTC hour: the budget (QUEUE_ASSETS_LLM_MAX_PER_HOUR). The enrichment run locks
-- the hour's row, so two runs at once cannot both spend the same remainder.
CREATE TABLE IF NOT EXISTS hub.enrichment_budget (
    hour   timestamptz PRIMARY KEY,
    sent   integer     NOT NULL DEFAULT 0 CHECK (sent >= 0)
);

-- Why a pattern's enrichment failed for good (status enrichment_failed), for the UI and status.
ALTER TABLE hub.patterns ADD COLUMN IF NOT EXISTS enrichment_error text;

-- Keys waiting for enrichment, fast to find among many enriched ones.
CREATE INDEX IF NOT EXISTS patterns_to_enrich
    ON hub.patterns (instances DESC, first_seen) WHERE status IN ('observed', 'enriching');

-- The last pattern_learned broadcast of the key said provisional (one instance only): when a second
-- instance reports it, ingest broadcasts the confirmed version (provisional false) once.
ALTER TABLE hub.patterns ADD COLUMN IF NOT EXISTS broadcast_provisional boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS patterns_broadcast_provisional
    ON hub.patterns (pattern_type, canonical_name) WHERE broadcast_provisional;
