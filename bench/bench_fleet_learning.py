"""The fleet learns: a new pattern key, or a cache miss, to `pattern_learned` in the inboxes.

    .venv/bin/python bench/bench_fleet_learning.py                  # 1,000 instances, 8 keys, 8 misses
    .venv/bin/python bench/bench_fleet_learning.py --instances 200 --keys 3 --misses 3 --budget-keys 2000

Three parts (docs/benchmarks.md, "Pattern authority: the fleet learns"):

1. **New key → every inbox.** A hub as production runs it (embedded PostgreSQL in a fresh data
   folder, `dagster-webserver` + `dagster-daemon`, sensors on; the soak's `Hub`), `--instances`
   instances that sent a heartbeat (their inboxes created and bound by `fanout.sync_inboxes`, what
   the hourly `pattern_distribution` runs), and the demo's simulated LLM router
   (`simulate_services.LlmRouter`, garbage/late/silent rates 0) polling `llm_requests` every 0.1 s
   in a thread of this process. Every `--spacing` s one instance publishes a pattern with a key
   nobody sent before (`HubClient.publish_patterns`). Measured per key, on the database's clock:
   publish → ingested (archived from `pattern_messages`) → `llm_request` sent
   (`hub.enrichment_requests.sent_at`; split into waiting for the sensor's run, the run's launch
   and inside the run) → router answered (archived from `llm_requests`) → reply ingested and
   broadcast (archived from `hub_llm_results`; `enriched_at`) → visible (a poller in this process
   reads one inbox every 0.2 s). The copies of one key are written by ONE `pgmq.send_topic` in one
   transaction, so they become visible in all inboxes at the same commit: the (key, inbox) latency
   is the key's visible time, and the bench checks that every inbox holds exactly one copy with the
   same enqueue time.
2. **Cache miss → the asking inbox.** `--misses` instances each ask `hub_api.query_pattern` (the
   SDK's `HubClient.query_pattern`) for a name nobody sent; latency = the miss → the
   `pattern_learned` copy whose `answers` holds the miss's discovery request id, in that instance's
   inbox (same poller).
3. **10,000 new keys at once** (in-process, no Dagster: `run_enrichment` on a bootstrapped database
   of the bench server, `--budget-keys` `observed` keys inserted with SQL): the runs of one UTC
   hour every 5 minutes (a simulated clock, no replies, so timeouts and retries happen as in the
   hour) send at most `QUEUE_ASSETS_LLM_MAX_PER_HOUR` (default 100) requests; the first run of
   the next hour sends the next 100. Memory: Python heap peak (tracemalloc) of the capped run, and
   the process's peak RSS (sampled every 20 ms with psutil) of one uncapped run over all keys.

Prints each figure with the load average beside it. Exits 1 when a key or a miss did not arrive,
an inbox holds no copy or two, or the budget was exceeded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from bench._common import fresh_database  # noqa: E402
from queue_assets import fanout  # noqa: E402
from queue_assets.db import make_pgmq  # noqa: E402
from queue_assets.ingest.sensors import ingest_job_name  # noqa: E402
from queue_assets.names import inbox_queue_for  # noqa: E402
from queue_assets.patterns.canonical import pattern_key  # noqa: E402
from queue_assets.patterns.defs import pattern_enrichment_job  # noqa: E402
from queue_assets.patterns.enrichment import EnrichmentConfig, run_enrichment  # noqa: E402
from queue_assets.patterns.models import UnknownPattern  # noqa: E402
from queue_assets.queues import HUB_LLM_RESULTS, PATTERN_MESSAGES  # noqa: E402
from queue_assets.sdk import HubClient  # noqa: E402
from queue_assets.simulate import CODE, FRAMEWORKS, MICROSERVICES, TECHNOLOGIES  # noqa: E402
from queue_assets.simulate_services import LlmRouter, RouterRates  # noqa: E402
from queue_assets_tests.soak.graphql import RunInfo  # noqa: E402
from queue_assets_tests.soak.hub import Hub  # noqa: E402
from queue_assets_tests.soak.metrics import summary  # noqa: E402
from queue_assets_tests.soak.publisher import Fleet, send_checked_batch  # noqa: E402

STALE_AFTER_S = 3600  # the hub's default QUEUE_ASSETS_STALE_AFTER_S: one heartbeat keeps an inbox bound


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load()}] {msg}", file=sys.stderr, flush=True)


def router_names() -> list[tuple[str, str]]:
    """(pattern_type, name) the simulated router knows (it answers others with an error), each its
    own canonical key, in a fixed order that mixes the kinds."""
    kinds = (
        [("framework", n) for n, _ in FRAMEWORKS]
        + [("technology", n) for n in TECHNOLOGIES]
        + [("microservice", n) for n in MICROSERVICES]
        + [("code", n) for n in CODE]
    )
    out = [(t, n) for t, n in kinds if pattern_key(t, n) == (t, n)]
    random.Random(12).shuffle(out)
    return out


# ---------------------------------------------------------------- helpers around the running hub


class Router(threading.Thread):
    """The demo's LlmRouter, answering every hub request at once (rates 0), polled every 0.1 s."""

    def __init__(self, db_url: str):
        super().__init__(name="bench-router", daemon=True)
        self.q = make_pgmq(db_url, pool_size=1)
        self.router = LlmRouter(self.q, random.Random(3), RouterRates(garbage=0, late=0, silent=0))
        self.stop_event = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                if not self.router.step(limit=50):
                    time.sleep(0.1)
            except Exception as exc:  # noqa: BLE001 - reported, the bench then fails on the missing replies
                self.errors.append(repr(exc)[:300])
                time.sleep(1)

    def close(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)
        pool = self.q.pool
        self.q.close()
        if pool is not None:
            pool.close()


