"""Materialize the whole lineage of a running hub through the GraphQL API, as a person would from
the UI: the sensors ingest by themselves; every other asset job is launched once its upstream
assets have materialized, in waves (jobs of one wave run in parallel).

Which jobs exist and what they materialize comes from the code location, so assets added to the
project later are materialized too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .declared import AssetPath, Declared, label
from .graphql import FINISHED, DagsterGraphQL, Loaded

# Runs launched here execute in one process (the launchpad's `in_process` executor choice) instead
# of one process per step: the same code, and half the Python start-ups on a 2-core machine.
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


@dataclass
class LaunchedRun:
    job: str
    run_id: str
    status: str
    errors: list[str] = field(default_factory=list)


@dataclass
class LineageReport:
    runs: list[LaunchedRun] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)
    """Jobs never launched -> why (an upstream asset never materialized, or the deadline)."""
    skipped: list[str] = field(default_factory=list)
    """Jobs not launched because their assets had materialized already (by an automation sensor)."""

    def describe(self) -> str:
        lines = [
            f"{r.job} ({r.run_id[:8]}): {r.status}" + "".join(f"\n    {e[:400]}" for e in r.errors)
            for r in self.runs
        ]
        lines += [f"{job}: not launched: {why}" for job, why in self.blocked.items()]
        lines += [f"{job}: not launched: its assets had materialized already" for job in self.skipped]
        return "\n".join(lines) or "(no jobs)"


def materialized_assets(gql: DagsterGraphQL, keys: set[AssetPath]) -> set[AssetPath]:
    return {k for k in keys if gql.materializations(k, limit=1)}


def ingest_totals(gql: DagsterGraphQL, assets: set[AssetPath], metric: str) -> dict[AssetPath, int]:
    """Sum of an integer metadata entry (e.g. `stored`) over every materialization of each asset."""
    return {k: sum(m.ints.get(metric, 0) for m in gql.materializations(k)) for k in assets}


def wait_for_ingest(
    gql: DagsterGraphQL, expected_stored: dict[AssetPath, int], timeout_s: float
) -> dict[AssetPath, int]:
    """Poll every second until each ingest asset's materializations together report `expected_stored`
    (or more), or the deadline; returns the totals seen last. (An ingest run lingers on its empty
    queue for a while after its materialization; there is no need to wait for that.)"""
    deadline = time.monotonic() + timeout_s
    while True:
        totals = ingest_totals(gql, set(expected_stored), "stored")
        if all(totals[k] >= n for k, n in expected_stored.items()) or time.monotonic() > deadline:
            return totals
        time.sleep(1)


def upstream_materializable(loaded: Loaded, keys: set[AssetPath]) -> set[AssetPath]:
    """The nearest materializable ancestors of `keys`, looking through external assets (a queue, a
    Git repository) to whatever writes them."""
    seen: set[AssetPath] = set()
    out: set[AssetPath] = set()
    stack = [p for k in keys for p in loaded.parents.get(k, ())]
    while stack:
        key = stack.pop()
        if key in seen or key in keys:
            continue
        seen.add(key)
        if key in loaded.materializable:
            out.add(key)
        else:
            stack.extend(loaded.parents.get(key, ()))
    return out


def materialize_lineage(
    gql: DagsterGraphQL, declared: Declared, loaded: Loaded, timeout_s: float, log=print
) -> LineageReport:
    """Launch every asset job of `declared` that sensors do not launch, each once its upstream assets
    have materialized; wait for each wave. Jobs whose assets have all materialized already (e.g. by
    an automation sensor) are not launched again."""
    report = LineageReport()
    deadline = time.monotonic() + timeout_s
    done = materialized_assets(gql, set(loaded.materializable))
    # Sensor jobs too when their sensor had nothing to do (e.g. `enrichment_replies`: the demo has no
    # LLM router yet, so hub_llm_results stays empty); an ingest run on an empty queue materializes.
    pending = {
        j
        for j in declared.jobs
        if loaded.job_assets.get(j) and (j not in declared.sensor_jobs or not loaded.job_assets[j] <= done)
    }
    while pending:
        ready = sorted(j for j in pending if upstream_materializable(loaded, loaded.job_assets[j]) <= done)
        if not ready:
            for job in sorted(pending):
                missing = upstream_materializable(loaded, loaded.job_assets[job]) - done
                report.blocked[job] = "upstream never materialized: " + ", ".join(sorted(map(label, missing)))
            break
        wave = []
        for job in ready:
            pending.discard(job)
            if loaded.job_assets[job] <= done:
                report.skipped.append(job)
                log(f"lineage: {job}: its assets are materialized already; not launched")
                continue
            tags = {"queue_assets/launched_by": "test_ui"}
            if job in declared.partition_for_job:
                tags["dagster/partition"] = declared.partition_for_job[job]
            run_id = gql.launch(job, tags, IN_PROCESS if job in declared.in_process_capable else None)
            log(f"lineage: launched {job} ({run_id[:8]})")
            wave.append(LaunchedRun(job, run_id, "QUEUED"))
        statuses = gql.wait_for_runs([r.run_id for r in wave], max(1.0, deadline - time.monotonic()))
        for run in wave:
            run.status = statuses[run.run_id]
            if run.status != "SUCCESS":
                run.errors = gql.run_errors(run.run_id)
            log(f"lineage: {run.job} ({run.run_id[:8]}): {run.status}")
        report.runs += wave
        done = materialized_assets(gql, set(loaded.materializable))
        if any(s not in FINISHED for s in statuses.values()):
            for job in sorted(pending):
                report.blocked[job] = f"deadline of {timeout_s:.0f}s reached"
            break
    return report
