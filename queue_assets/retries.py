"""Retry policies of the scheduled and automation-triggered work, one place for all of them.

A transient failure (the Git remote or GitHub briefly unreachable, a database restart, a lock
timeout) must not leave a cycle failed until someone re-runs it. Each job's steps retry with
Dagster's exponential backoff from `QUEUE_ASSETS_RETRY_DELAY_S` (d, default 30 s): the n-th retry
waits (2^n - 1) * d, so 30, 90, 210, 450 s. The limits fit each job's cadence: the hourly jobs give
up within 2-6 minutes, well inside their hour; the daily export keeps trying for 13 minutes.
Op retries (not run retries): they need no daemon setting, keep the run and its logs in one place,
and wait in the run, so a retry never races the next tick.

What is not retried: a failed blocking asset check (the data is wrong, not the weather), and a
`dg.Failure(allow_retries=False)` raised for bad configuration. Every retried step is idempotent:
the Git and GitHub steps update the cycle's one branch and PR in place, the database steps are
single transactions or keyed upserts.
"""

from __future__ import annotations

import dagster as dg

from .settings import Settings, code_location_settings

MAX_RETRIES: dict[str, int] = {
    "pattern_aggregation_job": 2,
    "pattern_distribution": 3,  # the asset: its automation runs and pattern_sync_job
    "template_distribution_job": 3,
    "knowledge_export_job": 4,
    "queue_statistics_job": 2,
    "retention_job": 3,
}


def retry_policy(name: str, settings: Settings | None = None) -> dg.RetryPolicy:
    """The policy of job (or asset) `name`; its delay is `settings.retry_delay_s` (default: the
    settings the code location loads with, `code_location_settings`)."""
    if name not in MAX_RETRIES:
        raise KeyError(f"no retry policy for {name!r}; known: {', '.join(sorted(MAX_RETRIES))}")
    return dg.RetryPolicy(
        max_retries=MAX_RETRIES[name],
        delay=(settings or code_location_settings()).retry_delay_s,
        backoff=dg.Backoff.EXPONENTIAL,
    )