@dataclass
class Watch:
    inbox: str
    name: str
    answers: str | None = None
    """When set, only a copy whose `answers` holds this discovery request id counts."""
    seen: float | None = None


class Poller(threading.Thread):
    """Reads (without consuming) the watched inboxes every 0.2 s; records when each watch is met."""

    def __init__(self, db_url: str):
        super().__init__(name="bench-poller", daemon=True)
        self.db_url = db_url
        self.watches: list[Watch] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()

    def add(self, w: Watch) -> Watch:
        with self.lock:
            self.watches.append(w)
        return w

    def run(self) -> None:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            while not self.stop_event.is_set():
                with self.lock:
                    pending = [w for w in self.watches if w.seen is None]
                for inbox in {w.inbox for w in pending}:
                    rows = conn.execute(
                        sql.SQL(
                            "SELECT message->>'name', message->'answers' FROM pgmq.{} "
                            "WHERE message->>'type' = 'pattern_learned'"
                        ).format(sql.Identifier("q_" + inbox))
                    ).fetchall()
                    now = time.time()
                    for w in pending:
                        if w.inbox != inbox:
                            continue
                        for name, answers in rows:
                            if name == w.name and (w.answers is None or w.answers in (answers or [])):
                                w.seen = now
                time.sleep(0.2)

    def wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if all(w.seen is not None for w in self.watches):
                    return True
            time.sleep(0.5)
        return False


def epoch(ts: datetime | None) -> float | None:
    return ts.timestamp() if ts is not None else None


def stages_of(conn: psycopg.Connection, ptype: str, key: str) -> dict:
    """The database's timestamps of one key's way: request sent, router answered, reply ingested."""
    row = conn.execute(
        "SELECT r.request_id, r.sent_at, a.enqueued_at, a.archived_at, p.enriched_at, r.attempt, r.status"
        " FROM hub.enrichment_requests r JOIN hub.patterns p USING (pattern_type, canonical_name)"
        " LEFT JOIN pgmq.a_llm_requests a ON a.msg_id = r.msg_id"
        " WHERE r.pattern_type = %s AND r.canonical_name = %s ORDER BY r.attempt DESC LIMIT 1",
        (ptype, key),
    ).fetchone()
    if row is None:
        return {}
    rid, sent_at, req_enq, router_read, enriched_at, attempt, status = row
    reply = conn.execute(
        "SELECT enqueued_at, archived_at FROM pgmq.a_hub_llm_results WHERE message->>'request_id' = %s"
        " ORDER BY msg_id LIMIT 1",
        (rid,),
    ).fetchone()
    return {
        "request_id": rid,
        "attempt": attempt,
        "request_status": status,
        "sent_at": epoch(sent_at),
        "request_enqueued": epoch(req_enq),
        "router_read": epoch(router_read),
        "reply_enqueued": epoch(reply[0]) if reply else None,
        "reply_ingested": epoch(reply[1]) if reply else None,
        "enriched_at": epoch(enriched_at),
    }


