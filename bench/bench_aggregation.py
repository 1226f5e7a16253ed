"""Aggregation: the pushed-down SQL ranking vs the same aggregation in pandas, at growing sizes.

    .venv/bin/python bench/bench_aggregation.py [--sizes 100000,1000000,10000000]
        [--pandas-max 1000000] [--rounds 3] [--server URL] [--keep 1]

Rows are generated in the server (`INSERT ... SELECT generate_series`): 200 instances (skewed:
a few are chatty), 5,000 patterns (Zipf-like), 90% with a confidence, 1-2 indicators each. The
table grows to each size in turn (then VACUUM ANALYZE, as autovacuum would), and at each size:

- sql: `core.aggregate` (what the `aggregated_patterns` asset runs) plus the asset's top-10
  markdown table (pandas), in a fresh Python process that has imported the asset module;
- pandas: read the same columns into a DataFrame and compute the same ranking (up to
  --pandas-max rows: beyond that it needs several GB and minutes on this 2-core machine).

Each measurement runs in its own process, so `ru_maxrss` is that run's peak (resident set, MB).
With the server on this machine, one more SQL run with parallel workers off reads the server
process's CPU time from /proc: the work itself, independent of how busy the shared machine is.
The pandas ranking is compared with the SQL one (ranks, counts, scores) before anything is printed.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fresh_database, parse_args  # noqa: E402

# Rows k = floor(5000 * u^3): a few patterns are very common; instances floor(200 * u^2): a few are chatty.
GENERATE = """
INSERT INTO hub.pattern_observations
    (queue, msg_id, ordinal, instance_id, pattern_type, name, confidence, language, indicators, observed_at)
SELECT 'bench', g, 0,
       'singularity-' || floor(power(random(), 2) * 200)::int,
       (ARRAY['framework', 'technology', 'microservice', 'code'])[1 + k %% 4],
       'pattern-' || k,
       CASE WHEN random() < 0.1 THEN NULL ELSE round(random()::numeric, 3)::float8 END,
       (ARRAY['elixir', 'rust', 'python', 'typescript', NULL])[1 + k %% 5],
       CASE WHEN random() < 0.5 THEN ARRAY['indicator-' || (k %% 13 + floor(random() * 4)::int)]
            ELSE ARRAY['indicator-' || (k %% 13 + floor(random() * 4)::int), 'file-' || floor(random() * 3)::int]
       END,
       timestamptz '2025-10-01' + random() * interval '30 days'
FROM (SELECT g, floor(5000 * power(random(), 3))::int AS k
      FROM generate_series(%s::bigint, %s::bigint) AS g) s
