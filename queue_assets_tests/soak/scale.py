"""Scale: 1,000 simulated instances heart-beating and publishing into a hub driven by its daemon.

What it proves, through the running hub (webserver + daemon, sensors on):
- ingest keeps up: the lag stays bounded while every instance publishes, the queues drain, and
  every message is stored exactly once (the soak's exact accounting);
- fan-out reaches every active inbox exactly once: an aggregation run is launched, the automation
  sensor runs `pattern_distribution` after it (as every hour), and each of the 1,000 inboxes holds
  exactly one copy of each `aggregated_patterns` publication;
- `queue_statistics` (over every queue, the 1,000 inboxes included) stays under a minute; it is
  measured once before the fleet exists (the baseline: the static queues) and once after.

Instances send in batches (one `send_batch` per queue per second), each message contract-checked
first, as the SDK does. `bench/bench_scale.py` is the command line.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from queue_assets.db import make_pgmq
from queue_assets.names import inbox_queue_for
from queue_assets.queues import CONSUMED_QUEUES

from . import accounting, metrics
from .graphql import HubGraphQL, materialization_metadata
from .hub import Hub
from .publisher import Fleet, send_checked_batch

AGGREGATION_JOB = "pattern_aggregation_job"
PATTERN_SYNC_JOB = "pattern_sync_job"
PATTERN_SYNC_SENSOR = "pattern_sync_after_aggregation"
STATISTICS_JOB = "queue_statistics_job"
STATISTICS_LIMIT_S = 60.0


@dataclass
class ScaleOptions:
    instances: int = 1000
    minutes: float = 3.0
    heartbeat_every_s: float = 15.0
    publish_every_s: float = 10.0
    """Each instance publishes one message (pattern, analysis or learned) this often."""
    port: int = 3310
    data_dir: Path | None = None
    keep: bool = False
    ready_timeout_s: float = 300.0
    drain_timeout_s: float = 300.0
    run_timeout_s: float = 600.0
    max_lag_s: float = 120.0


def run_scale(opts: ScaleOptions, log=print) -> dict:
    data_dir = opts.data_dir or Path(tempfile.mkdtemp(prefix="qa-scale-"))
    hub = Hub(data_dir, port=opts.port)
    t0 = time.time()
    report: dict = {"options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()}}
    try:
        hub.start_database()
        gql = hub.start(timeout_s=opts.ready_timeout_s)
        report["hub_ready_s"] = round(time.time() - t0, 1)
        log(f"hub ready in {report['hub_ready_s']}s (data folder {data_dir}, port {opts.port})")
        jobs = gql.job_names()
        if STATISTICS_JOB in jobs:
            report["statistics_baseline"] = statistics_run(gql, opts.run_timeout_s)
            log(f"queue_statistics before the fleet: {report['statistics_baseline']}")
        report.update(publish_phase(hub, gql, opts, log))
        if AGGREGATION_JOB in jobs:
            report["fanout"] = fanout_phase(hub, gql, opts, jobs, log)
        else:
            report["fanout"] = {"skipped": f"the code location has no {AGGREGATION_JOB}"}
        if STATISTICS_JOB in jobs:
            report["statistics_at_scale"] = statistics_run(gql, opts.run_timeout_s)
            log(f"queue_statistics with the fleet: {report['statistics_at_scale']}")
        else:
            report["statistics_at_scale"] = {"skipped": f"the code location has no {STATISTICS_JOB}"}
        report["memory_mb_end"] = hub.rss_mb()
    finally:
        hub.stop()
        if not opts.keep:
            hub.remove()
    report["total_s"] = round(time.time() - t0, 1)
    report["problems"] = scale_problems(report, opts)
    report["passed"] = not report["problems"]
    return report


def publish_phase(hub: Hub, gql: HubGraphQL, opts: ScaleOptions, log) -> dict:
    fleet = Fleet(
        hub.db_url, instances=opts.instances, rate=0, heartbeat_every_s=opts.heartbeat_every_s, prefix="scale"
    )
    client = make_pgmq(hub.db_url, pool_size=1)
    kinds = ["pattern_detection"] * 15 + ["code_analysis"] * 2 + ["learned_patterns"] * 3
    n = opts.instances
    hb_offset = {iid: i * opts.heartbeat_every_s / n for i, iid in enumerate(fleet.instance_ids)}
    pub_offset = {iid: i * opts.publish_every_s / n for i, iid in enumerate(fleet.instance_ids)}
    hb_done = dict.fromkeys(fleet.instance_ids, 0)
    pub_done = dict.fromkeys(fleet.instance_ids, 0)
    lag: list[dict] = []
    send_s: list[float] = []
    start = time.time()
    rss_start = hub.rss_mb()
    next_sample = start
    try:
        while time.time() - start < opts.minutes * 60:
            elapsed = time.time() - start
            batch = []
            for iid in fleet.instance_ids:
                if elapsed >= hb_offset[iid] + hb_done[iid] * opts.heartbeat_every_s:
                    batch.append(fleet.make("heartbeat", iid))
                    hb_done[iid] += 1
                if elapsed >= pub_offset[iid] + pub_done[iid] * opts.publish_every_s:
                    batch.append(fleet.make(fleet.rng.choice(kinds), iid))
                    pub_done[iid] += 1
            t = time.monotonic()
            send_checked_batch(client, batch)
            send_s.append(time.monotonic() - t)
            if time.time() >= next_sample:
                lag.append(
                    {
                        "t": round(time.time() - start, 1),
                        **{q: v for q, v in metrics.queue_lag(hub.db_url).items()},
                    }
                )
                next_sample += 5
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t)))
    finally:
        client.pool.close()
    publish_end = time.time()
    records = fleet.snapshot()
    log(
        f"published {len(records)} messages from {n} instances in {publish_end - start:.0f}s; waiting for the drain"
    )
    deadline = time.monotonic() + opts.drain_timeout_s
    with psycopg.connect(hub.db_url) as conn:
        while (left := accounting.unaccounted(conn, records)) and time.monotonic() < deadline:
            time.sleep(2)
        drained_s = time.time() - publish_end
        acc = accounting.account(conn, records, 0)
        ledger = accounting.fetch_ledger(conn)
        instances = conn.execute(
            "SELECT count(*) FROM hub.instances WHERE last_heartbeat IS NOT NULL"
        ).fetchone()[0]
        conn.commit()
    keys = {r.key for r in records}
    max_age = {q: max((s[q]["oldest_age_s"] for s in lag), default=0) for q in CONSUMED_QUEUES}
    runs = gql.runs(created_after=start - 5)
    return {
        "publish": {
            "instances": n,
            "messages": len(records),
            "seconds": round(publish_end - start, 1),
            "msgs_per_s": round(len(records) / max(1e-9, publish_end - start), 1),
            "send_batch_s": metrics.summary(send_s),
        },
        "ingest": {
            "drained_after_publish_s": round(drained_s, 1),
            "unaccounted_at_deadline": left,
            "max_oldest_age_s": max_age,
            "latency": metrics.latency(ledger, keys),
            "ingest_runs": sum(1 for r in runs if r.job.startswith("ingest_")),
            "instances_known": instances,
            "memory_mb": {"start": rss_start, "end": hub.rss_mb()},
        },
        "accounting": acc.summary(),
        "lag_series": lag,
    }


def fanout_phase(hub: Hub, gql: HubGraphQL, opts: ScaleOptions, jobs: set[str], log) -> dict:
    """An aggregation run; `pattern_distribution` after it (the automation sensor, else a manual run)."""
    out: dict = {}
    t = time.time()
    agg, launches = gql.run_to_end(AGGREGATION_JOB, opts.run_timeout_s)
    out["aggregation_run"] = {"status": agg.status, "run_s": _dur(agg), "launches": launches}
    log(f"aggregation run {agg.status} in {_dur(agg)}s; waiting for pattern_distribution after it")
    dist = None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and dist is None:
        for r in gql.runs(created_after=t):
            if r.run_id != agg.run_id and _runs_pattern_distribution(r):
                dist = r
        time.sleep(3)
    if dist is None and PATTERN_SYNC_JOB in jobs:
        out["triggered_by"] = f"manual {PATTERN_SYNC_JOB} (the automation sensor did not start one in 180 s)"
        dist = gql.run(gql.launch_run(PATTERN_SYNC_JOB))
    else:
        out["triggered_by"] = f"the {PATTERN_SYNC_SENSOR} automation sensor"
    if dist is None:
        out["skipped"] = "no pattern_distribution run could be started"
        return out
    dist = gql.wait_run(dist.run_id, opts.run_timeout_s)
    meta = materialization_metadata(gql, "pattern_distribution", dist.run_id)
    out["distribution_run"] = {
        "status": dist.status,
        "run_s": _dur(dist),
        "inbox_copies_reported": meta.get("inbox_copies"),
        "active_instances": meta.get("active_instances"),
        "inboxes_created": meta.get("inboxes_created"),
    }
    if dist.status != "SUCCESS":
        out["distribution_error"] = gql.failure_text(dist.run_id)[:500]
    with psycopg.connect(hub.db_url) as conn:
        out["inboxes"] = inbox_copies(conn, [f"singularity-{i + 1}" for i in range(opts.instances)])
    log(f"fan-out: {out['inboxes']['summary']}")
    return out


def _runs_pattern_distribution(run) -> bool:
    """A run of `pattern_distribution`: the automation sensor's (an `__ASSET_JOB` run whose tags name
    the sensor, not the asset) or one of the job that selects it."""
    return (
        run.tags.get("dagster/sensor_name") == PATTERN_SYNC_SENSOR
        or run.job == PATTERN_SYNC_JOB
        or "pattern_distribution" in run.tags.get("dagster/asset_selection", "")
    )


def inbox_copies(conn: psycopg.Connection, instance_ids: list[str]) -> dict:
    """For each `aggregated_patterns` publication (identical bodies), how many copies each inbox holds."""
    per_pub: dict[str, dict[str, int]] = {}
    missing_inbox = []
    existing = {r[0] for r in conn.execute("SELECT queue_name FROM pgmq.list_queues()")}
    inboxes = [inbox_queue_for(i) for i in instance_ids]
    for start in range(0, len(inboxes), 200):
        part = [q for q in inboxes[start : start + 200] if q in existing]
        missing_inbox += [q for q in inboxes[start : start + 200] if q not in existing]
        if not part:
            continue
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL(
                "SELECT {name}::text, md5(message::text) FROM pgmq.{t} WHERE message->>'type' = 'aggregated_patterns'"
            ).format(name=sql.Literal(q), t=sql.Identifier("q_" + q))
            for q in part
        )
        for inbox, digest in conn.execute(query):
            per_pub.setdefault(digest, {})
            per_pub[digest][inbox] = per_pub[digest].get(inbox, 0) + 1
    conn.commit()
    pubs = []
    for digest, counts in per_pub.items():
        pubs.append(
            {
                "publication": digest[:12],
                "inboxes": len(counts),
                "inboxes_with_one_copy": sum(1 for n in counts.values() if n == 1),
                "inboxes_with_more": sum(1 for n in counts.values() if n > 1),
            }
        )
    exact = (
        bool(pubs)
        and not missing_inbox
        and all(p["inboxes"] == len(instance_ids) == p["inboxes_with_one_copy"] for p in pubs)
    )
    summary = (
        f"{len(pubs)} publication(s); "
        + "; ".join(
            f"{p['inboxes_with_one_copy']}/{len(instance_ids)} inboxes hold exactly one copy, {p['inboxes_with_more']} more"
            for p in pubs
        )
        + (f"; {len(missing_inbox)} inboxes missing" if missing_inbox else "")
    )
    return {
        "publications": pubs,
        "missing_inboxes": len(missing_inbox),
        "exactly_once": exact,
        "summary": summary,
    }


def statistics_run(gql: HubGraphQL, timeout_s: float) -> dict:
    run, launches = gql.run_to_end(STATISTICS_JOB, timeout_s)
    meta = materialization_metadata(gql, "queue_statistics", run.run_id)
    return {
        "status": run.status,
        "run_s": _dur(run),
        "launches": launches,
        "asset_elapsed_s": meta.get("elapsed_seconds"),
        "queues": meta.get("total.queues"),
        "inboxes": meta.get("total.inboxes"),
    }


def _dur(run) -> float | None:
    return round(run.ended - run.started, 2) if run.ended and run.started else None


def scale_problems(report: dict, opts: ScaleOptions) -> list[str]:
    out = list(report.get("accounting", {}).get("problems", []))
    ingest = report.get("ingest", {})
    if ingest.get("unaccounted_at_deadline"):
        out.append(
            f"ingest did not keep up: {ingest['unaccounted_at_deadline']} messages not stored "
            f"{opts.drain_timeout_s:.0f}s after publishing stopped"
        )
    for q, age in ingest.get("max_oldest_age_s", {}).items():
        if age > opts.max_lag_s:
            out.append(f"lag on {q} reached {age}s (bound {opts.max_lag_s:g}s)")
    if ingest and ingest.get("instances_known") != opts.instances:
        out.append(
            f"hub.instances knows {ingest.get('instances_known')} instances with a heartbeat, "
            f"expected {opts.instances}"
        )
    fan = report.get("fanout", {})
    if "skipped" not in fan:
        if fan.get("distribution_run", {}).get("status") != "SUCCESS":
            out.append(f"pattern_distribution did not succeed: {fan.get('distribution_error', '')[:200]}")
        elif not fan.get("inboxes", {}).get("exactly_once"):
            out.append(f"fan-out not exactly once: {fan.get('inboxes', {}).get('summary')}")
    for key in ("statistics_baseline", "statistics_at_scale"):
        st = report.get(key, {})
        if "skipped" in st or not st:
            continue
        if st.get("status") != "SUCCESS":
            out.append(f"{key}: queue_statistics ended {st.get('status')}")
        elif st.get("asset_elapsed_s") is None or st["asset_elapsed_s"] >= STATISTICS_LIMIT_S:
            out.append(
                f"{key}: queue_statistics measured the queues in {st.get('asset_elapsed_s')}s "
                f"(limit {STATISTICS_LIMIT_S:g}s)"
            )
    return out