def run_covering(runs: list[RunInfo], job: str, t: float | None) -> RunInfo | None:
    """The run of `job` that was going at time `t` (started before it, ended after it)."""
    if t is None:
        return None
    found = [
        r for r in runs if r.job == job and r.started and r.started <= t + 0.5 and (r.ended or 1e18) >= t
    ]
    return max(found, key=lambda r: r.started or 0) if found else None


def split(d: dict[str, list[float]]) -> dict[str, dict]:
    return {k: summary([x for x in v if x is not None]) for k, v in d.items()}


def inbox_copies(conn: psycopg.Connection, instance_ids: list[str], names: list[str]) -> dict:
    """Per key: how many inboxes hold exactly one `pattern_learned` copy, more, none; distinct enqueue times."""
    per: dict[str, dict[str, list]] = {n: {} for n in names}
    for lo in range(0, len(instance_ids), 200):
        part = [inbox_queue_for(i) for i in instance_ids[lo : lo + 200]]
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL(
                "SELECT {q}::text, message->>'name', enqueued_at FROM pgmq.{t}"
                " WHERE message->>'type' = 'pattern_learned' AND message->>'name' = ANY(%(names)s)"
            ).format(q=sql.Literal(q), t=sql.Identifier("q_" + q))
            for q in part
        )
        for inbox, name, enq in conn.execute(query, {"names": names}):
            per[name].setdefault(inbox, []).append(enq)
    out = {}
    for name, inboxes in per.items():
        out[name] = {
            "one_copy": sum(1 for v in inboxes.values() if len(v) == 1),
            "more": sum(1 for v in inboxes.values() if len(v) > 1),
            "none": len(instance_ids) - len(inboxes),
            "enqueue_times": len({t for v in inboxes.values() for t in v}),
        }
    return out


# ---------------------------------------------------------------- parts 1 and 2: through the daemon


