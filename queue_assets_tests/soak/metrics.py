"""Measurements of a soak: lag over time, process memory, publish->stored latency and its parts.

- `Sampler` (a thread) records every few seconds, per consumed queue, the depth, the visible
  depth and the age of the oldest message (the lag), the memory (RSS) of the webserver, the
  daemon and the code servers, and the publishers' backlog. A sample taken while the database is
  stopped records the error instead.
- `latency` turns ledger rows into p50/p95/p99 of enqueued->stored (both on the database's clock).
- `decompose` splits each message's latency along the ingest run that stored it: waiting for a
  run to be requested (the sensor's interval, or a run already in progress), the run's launch
  (queued -> dequeued -> process started -> code loaded: the run's creation -> start), and the
  time inside the run.
"""

from __future__ import annotations

import bisect
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from queue_assets.queues import CONSUMED_QUEUES

from .accounting import LedgerRow
from .graphql import RunInfo


@dataclass
class Sample:
    t: float
    phase: str
    queues: dict[str, dict] | None
    rss_mb: dict[str, float]
    backlog: int
    error: str | None = None


@dataclass
class Sampler:
    db_url: str
    rss: Callable[[], dict[str, float]]
    backlog: Callable[[], int]
    every_s: float = 3.0
    samples: list[Sample] = field(default_factory=list)
    phase: str = "warmup"

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def sample_now(self) -> Sample:
        t = time.time()
        try:
            rss = self.rss()
        except Exception as exc:  # noqa: BLE001 - a process may be between restarts
            rss = {"error": str(exc)[:80]}
        try:
            queues = queue_lag(self.db_url)
            s = Sample(t, self.phase, queues, rss, self.backlog())
        except psycopg.Error as exc:
            s = Sample(t, self.phase, None, rss, self.backlog(), error=str(exc).strip().splitlines()[0][:120])
        self.samples.append(s)
        return s

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample_now()
            self._stop.wait(self.every_s)


def queue_lag(db_url: str) -> dict[str, dict]:
    """Per consumed queue: depth, visible (a read would get it now) and the oldest message's age."""
    out = {}
    with psycopg.connect(db_url, connect_timeout=3, autocommit=True) as conn:
        for q in CONSUMED_QUEUES:
            depth, visible, age = conn.execute(
                sql.SQL(
                    "SELECT count(*), count(*) FILTER (WHERE vt <= clock_timestamp()),"
                    " coalesce(extract(epoch FROM clock_timestamp() - min(enqueued_at)), 0)::float8"
                    " FROM pgmq.{}"
                ).format(sql.Identifier("q_" + q))
            ).fetchone()
            out[q] = {"depth": depth, "visible": visible, "oldest_age_s": round(age, 2)}
    return out


def pct(values: list[float], p: float) -> float | None:
    """The p-th percentile (nearest rank on the sorted values), None for no values."""
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(p / 100 * len(v) + 0.5)) - 1))
    return round(v[k], 3)


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p95": pct(values, 95),
        "p99": pct(values, 99),
        "max": round(max(values), 3),
        "mean": round(statistics.fmean(values), 3),
    }


def latency(rows: list[LedgerRow], keys: set[str] | None = None) -> dict:
    """enqueued -> stored of the stored rows (of `keys` when given)."""
    vals = [r.stored - r.enqueued for r in rows if r.outcome == "stored" and (keys is None or r.key in keys)]
    return summary(vals)


def lag_summary(samples: list[Sample], phases: set[str] | None = None) -> dict:
    """Per queue: the largest and the mean oldest-message age, and the largest depth, over the samples."""
    out = {}
    chosen = [s for s in samples if s.queues and (phases is None or s.phase in phases)]
    for q in CONSUMED_QUEUES:
        ages = [s.queues[q]["oldest_age_s"] for s in chosen]
        depths = [s.queues[q]["depth"] for s in chosen]
        if ages:
            out[q] = {
                "max_oldest_age_s": round(max(ages), 1),
                "mean_oldest_age_s": round(statistics.fmean(ages), 1),
                "max_depth": max(depths),
                "samples": len(ages),
            }
    return out


@dataclass
class Components:
    wait_for_run_s: list[float] = field(default_factory=list)
    launch_s: list[float] = field(default_factory=list)
    in_run_s: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "wait_for_run_request": summary(self.wait_for_run_s),
            "run_launch": summary(self.launch_s),
            "inside_run": summary(self.in_run_s),
        }


