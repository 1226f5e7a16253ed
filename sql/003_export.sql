-- The learned-pattern export (KnowledgeExportWorker): per-cycle snapshots of the fleet's learning
-- and one record per export cycle. Applied by `queue-assets init`; idempotent.

-- aggregated_learning: hub.learned_artifacts combined per artifact_id, one snapshot per cycle
-- (the cycle's date, UTC). A re-run of a cycle replaces its snapshot.
--   total_usage     sum of usage_count over every stored report (each report counts the usage an
--                   instance observed since its previous report)
--   success_rate    usage-weighted mean of success_rate (plain mean when total_usage is 0),
--                   rounded to 6 decimals so the export's bytes do not depend on summation order
--   instances       the distinct instances that reported the artifact, sorted
--   artifact_type, name, content   from the newest report (observed_at, then stored_at)
--   selected        whether it passed the cycle's thresholds and goes into the export
-- No CHECK on success_rate: the blocking asset check reports a bad value instead of a failed insert.
CREATE TABLE IF NOT EXISTS hub.aggregated_learning (
    cycle_date       date        NOT NULL,
    artifact_id      text        NOT NULL,
    artifact_type    text,
    name             text,
    content          jsonb,
    total_usage      bigint      NOT NULL,
    success_rate     double precision NOT NULL,
    report_count     bigint      NOT NULL,
    instance_count   integer     NOT NULL,
    instances        text[]      NOT NULL,
    first_seen       timestamptz NOT NULL,
    last_seen        timestamptz NOT NULL,
    selected         boolean     NOT NULL,
    computed_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (cycle_date, artifact_id)
);
CREATE INDEX IF NOT EXISTS aggregated_learning_selected
    ON hub.aggregated_learning (cycle_date, total_usage DESC, artifact_id) WHERE selected;

-- exports: one row per cycle, updated in place by every run of that cycle.
--   status  push_failed   the remote refused the push (error says why); nothing else happened
--           pushed        the branch is on the remote; the pull request step has not finished
--           pr_failed     the branch is on the remote; opening/updating the PR failed (error)
--           pr_open       the branch is on the remote and its PR is open (pr_url)
--           branch_only   no PR provider is configured: the pushed branch is the export
--           no_diff       the base branch already holds exactly this content: no branch, no PR
--   notified_sha / notified_pr_url   what the last `learning_exported` fan-out announced, so a
--           re-run that changed nothing announces nothing
CREATE TABLE IF NOT EXISTS hub.exports (
    cycle_date       date        PRIMARY KEY,
    branch           text        NOT NULL,
    base_branch      text        NOT NULL,
    remote_url       text        NOT NULL,
    commit_sha       text,
    artifact_count   integer     NOT NULL CHECK (artifact_count >= 0),
    status           text        NOT NULL CHECK (status IN
                     ('push_failed', 'pushed', 'pr_failed', 'pr_open', 'branch_only', 'no_diff')),
    provider         text,
    pr_number        integer,
    pr_url           text,
    error            text,
    attempts         integer     NOT NULL DEFAULT 1,
    last_run_id      text,
    notified_sha     text,
    notified_pr_url  text,
    notified_at      timestamptz,
    notified_count   integer,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