def fleet_parts(a: argparse.Namespace) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="qa-fleetlearn-"))
    hub = Hub(data_dir, port=a.port)
    rep: dict = {"instances": a.instances}
    names = router_names()
    if a.keys + a.misses > len(names):
        raise SystemExit(
            f"--keys + --misses = {a.keys + a.misses}: the simulated router knows {len(names)} names"
        )
    new_keys, miss_keys = names[: a.keys], names[a.keys : a.keys + a.misses]
    router = poller = None
    t_start = time.time()
    try:
        hub.start_database()
        gql = hub.start(timeout_s=300)
        rep["hub_ready_s"] = round(time.time() - t_start, 1)
        log(f"hub ready in {rep['hub_ready_s']} s (port {a.port}, data folder {data_dir})")
        db = hub.db_url

        # the fleet: one heartbeat each, ingested by the daemon; then their inboxes
        fleet = Fleet(db, instances=a.instances, rate=0, prefix="fleetlearn")
        client = make_pgmq(db, pool_size=2)
        t = time.time()
        send_checked_batch(client, [fleet.make("heartbeat", i) for i in fleet.instance_ids])
        with psycopg.connect(db, autocommit=True) as conn:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                known = conn.execute(
                    "SELECT count(*) FROM hub.instances WHERE last_heartbeat IS NOT NULL"
                ).fetchone()[0]
                if known >= a.instances:
                    break
                time.sleep(1)
            rep["heartbeats_ingested_s"] = round(time.time() - t, 1)
            t = time.time()
            sync = fanout.sync_inboxes(conn, STALE_AFTER_S)
            rep["inbox_sync"] = {
                "created": len(sync.created),
                "bound": len(sync.bound),
                "active": len(sync.active),
                "seconds": round(time.time() - t, 1),
                "load": load(),
            }
        log(f"{known} instances known after {rep['heartbeats_ingested_s']} s; inboxes {rep['inbox_sync']}")
        if known < a.instances:
            rep["problems"] = [f"only {known} of {a.instances} heartbeats ingested in 300 s"]
            return rep

        router = Router(db)
        router.start()
        poller = Poller(db)
        poller.start()

        # part 1: new keys, one every --spacing seconds, each from another instance
        rng = random.Random(9)
        t1 = time.time()
        published: list[dict] = []
        for i, (ptype, name) in enumerate(new_keys):
            iid = rng.choice(fleet.instance_ids)
            watched = fleet.instance_ids[-1 - i]  # a different inbox per key; all are checked at the end
            pattern = {
                "pattern_type": ptype,
                "name": name,
                "confidence": 0.9,
                "indicators": [f"{name} in config"],
            }
            if ptype == "framework":
                pattern["language"] = dict(FRAMEWORKS)[name]
            w = poller.add(Watch(inbox_queue_for(watched), name))
            sent = time.time()
            msg_id = HubClient(db, iid, client=client).publish_patterns(
                [pattern], idempotency_key=f"fl-{name}"
            )
            published.append(
                {"type": ptype, "name": name, "msg_id": msg_id, "sent": sent, "watch": w, "load": load()}
            )
            log(f"published new key {ptype}/{name} from {iid}")
            if i < len(new_keys) - 1:
                time.sleep(a.spacing)
        arrived = poller.wait(a.timeout)
        log(f"part 1: all keys visible: {arrived}")

        # part 2: cache misses, one every --spacing seconds, each from another instance
        t2 = time.time()
        misses: list[dict] = []
        for i, (ptype, name) in enumerate(miss_keys):
            iid = rng.choice(fleet.instance_ids)
            sent = time.time()
            found = HubClient(db, iid, client=client).query_pattern(ptype, name)
            if not isinstance(found, UnknownPattern):
                raise SystemExit(f"{ptype}/{name} is known to the hub already: not a miss")
            w = poller.add(Watch(inbox_queue_for(iid), name, answers=str(found.discovery_request_id)))
            misses.append(
                {"type": ptype, "name": name, "instance": iid, "sent": sent, "watch": w, "load": load()}
            )
            log(f"miss: {iid} asked for {ptype}/{name} (discovery request {found.discovery_request_id})")
            if i < len(miss_keys) - 1:
                time.sleep(a.spacing)
        arrived2 = poller.wait(a.timeout)
        log(f"part 2: all answers visible: {arrived2}")
        poller.stop_event.set()
        if client.pool is not None:
            client.pool.close()

        runs = gql.runs(created_after=t1 - 30)
        reply_job = ingest_job_name(HUB_LLM_RESULTS)
        with psycopg.connect(db, autocommit=True) as conn:
            rep["new_keys"] = new_key_figures(conn, runs, published, reply_job)
            rep["misses"] = miss_figures(conn, runs, misses, reply_job)
            rep["copies"] = inbox_copies(conn, fleet.instance_ids, [p["name"] for p in published])
        rep["router"] = dict(router.router.outcomes)
        rep["router_errors"] = router.errors
        rep["runs"] = {
            job: sum(1 for r in runs if r.job == job)
            for job in (pattern_enrichment_job.name, reply_job, ingest_job_name(PATTERN_MESSAGES))
        }
        rep["run_launch_s"] = {
            job: summary([r.started - r.created for r in runs if r.job == job and r.started])
            for job in rep["runs"]
        }
        rep["run_timeline"] = [
            (
                r.job,
                round(r.created - t1, 1),
                r.started and round(r.started - t1, 1),
                r.ended and round(r.ended - t1, 1),
            )
            for r in sorted(runs, key=lambda r: r.created)
        ]
        rep["part_seconds"] = {"new_keys": round(t2 - t1, 1), "misses": round(time.time() - t2, 1)}
        rep["memory_mb"] = hub.rss_mb()
    finally:
        if poller is not None:
            poller.stop_event.set()
        if router is not None:
            router.close()
        hub.stop()
        if not a.keep:
            hub.remove()
    rep["total_s"] = round(time.time() - t_start, 1)
    return rep


