"""aggregated_learning in SQL vs the same aggregation in pandas; then the Git export of the selection.

    .venv/bin/python bench/bench_export.py [--sizes 100000,1000000] [--artifacts-per-1k 20] [--server URL]

For each size, hub.learned_artifacts is filled with that many reports (47 instances, ~2% distinct
artifact ids), then each approach runs in its own child process so its peak RSS is its own:
- sql:    `learning.aggregate_learning` (one INSERT ... SELECT ... GROUP BY in PostgreSQL);
- pandas: fetch every report into a DataFrame and compute the same columns with groupby.
Prints wall time and peak RSS of each, and the ratios. Then exports the selected artifacts of the
last size to a local bare remote twice (first run: commit + push; second: unchanged, no commit).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fresh_database, parse_args  # noqa: E402
from queue_assets.export import learning  # noqa: E402
from queue_assets.export.core import run_export  # noqa: E402
from queue_assets.export.settings import ExportSettings  # noqa: E402
from queue_assets.git.repo import ensure_embedded_templates_remote, open_work_copy  # noqa: E402

CYCLE = date(2025, 10, 25)
CUTOFF = datetime(2030, 1, 1, tzinfo=UTC)
SETTINGS = ExportSettings(min_usage=10, min_success_rate=0.5, min_instances=2)


def fill(url: str, rows: int, per_1k: int) -> None:
    artifacts = max(1, rows * per_1k // 1000)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE hub.learned_artifacts, hub.aggregated_learning, hub.exports")
        conn.execute(
            "INSERT INTO hub.learned_artifacts (queue, msg_id, ordinal, instance_id, artifact_id, artifact_type,"
            " name, content, usage_count, success_rate, observed_at, stored_at)"
            " SELECT 'learned_patterns', g, 0, 'singularity-' || (g %% 47), 'tmpl-' || (g %% %(a)s), 'template',"
            "  'artifact ' || (g %% %(a)s), jsonb_build_object('body', 'x', 'n', g %% %(a)s),"
            "  (g * 7919) %% 200, least(1.0, ((g %% %(a)s) %% 100) / 100.0 + ((g * 104729) %% 100) / 1000.0),"
            "  timestamptz '2025-10-01' + (g %% 86400) * interval '1 second', timestamptz '2025-10-02'"
            " FROM generate_series(1::bigint, %(n)s) AS g",
            {"n": rows, "a": artifacts},
        )
        conn.execute("ANALYZE hub.learned_artifacts")


def child_sql(url: str) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        t = time.perf_counter()
        s = learning.aggregate_learning(conn, CYCLE, CUTOFF, SETTINGS)
        elapsed = time.perf_counter() - t
    return {"seconds": elapsed, "artifacts": s.artifacts, "selected": s.selected}


def child_pandas(url: str) -> dict:
    import pandas as pd

    with psycopg.connect(url) as conn:
        t = time.perf_counter()
        cur = conn.execute(
            "SELECT artifact_id, instance_id, usage_count, success_rate, observed_at, stored_at,"
            " artifact_type, name, content FROM hub.learned_artifacts WHERE stored_at < %s",
            (CUTOFF,),
        )
        df = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
        df["weighted"] = df["usage_count"] * df["success_rate"]
        g = df.groupby("artifact_id")
        out = g.agg(
            total_usage=("usage_count", "sum"),
            weighted=("weighted", "sum"),
            mean_rate=("success_rate", "mean"),
            report_count=("usage_count", "size"),
            instance_count=("instance_id", "nunique"),
            first_seen=("observed_at", "min"),
            last_seen=("observed_at", "max"),
        )
        out["instances"] = g["instance_id"].agg(lambda s: sorted(set(s)))
        newest = (
            df.sort_values(["observed_at", "stored_at"])
            .groupby("artifact_id")
            .tail(1)
            .set_index("artifact_id")
        )
        out = out.join(newest[["artifact_type", "name", "content"]])
        rate = (out["weighted"] / out["total_usage"]).where(out["total_usage"] > 0, out["mean_rate"]).round(6)
        out["success_rate"] = rate
        selected = (
            (out["total_usage"] >= SETTINGS.min_usage)
            & (rate >= SETTINGS.min_success_rate)
            & (out["instance_count"] >= SETTINGS.min_instances)
        )
        elapsed = time.perf_counter() - t
    return {"seconds": elapsed, "artifacts": len(out), "selected": int(selected.sum())}


def run_child(kind: str, url: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--url", url], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    if "--child" in sys.argv:
        kind, url = sys.argv[sys.argv.index("--child") + 1], sys.argv[sys.argv.index("--url") + 1]
        result = (child_sql if kind == "sql" else child_pandas)(url)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    args = parse_args(
        __doc__,
        sizes=(str, "100000,1000000", "comma-separated report counts"),
        artifacts_per_1k=(int, 20, "distinct artifact ids per 1,000 reports"),
    )
    url, label, drop = fresh_database(args.server)
    print(f"server: {label}")
    print(
        f"{'reports':>10} {'artifacts':>9} {'selected':>8} | {'sql s':>7} {'sql MB':>7} | "
        f"{'pandas s':>8} {'pandas MB':>9} | {'time x':>6} {'mem x':>6}"
    )
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            fill(url, size, args.artifacts_per_1k)
            sql_r = run_child("sql", url)
            pd_r = run_child("pandas", url)
            assert (sql_r["artifacts"], sql_r["selected"]) == (pd_r["artifacts"], pd_r["selected"]), (
                sql_r,
                pd_r,
            )
            print(
                f"{size:>10} {sql_r['artifacts']:>9} {sql_r['selected']:>8} | {sql_r['seconds']:>7.2f} "
                f"{sql_r['peak_rss_mb']:>7.0f} | {pd_r['seconds']:>8.2f} {pd_r['peak_rss_mb']:>9.0f} | "
                f"{pd_r['seconds'] / sql_r['seconds']:>6.1f} {pd_r['peak_rss_mb'] / sql_r['peak_rss_mb']:>6.1f}"
            )
        with tempfile.TemporaryDirectory() as tmp, psycopg.connect(url, autocommit=True) as conn:
            remote = ensure_embedded_templates_remote(Path(tmp))
            for attempt in ("first export (commit + push)", "re-run, unchanged (no commit)"):
                t = time.perf_counter()
                r = run_export(
                    conn,
                    cycle=CYCLE,
                    cutoff=CUTOFF,
                    settings=SETTINGS,
                    work_copy=lambda: open_work_copy(remote, Path(tmp) / "work"),  # noqa: B023
                    remote_url=remote,
                    provider=None,
                    publish=None,
                )
                print(
                    f"{attempt}: {r.artifacts} artifacts, {r.files_written} files, "
                    f"new commit: {r.committed}, {time.perf_counter() - t:.2f}s"
                )
    finally:
        drop()


if __name__ == "__main__":
    main()
