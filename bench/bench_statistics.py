"""queue_statistics over many inbox queues vs pgmq's own `pgmq.metrics_all()`, in the same run.

    .venv/bin/python bench/bench_statistics.py [--inboxes 1000] [--live 20] [--archived 30] [--rounds 3] [--server URL]

Creates `--inboxes` inbox queues (plus the 15 static ones), each with `--live` waiting messages and
`--archived` messages archived within the last hour, then times, alternating, per round:
- baseline: `SELECT * FROM pgmq.metrics_all()` (depth, oldest age, total sent: no archive figures);
- `collect_statistics` (every figure of the asset, UNION ALL of 25 queues per statement);
- `collect_statistics` with one statement per queue (chunk=1), for comparison;
- the whole `queue_statistics` asset through `dg.materialize` (statistics, three checks, history
  rows): `asset` is the wall time including Dagster's run set-up, `asset_step` the step alone.
Prints medians and the ratio of each to the baseline.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import dagster as dg
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fresh_database, parse_args  # noqa: E402
from queue_assets.operations.assets import queue_statistics  # noqa: E402
from queue_assets.operations.statistics import collect_statistics  # noqa: E402
from queue_assets.resources import SharedQueueResource  # noqa: E402


def populate(url: str, inboxes: int, live: int, archived: int) -> None:
    body = json.dumps({"type": "aggregated_patterns", "patterns": [{"name": "phoenix", "count": 3}]})
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(inboxes):
            queue = f"inbox_bench_{i:04d}"
            conn.execute("SELECT pgmq.create(%s)", (queue,))
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT * FROM pgmq.send_batch(%s, %s::jsonb[])", (queue, [body] * (live + archived))
                ).fetchall()
            ]
            conn.execute("SELECT pgmq.archive(%s, %s::bigint[])", (queue, ids[:archived]))
            if (i + 1) % 100 == 0:
                print(
                    f"\r  created {i + 1}/{inboxes} inboxes ({time.monotonic() - started:.0f}s)",
                    end="",
                    flush=True,
                )
    print()


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    args = parse_args(
        __doc__,
        inboxes=(int, 1000, "inbox queues"),
        live=(int, 20, "live messages per inbox"),
        archived=(int, 30, "archived messages per inbox"),
        rounds=(int, 3, "rounds"),
    )
    url, label, drop = fresh_database(args.server)
    try:
        print(f"{label}: {args.inboxes} inboxes x ({args.live} live + {args.archived} archived)")
        populate(url, args.inboxes, args.live, args.archived)
        resources = {"shared_queue": SharedQueueResource(db_url=url)}
        times: dict[str, list[float]] = {
            "metrics_all": [],
            "collect": [],
            "collect_chunk1": [],
            "asset": [],
            "asset_step": [],
        }
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        with psycopg.connect(url) as conn:
            queues = conn.execute("SELECT count(*) FROM pgmq.meta").fetchone()[0]
            conn.commit()
            for r in range(args.rounds):
                times["metrics_all"].append(
                    timed(
                        lambda: (conn.execute("SELECT * FROM pgmq.metrics_all()").fetchall(), conn.commit())
                    )
                )
                report = None

                def run():
                    nonlocal report
                    report = collect_statistics(conn)

                times["collect"].append(timed(run))
                times["collect_chunk1"].append(timed(lambda: collect_statistics(conn, chunk=1)))
                result = None

                def materialize():
                    nonlocal result
                    result = dg.materialize(
                        [queue_statistics],
                        resources=resources,
                        run_config=quiet,
                        instance=dg.DagsterInstance.ephemeral(),
                    )

                times["asset"].append(timed(materialize))
                step = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_SUCCESS)
                times["asset_step"].append(step.event_specific_data.duration_ms / 1000)
                totals = report.totals()
                print(
                    f"  round {r + 1}: "
                    + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items())
                    + f" | depth {totals['depth']}, out/h {totals['out_window']}"
                )
        base = statistics.median(times["metrics_all"])
        print(f"\n{queues} queues, median of {args.rounds} rounds:")
        for name, values in times.items():
            med = statistics.median(values)
            print(f"  {name:15} {med:7.3f}s  ratio to pgmq.metrics_all {med / base:5.2f}x")
    finally:
        drop()


if __name__ == "__main__":
    main()