def new_key_figures(
    conn: psycopg.Connection, runs: list[RunInfo], published: list[dict], reply_job: str
) -> dict:
    parts: dict[str, list] = {
        k: []
        for k in (
            "publish_to_ingested",
            "  ingest_run_requested_after",
            "  ingest_run_launch",
            "ingested_to_request_sent",
            "  enrichment_run_requested_after",
            "  enrichment_run_launch",
            "  inside_enrichment_run",
            "request_to_router_answer",
            "router_answer_to_reply_ingested",
            "  wait_for_reply_ingest_run",
            "reply_ingested_to_visible",
            "total_publish_to_visible",
        )
    }
    per_key = []
    for p in published:
        (ingested,) = conn.execute(
            "SELECT archived_at FROM pgmq.a_pattern_messages WHERE msg_id = %s", (p["msg_id"],)
        ).fetchone() or (None,)
        st = stages_of(conn, p["type"], p["name"])
        seen = p["watch"].seen
        row = {"key": f"{p['type']}/{p['name']}", "load_at_publish": p["load"], **st}
        ing = epoch(ingested)
        row["ingested"] = ing
        row["visible"] = seen
        per_key.append(row)
        if seen is None or ing is None or not st:
            continue
        run = run_covering(runs, pattern_enrichment_job.name, st["sent_at"])
        parts["publish_to_ingested"].append(ing - p["sent"])
        irun = run_covering(runs, ingest_job_name(PATTERN_MESSAGES), ing)
        if irun is not None:  # negative: the key arrived while that run was already draining
            parts["  ingest_run_requested_after"].append(irun.created - p["sent"])
            parts["  ingest_run_launch"].append(
                max(0.0, (irun.started or irun.created) - max(irun.created, p["sent"]))
            )
        parts["ingested_to_request_sent"].append(st["sent_at"] - ing)
        if run is not None:
            parts["  enrichment_run_requested_after"].append(run.created - ing)
            parts["  enrichment_run_launch"].append((run.started or run.created) - run.created)
            parts["  inside_enrichment_run"].append(st["sent_at"] - (run.started or run.created))
        if st["router_read"] is not None:
            parts["request_to_router_answer"].append(st["router_read"] - st["sent_at"])
        if st["reply_ingested"] is not None and st["reply_enqueued"] is not None:
            parts["router_answer_to_reply_ingested"].append(st["reply_ingested"] - st["reply_enqueued"])
            rrun = run_covering(runs, reply_job, st["reply_ingested"])
            if rrun is not None:
                parts["  wait_for_reply_ingest_run"].append(max(0.0, rrun.created - st["reply_enqueued"]))
            parts["reply_ingested_to_visible"].append(seen - st["reply_ingested"])
        parts["total_publish_to_visible"].append(seen - p["sent"])
    return {"per_key": per_key, "stages": split(parts)}


def miss_figures(conn: psycopg.Connection, runs: list[RunInfo], misses: list[dict], reply_job: str) -> dict:
    parts: dict[str, list] = {
        k: []
        for k in (
            "miss_to_request_sent",
            "request_to_router_answer",
            "router_answer_to_reply_ingested",
            "reply_ingested_to_visible",
            "total_miss_to_answer",
        )
    }
    per = []
    for m in misses:
        st = stages_of(conn, m["type"], m["name"])
        seen = m["watch"].seen
        per.append({"key": f"{m['type']}/{m['name']}", "instance": m["instance"], "visible": seen, **st})
        if seen is None or not st:
            continue
        parts["miss_to_request_sent"].append(st["sent_at"] - m["sent"])
        if st["router_read"] is not None:
            parts["request_to_router_answer"].append(st["router_read"] - st["sent_at"])
        if st["reply_ingested"] is not None and st["reply_enqueued"] is not None:
            parts["router_answer_to_reply_ingested"].append(st["reply_ingested"] - st["reply_enqueued"])
            parts["reply_ingested_to_visible"].append(seen - st["reply_ingested"])
        parts["total_miss_to_answer"].append(seen - m["sent"])
    return {"per_miss": per, "stages": split(parts)}


# ---------------------------------------------------------------- part 3: 10,000 keys, in-process


class RssPeak(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="bench-rss", daemon=True)
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)


