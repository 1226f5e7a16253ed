"""Run overhead per job: a real run's wall time minus the time its steps compute.

    .venv/bin/python bench/bench_run_overhead.py [--server URL] [--code DIR] [--rounds 2]

Each job runs as a real Dagster run, launched the way a person does it from the shell:
`dagster job execute -m queue_assets.definitions -j <job>` in a fresh process with its own
`DAGSTER_HOME` (SQLite storage), on a fresh bootstrapped database with a little demo traffic
ingested first (ingest runs do not linger), a local `templates_data` remote, and no GitHub (the export's branch alone).
From each run's event log: `run` = RUN_START -> RUN_SUCCESS/FAILURE, `steps` = the sum over its
steps of STEP_START -> STEP_SUCCESS/FAILURE (the compute, what the run is for), `overhead` =
run - steps (step processes, their imports, executor plumbing); `process` is the whole command,
its interpreter start and code-location import included. Medians over `--rounds`.

`--code DIR` measures another checkout's code (e.g. a `git archive` of an older commit): it is put
first on PYTHONPATH of the `dagster` command.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fresh_database, parse_args  # noqa: E402
from queue_assets import simulate  # noqa: E402
from queue_assets.git.repo import ensure_embedded_templates_remote  # noqa: E402
from queue_assets.ingest.core import IngestConfig, ingest_queue  # noqa: E402
from queue_assets.queues import INGEST_ASSET_FOR  # noqa: E402

JOBS = [
    "ingest_pattern_messages_job",
    "pattern_aggregation_job",
    "pattern_sync_job",
    "template_distribution_job",
    "knowledge_export_job",
    "queue_statistics_job",
    "retention_job",
]
"""The jobs of the first measurement (before/after the in-process executor), in its order; every other
job of the definitions follows (`all_jobs`), so a job added later is measured without editing this."""
PARTITIONED = {"knowledge_export_job"}
# Jobs that need run config: the redrive acts on every dead letter, as a dry run (it changes nothing).
RUN_CONFIG = {
    "dlq_redrive_job": "ops:\n  redrive_dead_letters:\n    config:\n      all: true\n      dry_run: true\n",
}


def all_jobs() -> list[str]:
    """JOBS, then every other job of `queue_assets.definitions` (not Dagster's implicit asset job)."""
    from queue_assets.definitions import defs

    names = sorted(j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__"))
    return JOBS + [n for n in names if n not in JOBS]


END_EVENTS = {dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE}
STEP_END = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}


def seed(url: str) -> None:
    """A little demo traffic (5 instances, ~4 s), ingested, so aggregation and export have rows."""
    import psycopg

    simulate.run(url, instances=5, rate=50.0, duration_s=4, invalid_every=0)
    with psycopg.connect(url) as conn:
        for queue in INGEST_ASSET_FOR:
            ingest_queue(conn, queue, IngestConfig())


def run_times(instance: dg.DagsterInstance, run_id: str) -> tuple[float, float, str]:
    """(run wall, sum of step compute, status) from the run's event log."""
    records = instance.get_records_for_run(run_id).records
    run_start = run_end = None
    step_start: dict[str, float] = {}
    steps = 0.0
    status = "?"
    for rec in records:
        ev = rec.event_log_entry
        if not ev.dagster_event:
            continue
        kind = ev.dagster_event.event_type
        if kind == dg.DagsterEventType.RUN_START:
            run_start = ev.timestamp
        elif kind in END_EVENTS:
            run_end, status = ev.timestamp, "ok" if kind == dg.DagsterEventType.RUN_SUCCESS else "failed"
        elif kind == dg.DagsterEventType.STEP_START:
            step_start[ev.step_key] = ev.timestamp
        elif kind in STEP_END and ev.step_key in step_start:
            steps += ev.timestamp - step_start.pop(ev.step_key)
    return (run_end - run_start) if run_start and run_end else float("nan"), steps, status


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        code=(str, None, "checkout whose code to measure (default: this one)"),
        rounds=(int, 2, "runs per job (medians reported)"),
    )
    url, label, drop = fresh_database(args.server)
    try:
        with tempfile.TemporaryDirectory(prefix="qa-run-overhead-") as tmp:
            home, data = Path(tmp) / "dagster_home", Path(tmp) / "data"
            home.mkdir()
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # SQLite storage here
            data.mkdir()
            env = {
                **os.environ,
                "DAGSTER_HOME": str(home),
                "SHARED_QUEUE_DB_URL": url,
                "QUEUE_ASSETS_DATA_DIR": str(data),
                "QUEUE_ASSETS_RUN_LINGER_S": "0",
                "TEMPLATES_REPO_URL": ensure_embedded_templates_remote(data),
            }
            for var in ("GITHUB_REPOSITORY", "GITHUB_TOKEN", "DAGSTER_PG_URL"):
                env.pop(var, None)
            if args.code:
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.code, env.get("PYTHONPATH")]))
            seed(url)
            dagster = str(Path(sys.executable).parent / "dagster")
            cycle = datetime.now(UTC).date().isoformat()
            jobs = all_jobs()
            process: dict[str, list[float]] = {j: [] for j in jobs}
            for _ in range(args.rounds):
                for job in jobs:
                    cmd = [dagster, "job", "execute", "-m", "queue_assets.definitions", "-j", job]
                    if job in PARTITIONED:
                        cmd += ["--tags", f'{{"dagster/partition": "{cycle}"}}']
                    if job in RUN_CONFIG:
                        config = Path(tmp) / f"{job}.yaml"
                        config.write_text(RUN_CONFIG[job])
                        cmd += ["-c", str(config)]
                    started = time.monotonic()
                    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=args.code or None)
                    process[job].append(time.monotonic() - started)
                    if done.returncode:
                        print(f"{job}: exit {done.returncode}\n{done.stderr[-2000:]}", file=sys.stderr)
            os.environ["DAGSTER_HOME"] = str(home)
            with dg.DagsterInstance.get() as instance:
                per_job: dict[str, list[tuple[float, float, str]]] = {j: [] for j in jobs}
                for rec in instance.get_run_records():
                    job = rec.dagster_run.job_name
                    if job in per_job:
                        per_job[job].append(run_times(instance, rec.dagster_run.run_id))
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"server: {label}\ncode: {args.code or 'this checkout'}\nload average: {load}\n")
        print("| job | status | run (s) | steps (s) | overhead (s) | process (s) |")
        print("|---|---|---:|---:|---:|---:|")
        for job in jobs:
            rows = per_job[job]
            if not rows:
                print(f"| `{job}` | no run | | | | |")
                continue
            med = statistics.median
            status = "/".join(sorted({r[2] for r in rows}))
            print(
                f"| `{job}` | {status} | {med(r[0] for r in rows):.2f} | {med(r[1] for r in rows):.2f} "
                f"| {med(r[0] - r[1] for r in rows):.2f} | {med(process[job]):.2f} |"
            )
    finally:
        drop()


if __name__ == "__main__":
    main()
