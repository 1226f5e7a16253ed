-- A person in the loop (issue 12, seed 004's HITL queues). Idempotent. docs/patterns.md, "Approval".
--
-- With QUEUE_ASSETS_PATTERN_APPROVAL=required, an enriched pattern is not broadcast: the ingest of
-- its llm_result sends one approval_request (reply_to hub_approval_responses) and records it here,
-- in the same transaction. The ingest of hub_approval_responses decides it exactly once.
--   request_id   'approve-<type>-<key>-v<version>-<random>'
--   version      the pattern version the person was asked about
--   proposal     the enrichment the person was shown (kept after a rejection, for the record)
--   status       pending -> approved | rejected
CREATE TABLE IF NOT EXISTS hub.pattern_approvals (
    request_id            text        PRIMARY KEY,
    pattern_type          text        NOT NULL,
    canonical_name        text        NOT NULL,
    version               integer     NOT NULL,
    enrichment_request_id text,
    proposal              jsonb       NOT NULL,
    msg_id                bigint,
    status                text        NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('pending', 'approved', 'rejected')),
    sent_at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    decided_at            timestamptz,
    reviewer              text,
    reason                text,
    FOREIGN KEY (pattern_type, canonical_name) REFERENCES hub.patterns (pattern_type, canonical_name)
);
-- At most one approval pending per key.
CREATE UNIQUE INDEX IF NOT EXISTS pattern_approvals_one_pending
    ON hub.pattern_approvals (pattern_type, canonical_name) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS pattern_approvals_key ON hub.pattern_approvals (pattern_type, canonical_name);

-- The decision on the catalogue row, so hub_api.query_pattern returns it with the pattern:
--   approval       NULL (approval off), pending, approved or rejected
--   reviewed_by, review_reason, reviewed_at   who decided, why, when
ALTER TABLE hub.patterns ADD COLUMN IF NOT EXISTS approval text
    CHECK (approval IN ('pending', 'approved', 'rejected'));
ALTER TABLE hub.patterns ADD COLUMN IF NOT EXISTS reviewed_by text;
ALTER TABLE hub.patterns ADD COLUMN IF NOT EXISTS review_reason text;
ALTER TABLE hub.patterns ADD COLUMN IF NOT EXISTS reviewed_at timestamptz;