"""

COLUMNS = ["pattern_type", "name", "instance_id", "language", "confidence", "indicators", "observed_at"]
COMPARE_TOP = 200


def rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- workers (each in its own process) ------------------------------------------------------------


def backend_cpu_s(conn) -> float | None:
    """CPU seconds the server process of `conn` has used (a server on this machine only)."""
    (pid,) = conn.execute("SELECT pg_backend_pid()").fetchone()
    conn.commit()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_sql_cpu(url: str) -> dict:
    """The aggregation with parallel workers off, timing the server's CPU: what the work costs,
    whatever else the machine runs (wall time on a busy machine measures the queue for the CPU)."""
    from queue_assets.aggregation import core

    with psycopg.connect(url) as conn:
        conn.execute("SET max_parallel_workers_per_gather = 0")
        conn.commit()
        before = backend_cpu_s(conn)
        t = time.perf_counter()
        core.aggregate(conn)
        elapsed = time.perf_counter() - t
        after = backend_cpu_s(conn)
    return {"elapsed_s": elapsed, "server_cpu_s": None if before is None else after - before}


def worker_sql(url: str) -> dict:
    from queue_assets.aggregation import assets, core  # imports dagster and pandas, as the asset does

    base = rss_mb()
    with psycopg.connect(url) as conn:
        t = time.perf_counter()
        result = core.aggregate(conn)
        top = core.ranking(conn, limit=assets.TOP_SHOWN)
        before = core.previous_ranks(conn, result.run_id, [(p.pattern_type, p.name) for p in top])
        assets.top_table(top, before)
        elapsed = time.perf_counter() - t
        ranking = [
            (p.rank, p.pattern_type, p.name, p.instance_count, p.observation_count, p.score)
            for p in core.ranking(conn, limit=COMPARE_TOP)
        ]
    return {
        "elapsed_s": elapsed,
        "peak_rss_mb": rss_mb(),
        "baseline_rss_mb": base,
        "patterns": result.patterns,
        "ranking": ranking,
    }


def pandas_ranking(df, top_indicators: int = 5):
    """The same definitions as queue_assets.aggregation.core, in pandas."""
    import pandas as pd

    from queue_assets.aggregation import core

    keys = ["pattern_type", "name"]
    per_instance = df.groupby([*keys, "instance_id"], sort=False).agg(
        observations=("observed_at", "size"),
        confidence=("confidence", "mean"),
        first_seen=("observed_at", "min"),
        last_seen=("observed_at", "max"),
    )
    per = per_instance.groupby(level=[0, 1], sort=False).agg(
        instance_count=("observations", "size"),
        observation_count=("observations", "sum"),
        confidence=("confidence", "mean"),
        confidence_instances=("confidence", "count"),
        first_seen=("first_seen", "min"),
        last_seen=("last_seen", "max"),
    )
    languages = (
        df.dropna(subset=["language"])
        .groupby([*keys, "language"], sort=False)
        .size()
        .rename("n")
        .reset_index()
        .sort_values([*keys, "n", "language"], ascending=[True, True, False, True])
        .drop_duplicates(keys)
        .set_index(keys)["language"]
    )
    indicators = (
        df[[*keys, "indicators"]]
        .explode("indicators")
        .dropna(subset=["indicators"])
        .groupby([*keys, "indicators"], sort=False)
        .size()
        .rename("n")
        .reset_index()
        .sort_values([*keys, "n", "indicators"], ascending=[True, True, False, True])
        .groupby(keys, sort=False)
        .head(top_indicators)
        .groupby(keys, sort=False)["indicators"]
        .agg(list)
    )
    per = per.join(languages.rename("language")).join(indicators.rename("top_indicators"))
    per["score"] = (
        per["instance_count"]
        + core.W_CONFIDENCE * per["confidence"].fillna(0)
        + core.W_VOLUME * per["observation_count"] / (per["observation_count"] + core.VOLUME_HALF)
    )
    per = per.reset_index().sort_values(
        ["score", "observation_count", "pattern_type", "name"], ascending=[False, False, True, True]
    )
    per["rank"] = range(1, len(per) + 1)
    return pd.DataFrame(per)


def worker_pandas(url: str) -> dict:
    import pandas as pd

    from queue_assets.aggregation import assets  # noqa: F401 - same imports as the SQL worker

    base = rss_mb()
    t = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor(name="bench_read") as cur:
        cur.itersize = 100_000
        cur.execute("SELECT " + ", ".join(COLUMNS) + " FROM hub.pattern_observations")
        df = pd.DataFrame(cur.fetchall(), columns=COLUMNS)
    ranked = pandas_ranking(df)
    elapsed = time.perf_counter() - t
    top = ranked.head(COMPARE_TOP)
    ranking = [
        (
            int(r["rank"]),
            r["pattern_type"],
            r["name"],
            int(r["instance_count"]),
            int(r["observation_count"]),
            float(r["score"]),
        )
        for _, r in top.iterrows()
    ]
    return {
        "elapsed_s": elapsed,
        "peak_rss_mb": rss_mb(),
        "baseline_rss_mb": base,
        "patterns": len(ranked),
        "ranking": ranking,
    }


def run_worker(kind: str, url: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", kind, "--url", url],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def same_ranking(a: list, b: list) -> bool:
    if len(a) != len(b):
        return False
    return all(list(x[:5]) == list(y[:5]) and abs(x[5] - y[5]) <= 1e-9 for x, y in zip(a, b, strict=True))


# --- driver ---------------------------------------------------------------------------------------


def grow(url: str, target: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        (have,) = conn.execute("SELECT count(*) FROM hub.pattern_observations").fetchone()
        t = time.perf_counter()
        for lo in range(have + 1, target + 1, 1_000_000):
            conn.execute(GENERATE, (lo, min(target, lo + 999_999)))
        conn.execute("VACUUM ANALYZE hub.pattern_observations")
        return time.perf_counter() - t


def main() -> None:
    if "--worker" in sys.argv:
        kind, url = sys.argv[sys.argv.index("--worker") + 1], sys.argv[sys.argv.index("--url") + 1]
        print(json.dumps({"sql": worker_sql, "sql-cpu": worker_sql_cpu, "pandas": worker_pandas}[kind](url)))
        return
    args = parse_args(
        __doc__,
        sizes=(str, "100000,1000000,10000000", "comma-separated row counts"),
        pandas_max=(int, 1_000_000, "largest size measured with pandas"),
        rounds=(int, 3, "rounds per size below 10M (one at 10M and above)"),
        keep=(int, 0, "1: keep the database afterwards"),
    )
    sizes = sorted(int(s) for s in args.sizes.split(","))
    url, label, drop = fresh_database(args.server)
    print(f"server: {label}")
    print(
        f"{'rows':>11} | {'load s':>7} | {'sql s':>7} | {'sql peak MB':>11} | {'pandas s':>8} | "
        f"{'pandas peak MB':>14} | {'time ratio':>10} | {'patterns':>8} | {'server CPU s':>12} | load avg"
    )
    try:
        for size in sizes:
            load_s = grow(url, size)
            rounds = args.rounds if size < 10_000_000 else 1
            sql_runs = [run_worker("sql", url) for _ in range(rounds)]
            sql_s = statistics.median(r["elapsed_s"] for r in sql_runs)
            sql_mb = max(r["peak_rss_mb"] for r in sql_runs)
            base_mb = sql_runs[0]["baseline_rss_mb"]
            if size <= args.pandas_max:
                pd_runs = [run_worker("pandas", url) for _ in range(rounds)]
                pd_s = statistics.median(r["elapsed_s"] for r in pd_runs)
                pd_mb = max(r["peak_rss_mb"] for r in pd_runs)
                if not same_ranking(sql_runs[-1]["ranking"], pd_runs[-1]["ranking"]):
                    raise SystemExit(f"at {size} rows the pandas ranking differs from the SQL one")
                pandas_cols = f"{pd_s:8.2f} | {pd_mb:14.0f} | {pd_s / sql_s:9.1f}x"
            else:
                pandas_cols = f"{'skipped':>8} | {'skipped':>14} | {'—':>10}"
            cpu = run_worker("sql-cpu", url)["server_cpu_s"]
            cpu_col = f"{cpu:12.1f}" if cpu is not None else f"{'n/a':>12}"
            print(
                f"{size:11,d} | {load_s:7.1f} | {sql_s:7.2f} | {sql_mb:11.0f} | {pandas_cols} | "
                f"{sql_runs[0]['patterns']:8d} | {cpu_col} | {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        print(
            f"(the sql process holds {base_mb:.0f} MB after importing the asset module: dagster, pandas, psycopg; "
            f"server CPU s = CPU time of the server process for one run with parallel workers off; "
            f"load avg = 1-minute load average of this {os.cpu_count()}-core machine after each size)"
        )
    finally:
        if not args.keep:
            drop()


if __name__ == "__main__":
    main()
