-- Retention of the hub's ingest tables (queue_assets/operations/retention.py, docs/operations.md):
-- the daily retention job deletes rows by `stored_at` in bounded batches, so each table it trims
-- needs that index to find its oldest rows without a full scan. (hub.pattern_observations has had
-- one since 001.) Idempotent.
CREATE INDEX IF NOT EXISTS ingest_ledger_stored_at ON hub.ingest_ledger (stored_at);
CREATE INDEX IF NOT EXISTS learned_artifacts_stored_at ON hub.learned_artifacts (stored_at);
CREATE INDEX IF NOT EXISTS code_analyses_stored_at ON hub.code_analyses (stored_at);
CREATE INDEX IF NOT EXISTS heartbeats_stored_at ON hub.heartbeats (stored_at);