def budget_part(a: argparse.Namespace) -> dict:
    url, label, drop = fresh_database(a.server)
    out: dict = {"server": label, "keys": a.budget_keys, "cap": a.cap}
    try:
        with psycopg.connect(url) as conn:
            hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            conn.execute(
                "INSERT INTO hub.patterns (pattern_type, canonical_name, display_name, instances, top_indicators,"
                " examples, first_seen, last_seen)"
                " SELECT 'technology', 'bench-key-' || g, 'Bench Key ' || g, 1 + g %% 50,"
                " ARRAY['dependency bench-key-' || g], jsonb_build_array(jsonb_build_object('file', 'f' || g)),"
                " %s, %s FROM generate_series(1, %s) g",
                (hour, hour, a.budget_keys),
            )
            conn.commit()
            cfg = EnrichmentConfig(max_per_hour=a.cap)
            runs = []
            # the runs of one hour, every 5 minutes (the sensor asks every 5 s, but once the budget is
            # spent pending_work says no; requests time out after 300 s and are retried within the cap)
            for i in range(12):
                now = hour + timedelta(minutes=5 * i, seconds=1)
                trace = i == 0
                if trace:
                    tracemalloc.start()
                t = time.perf_counter()
                run = run_enrichment(conn, cfg, now=now)
                dt = time.perf_counter() - t
                peak = tracemalloc.get_traced_memory()[1] if trace else None
                if trace:
                    tracemalloc.stop()
                runs.append(
                    {
                        "at": now.strftime("%H:%M:%S"),
                        "sent": len(run.sent),
                        "timed_out": run.timed_out,
                        "seconds": round(dt, 3),
                        "heap_peak_mb": round(peak / 2**20, 1) if peak else None,
                        "load": load(),
                    }
                )
            spent = conn.execute(
                "SELECT sent FROM hub.enrichment_budget WHERE hour = %s", (hour,)
            ).fetchone()[0]
            queued = conn.execute(
                "SELECT count(*) FROM hub.enrichment_requests WHERE sent_at >= %s AND sent_at < %s",
                (hour, hour + timedelta(hours=1)),
            ).fetchone()[0]
            in_queue = conn.execute("SELECT count(*) FROM pgmq.q_llm_requests").fetchone()[0]
            conn.commit()
            nxt = run_enrichment(conn, cfg, now=hour + timedelta(hours=1, seconds=1))
            out["hour"] = {
                "runs": runs,
                "requests_sent_in_the_hour": queued,
                "budget_row": spent,
                "messages_on_llm_requests": in_queue,
                "next_hour_first_run_sent": len(nxt.sent),
                "load": load(),
            }
            # worst case: one run with no cap over every key still waiting, peak RSS sampled
            rss = RssPeak()
            before = rss.peak
            rss.start()
            t = time.perf_counter()
            big = run_enrichment(
                conn,
                EnrichmentConfig(max_per_hour=10 * a.budget_keys),
                now=hour + timedelta(hours=2, seconds=1),
            )
            dt = time.perf_counter() - t
            rss.stop_event.set()
            rss.join()
            out["uncapped_run"] = {
                "sent": len(big.sent),
                "seconds": round(dt, 2),
                "rss_before_mb": round(before / 2**20, 1),
                "rss_peak_mb": round(rss.peak / 2**20, 1),
                "rss_growth_mb": round((rss.peak - before) / 2**20, 1),
                "load": load(),
            }
    finally:
        drop()
    return out


