-- Issue 9, items 3 and 4. Idempotent; recorded in hub.schema_migrations.

-- exports.notify_error: why the last `learning_exported` announcement of the cycle failed (NULL:
-- none failed, or a later one succeeded). A failed announcement never changes `status`: the branch
-- and PR are made; the announcement stays pending (notified_sha differs) and the next run of the
-- cycle sends it.
ALTER TABLE hub.exports ADD COLUMN IF NOT EXISTS notify_error text;

-- aggregation_runs.published: whether the run's ranking became hub.aggregated_patterns. A run's
-- ranking is built in a staging table and swapped in only when the blocking checks pass on it;
-- a run whose ranking failed them is kept with published = false, its snapshot (for diagnosis)
-- and the problems the checks found (check_problems). Runs from before this migration were all
-- published.
ALTER TABLE hub.aggregation_runs ADD COLUMN IF NOT EXISTS published boolean NOT NULL DEFAULT true;
ALTER TABLE hub.aggregation_runs ADD COLUMN IF NOT EXISTS check_problems text[] NOT NULL DEFAULT '{}';

-- Rank history over the published rankings only: the moves people and instances really saw.
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
JOIN hub.aggregation_runs r USING (run_id)
WHERE r.published
WINDOW w AS (PARTITION BY s.pattern_type, s.name ORDER BY s.run_id);
