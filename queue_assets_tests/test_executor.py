"""Every job runs in its run's own process (issue 13, item 2): no step subprocess per step."""

from __future__ import annotations

import dagster as dg

from queue_assets.definitions import defs

LINEAGE_JOBS = {
    "pattern_aggregation_job",
    "pattern_sync_job",
    "template_distribution_job",
    "knowledge_export_job",
    "queue_statistics_job",
    "retention_job",
    "bootstrap_job",
    "dlq_redrive_job",
}


def test_every_job_uses_the_in_process_executor():
    """Breaks if `definitions.py` loses `executor=dg.in_process_executor` (every job but the ingest
    ones falls back to Dagster's multiprocess default), or if a job sets another executor of its own.
    The implicit asset job (`__ASSET_JOB`: UI materialisations, automation-condition runs such as
    pattern sync's) is included."""
    jobs = {job.name: job for job in defs.resolve_all_job_defs()}
    assert LINEAGE_JOBS <= set(jobs)
    assert any(name.startswith("__ASSET_JOB") for name in jobs)
    not_in_process = {
        name: job.executor_def.name
        for name, job in jobs.items()
        if job.executor_def.name != dg.in_process_executor.name
    }
    assert not_in_process == {}
    for name in jobs:  # the same through the lookup by name
        assert defs.resolve_job_def(name).executor_def.name == dg.in_process_executor.name