# ---------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", type=int, default=1000)
    p.add_argument("--keys", type=int, default=8, help="new keys published (part 1)")
    p.add_argument("--misses", type=int, default=8, help="cache misses (part 2)")
    p.add_argument("--spacing", type=float, default=12.0, help="seconds between two keys / two misses")
    p.add_argument("--timeout", type=float, default=180.0, help="wait this long for the last key / answer")
    p.add_argument("--budget-keys", type=int, default=10_000, help="new keys for part 3")
    p.add_argument("--cap", type=int, default=100, help="QUEUE_ASSETS_LLM_MAX_PER_HOUR for part 3")
    p.add_argument("--server", default=os.environ.get("QUEUE_ASSETS_TEST_SERVER_URL"), help="part 3's server")
    p.add_argument("--port", type=int, default=3330)
    p.add_argument("--skip-fleet", action="store_true", help="only part 3")
    p.add_argument("--skip-budget", action="store_true", help="only parts 1 and 2")
    p.add_argument("--keep", action="store_true", help="keep the hub's data folder")
    p.add_argument("--json", type=Path, default=None, help="write the full report here")
    a = p.parse_args()
    report: dict = {"load_start": load(), "started": datetime.now(UTC).isoformat()}
    problems: list[str] = []
    if not a.skip_budget:
        log(f"part 3: {a.budget_keys} new keys, cap {a.cap}/hour")
        report["budget"] = b = budget_part(a)
        h = b["hour"]
        print(f"part 3 ({b['server']}): {b['keys']} new keys, cap {b['cap']}/hour")
        for r in h["runs"]:
            print(
                f"  run at {r['at']}: sent {r['sent']}, timed out {r['timed_out']}, {r['seconds']} s"
                + (f", heap peak {r['heap_peak_mb']} MB (tracemalloc)" if r["heap_peak_mb"] else "")
                + f"  [load {r['load']}]"
            )
        print(
            f"  requests sent in the hour: {h['requests_sent_in_the_hour']} (cap {b['cap']}; budget row "
            f"{h['budget_row']}); first run of the next hour sent {h['next_hour_first_run_sent']}  [load {h['load']}]"
        )
        u = b["uncapped_run"]
        print(
            f"  one uncapped run: sent {u['sent']} in {u['seconds']} s, RSS {u['rss_before_mb']} -> peak "
            f"{u['rss_peak_mb']} MB (+{u['rss_growth_mb']} MB, psutil every 20 ms)  [load {u['load']}]"
        )
        if h["requests_sent_in_the_hour"] > a.cap:
            problems.append(f"{h['requests_sent_in_the_hour']} requests in one hour, over the cap {a.cap}")
    if not a.skip_fleet:
        log(f"parts 1-2: {a.instances} instances, {a.keys} new keys, {a.misses} misses")
        report["fleet"] = f = fleet_parts(a)
        problems += f.get("problems", [])
        if "new_keys" in f:
            print(
                f"hub ready in {f['hub_ready_s']} s; {a.instances} heartbeats ingested in "
                f"{f['heartbeats_ingested_s']} s; inboxes {f['inbox_sync']}"
            )
            print(
                f"part 1: new key -> pattern_learned in each of {a.instances} inboxes ({a.keys} keys, "
                f"{a.keys * a.instances} (key, inbox) pairs)"
            )
            for k, v in f["new_keys"]["stages"].items():
                print(f"  {k:34s} {v}")
            for r in f["new_keys"]["per_key"]:
                tot = (r["visible"] - r["ingested"]) if r.get("visible") and r.get("ingested") else None
                print(
                    f"  {r['key']:32s} ingested->visible {tot and round(tot, 1)} s  [load at publish {r['load_at_publish']}]"
                )
            bad = {
                k: v
                for k, v in f["copies"].items()
                if v["one_copy"] != a.instances or v["enqueue_times"] != 1
            }
            print(
                f"  copies: every inbox holds exactly one copy of each key, one enqueue time per key: {not bad}"
            )
            if bad:
                problems.append(f"inbox copies not exactly once: {bad}")
            missing = [r["key"] for r in f["new_keys"]["per_key"] if r.get("visible") is None]
            if missing:
                problems.append(f"keys never visible within {a.timeout:g} s: {missing}")
            print(f"part 2: cache miss -> the answer in the asking inbox ({a.misses} misses)")
            for k, v in f["misses"]["stages"].items():
                print(f"  {k:34s} {v}")
            for r in f["misses"]["per_miss"]:
                print(f"  {r['key']:32s} from {r['instance']}")
            unanswered = [r["key"] for r in f["misses"]["per_miss"] if r.get("visible") is None]
            if unanswered:
                problems.append(f"misses never answered within {a.timeout:g} s: {unanswered}")
            print(f"run launch (created -> started), s: {f['run_launch_s']}")
            print(
                f"runs: {f['runs']}; router: {f['router']} {f['router_errors'] or ''}; hub memory {f['memory_mb']} MB"
            )
            print(f"total {f['total_s']} s")
    report["load_end"] = load()
    report["problems"] = problems
    print(f"load average (1/5/15 min): start {report['load_start']}, end {report['load_end']}")
    if a.json:
        a.json.write_text(json.dumps(report, indent=2, default=lambda o: getattr(o, "seen", str(o))))
    print("PASSED" if not problems else "FAILED: " + "; ".join(problems))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