def decompose(rows: list[LedgerRow], runs: list[RunInfo], keys: set[str] | None = None) -> Components:
    """Split each stored message's latency along the ingest run (of its queue) that stored it."""
    by_queue: dict[str, list[RunInfo]] = {}
    for r in runs:
        q = r.tags.get("queue_assets/ingest_queue")
        if q and r.started:
            by_queue.setdefault(q, []).append(r)
    for lst in by_queue.values():
        lst.sort(key=lambda r: r.started)
    starts = {q: [r.started for r in lst] for q, lst in by_queue.items()}
    out = Components()
    for row in rows:
        if row.outcome != "stored" or (keys is not None and row.key not in keys) or row.queue not in by_queue:
            continue
        i = bisect.bisect_right(starts[row.queue], row.stored) - 1
        if i < 0:
            continue
        run = by_queue[row.queue][i]
        e, s = row.enqueued, row.stored
        if e < run.created:
            out.wait_for_run_s.append(run.created - e)
            out.launch_s.append(run.started - run.created)
            out.in_run_s.append(s - run.started)
        elif e < run.started:
            out.wait_for_run_s.append(0.0)
            out.launch_s.append(run.started - e)
            out.in_run_s.append(s - run.started)
        else:
            out.wait_for_run_s.append(0.0)
            out.launch_s.append(0.0)
            out.in_run_s.append(s - e)
    return out


def run_overheads(runs: list[RunInfo], rows: list[LedgerRow]) -> dict:
    """Per ingest run: created -> started (queue + launch + code load), started -> first stored row,
    and the whole run; over the runs that started."""
    created_to_start, start_to_first, duration = [], [], []
    stored_by_queue: dict[str, list[float]] = {}
    for row in rows:
        stored_by_queue.setdefault(row.queue, []).append(row.stored)
    for lst in stored_by_queue.values():
        lst.sort()
    for r in runs:
        q = r.tags.get("queue_assets/ingest_queue")
        if not q or not r.started:
            continue
        created_to_start.append(r.started - r.created)
        if r.ended:
            duration.append(r.ended - r.started)
            ts = stored_by_queue.get(q, [])
            i = bisect.bisect_left(ts, r.started)
            if i < len(ts) and ts[i] <= r.ended:
                start_to_first.append(ts[i] - r.started)
    return {
        "created_to_started": summary(created_to_start),
        "started_to_first_stored": summary(start_to_first),
        "run_duration": summary(duration),
    }


def tick_intervals(timestamps: list[float]) -> dict:
    ts = sorted(timestamps)
    return summary([b - a for a, b in zip(ts, ts[1:], strict=False)])


def first_read_times(conn: psycopg.Connection, visibility_timeout_s: float) -> dict[tuple[str, int], float]:
    """(queue, msg_id) -> when the message was first read, for the archived messages read once.

    `pgmq.read` sets `vt` to the read's clock time plus the visibility timeout, and `archive` keeps
    it; a message read again (after its lease expired) or whose lease was extended is left out.
    """
    out: dict[tuple[str, int], float] = {}
    for q in CONSUMED_QUEUES:
        rows = conn.execute(
            sql.SQL("SELECT msg_id, extract(epoch FROM vt)::float8 FROM pgmq.{} WHERE read_ct = 1").format(
                sql.Identifier("a_" + q)
            )
        ).fetchall()
        out.update({(q, msg_id): vt - visibility_timeout_s for msg_id, vt in rows})
    conn.commit()
    return out


def read_split(rows: list[LedgerRow], reads: dict[tuple[str, int], float], keys: set[str]) -> dict:
    """Inside a running run: enqueued -> first read (the consumer's poll and the batch ahead of it)
    and read -> stored (validation, the wait for the storing thread, the store statement)."""
    to_read, to_store = [], []
    for r in rows:
        read = reads.get((r.queue, r.msg_id))
        if r.outcome != "stored" or r.key not in keys or read is None or not r.enqueued <= read <= r.stored:
            continue
        to_read.append(read - r.enqueued)
        to_store.append(r.stored - read)
    return {"enqueued_to_read": summary(to_read), "read_to_stored": summary(to_store)}


def first_run_started(runs: list[RunInfo]) -> dict[str, float]:
    """Per queue: when its first ingest run started (before it, the queue had no consumer)."""
    out: dict[str, float] = {}
    for r in runs:
        q = r.tags.get("queue_assets/ingest_queue")
        if q and r.started and r.started < out.get(q, float("inf")):
            out[q] = r.started
    return out


def first_caught_up(
    samples: list[Sample], first_started: dict[str, float], max_age_s: float = 1.0
) -> dict[str, float]:
    """Per queue: the first lag sample, after its first ingest run started, in which the queue's
    oldest message was younger than `max_age_s`: the run had drained what piled up before it."""
    out: dict[str, float] = {}
    for s in sorted(samples, key=lambda s: s.t):
        for q, started in first_started.items():
            if q not in out and s.queues and s.t >= started and s.queues[q]["oldest_age_s"] < max_age_s:
                out[q] = s.t
    return out


def steady_keys(rows: list[LedgerRow], since: dict[str, float], keys: set[str]) -> set[str]:
    """The keys of `keys` enqueued after `since[queue]` (e.g. when the queue first caught up): steady
    traffic, without the hub's cold start (an idle queue's first messages wait for a sensor tick and
    a run launch, and those behind them for the backlog to drain)."""
    return {
        r.key
        for r in rows
        if r.outcome == "stored" and r.key in keys and r.enqueued >= since.get(r.queue, float("inf"))
    }
