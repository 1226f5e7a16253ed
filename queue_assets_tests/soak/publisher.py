"""Simulated instances for the soak: they publish through the SDK and remember what they published.

Every message gets an idempotency key unique to this soak (`<prefix>-<instance>-<n>`), and a record:
which queue, how many data rows it must become, when the instance made it, and the msg_id the
send returned. The records are the "published" side of the final accounting.

A producer thread makes messages at a steady rate into a buffer; a sender thread sends them with
`HubClient`. When a send fails (the database is stopped, a connection dropped mid-commit), the
sender keeps the message at the head of the buffer and retries it later with the SAME key, so the
hub stores it once even when the failed attempt had in fact reached the queue. Meanwhile the
producer keeps producing: an instance buffers while the hub's database is away.

`burst` sends many valid messages at once (contract-checked one by one, as the SDK does, then
sent with pgmq's `send_batch`), and `malformed_burst` sends messages that must all end in the
dead-letter queues, each tagged with a `soak_bad_id` header so they can be counted exactly.
"""

from __future__ import annotations

import collections
import json
import random
import threading
import time
from dataclasses import dataclass

import psycopg

from queue_assets import contracts
from queue_assets.db import make_pgmq
from queue_assets.queues import CONSUMED_QUEUES, INSTANCE_HEARTBEAT, LEARNED_PATTERNS, PATTERN_MESSAGES
from queue_assets.sdk import HubClient
from queue_assets.simulate import random_pattern

ARTIFACTS = [
    "tmpl-genserver-cache",
    "tmpl-circuit-breaker",
    "tmpl-retry-backoff",
    "tmpl-axum-service",
    "tmpl-phoenix-live",
    "tmpl-supervisor-tree",
]


@dataclass
class Record:
    """One message an instance published (or is still trying to)."""

    key: str
    queue: str
    instance: str
    kind: str
    rows: int
    """Data rows it must become: patterns, artifacts, or 1 (analysis, heartbeat)."""
    created: float
    """Wall time the instance made it (time.time())."""
    payload: dict
    sent: float | None = None
    msg_id: int | None = None
    attempts: int = 0
    errors: int = 0


class Fleet:
    """`instances` simulated instances publishing about `rate` messages per second in all, plus a
    heartbeat from every instance each `heartbeat_every_s` seconds."""

    def __init__(
        self,
        db_url: str,
        *,
        instances: int = 20,
        rate: float = 25.0,
        heartbeat_every_s: float = 10.0,
        prefix: str = "soak",
        seed: int = 5,
    ):
        if instances < 1 or rate < 0:
            raise ValueError(
                f"instances={instances}, rate={rate}: need at least one instance and a rate >= 0"
            )
        self.db_url = db_url
        self.instance_ids = [f"singularity-{i + 1}" for i in range(instances)]
        self.rate = rate
        self.heartbeat_every_s = heartbeat_every_s
        self.prefix = prefix
        self.rng = random.Random(seed)
        self.records: dict[str, Record] = {}
        self.lock = threading.Lock()
        self.pending: collections.deque[Record] = collections.deque()
        self.error_kinds: collections.Counter[str] = collections.Counter()
        self._seq = 0
        self._stop_producing = threading.Event()
        self._stop_sending = threading.Event()
        self._producer_done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._client = None
        self.bad_sent: dict[str, int] = {}
        self.max_pending = 0

    # --- messages ----------------------------------------------------------------------------

    def _next_key(self, instance: str) -> str:
        with self.lock:
            self._seq += 1
            return f"{self.prefix}-{instance}-{self._seq}"

    def make(self, kind: str, instance: str | None = None) -> Record:
        instance = instance or self.rng.choice(self.instance_ids)
        key = self._next_key(instance)
        now = time.time()
        if kind == "pattern_detection":
            patterns = [random_pattern(self.rng) for _ in range(self.rng.randint(1, 3))]
            payload = {"patterns": patterns, "timestamp": _iso(now)}
            queue, rows = PATTERN_MESSAGES, len(patterns)
        elif kind == "code_analysis":
            payload = {"analysis": {"files": self.rng.randint(10, 500), "dead_code": self.rng.randint(0, 20)}}
            queue, rows = PATTERN_MESSAGES, 1
        elif kind == "learned_patterns":
            arts = [
                {
                    "artifact_id": a,
                    "artifact_type": "template",
                    "name": a.removeprefix("tmpl-"),
                    "content": {"template": f"# {a}\n"},
                }
                for a in self.rng.sample(ARTIFACTS, self.rng.randint(1, 2))
            ]
            payload = {
                "artifacts": arts,
                "usage_count": self.rng.randint(20, 400),
                "success_rate": round(self.rng.uniform(0.85, 0.99), 3),
            }
            queue, rows = LEARNED_PATTERNS, len(arts)
        elif kind == "heartbeat":
            payload = {"version": "1.4.0", "status": "ok"}
            queue, rows = INSTANCE_HEARTBEAT, 1
        else:
            raise ValueError(f"unknown message kind {kind!r}")
        rec = Record(key, queue, instance, kind, rows, now, payload)
        with self.lock:
            self.records[key] = rec
        return rec

    def _send_one(self, client: HubClient, rec: Record) -> int:
        p = rec.payload
        if rec.kind == "pattern_detection":
            return client.publish_patterns(p["patterns"], idempotency_key=rec.key, timestamp=p["timestamp"])
        if rec.kind == "code_analysis":
            return client.publish_code_analysis(p["analysis"], idempotency_key=rec.key)
        if rec.kind == "learned_patterns":
            return client.publish_learned_patterns(
                p["artifacts"],
                usage_count=p["usage_count"],
                success_rate=p["success_rate"],
                idempotency_key=rec.key,
            )
        return client.heartbeat(version=p["version"], status=p["status"], idempotency_key=rec.key)

    # --- threads -----------------------------------------------------------------------------

    def start(self) -> None:
        self._client = make_pgmq(self.db_url, pool_size=2)
        self._clients = {i: HubClient(self.db_url, i, client=self._client) for i in self.instance_ids}
        for target, name in ((self._produce, "soak-producer"), (self._send, "soak-sender")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def _produce(self) -> None:
        kinds = ["pattern_detection"] * 15 + ["code_analysis"] * 2 + ["learned_patterns"] * 3
        started = time.monotonic()
        n_made = 0
        stagger = {i: self.rng.uniform(0, self.heartbeat_every_s) for i in self.instance_ids}
        beats = dict.fromkeys(self.instance_ids, 0)
        while not self._stop_producing.is_set():
            elapsed = time.monotonic() - started
            due = int(elapsed * self.rate) - n_made
            for _ in range(max(0, due)):
                self.pending.append(self.make(self.rng.choice(kinds)))
                n_made += 1
            for i in self.instance_ids:
                if elapsed >= stagger[i] + beats[i] * self.heartbeat_every_s:
                    self.pending.append(self.make("heartbeat", i))
                    beats[i] += 1
            self.max_pending = max(self.max_pending, len(self.pending))
            time.sleep(0.02)
        self._producer_done.set()

    def _send(self) -> None:
        delay = 0.25
        while not self._stop_sending.is_set():
            if not self.pending:
                if self._producer_done.is_set():
                    return
                time.sleep(0.01)
                continue
            rec = self.pending[0]
            rec.attempts += 1
            try:
                msg_id = self._send_one(self._clients[rec.instance], rec)
            except contracts.ContractError:
                raise  # a bug in this simulator, not a fault to ride out
            except Exception as exc:  # noqa: BLE001 - every failure is retried with the same key
                rec.errors += 1
                self.error_kinds[type(exc).__name__] += 1
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.25
            rec.msg_id, rec.sent = msg_id, time.time()
            self.pending.popleft()

    def drain(self, timeout_s: float) -> bool:
        """Stop producing and wait until every buffered message was sent (True) or the timeout."""
        self._stop_producing.set()
        deadline = time.monotonic() + timeout_s
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.1)
        return not self.pending

    def close(self) -> None:
        self._stop_producing.set()
        self._stop_sending.set()
        for t in self._threads:
            t.join(timeout=60)
        if self._client is not None:
            self._client.pool.close()

    # --- views -------------------------------------------------------------------------------

    def snapshot(self) -> list[Record]:
        with self.lock:
            return list(self.records.values())

    def unsent(self) -> int:
        return sum(1 for r in self.snapshot() if r.msg_id is None)

    # --- bursts ------------------------------------------------------------------------------

    def burst(self, n: int, kind: str = "pattern_detection", chunk: int = 500) -> list[Record]:
        """`n` valid messages at once: contract-checked like the SDK does, sent with `send_batch`."""
        recs = [self.make(kind) for _ in range(n)]
        client = make_pgmq(self.db_url, pool_size=1)
        try:
            send_checked_batch(client, recs, chunk=chunk)
        finally:
            client.pool.close()
        return recs

    def malformed_burst(self, n: int) -> dict[str, int]:
        """`n` malformed messages spread over the consumed queues; returns how many went to each."""
        per_queue: dict[str, list[tuple[str, str]]] = {q: [] for q in CONSUMED_QUEUES}
        queues = list(CONSUMED_QUEUES)
        for i in range(n):
            queue = queues[i % len(queues)]
            body = MALFORMED[i % len(MALFORMED)]
            per_queue[queue].append((body, json.dumps({"soak_bad_id": f"{self.prefix}-bad-{i}"})))
        with psycopg.connect(self.db_url) as conn:
            for queue, items in per_queue.items():
                for start in range(0, len(items), 1000):
                    part = items[start : start + 1000]
                    conn.execute(
                        "SELECT pgmq.send_batch(%s, %s::jsonb[], %s::jsonb[])",
                        (queue, [b for b, _ in part], [h for _, h in part]),
                    )
            conn.commit()
        counts = {q: len(v) for q, v in per_queue.items()}
        for q, c in counts.items():
            self.bad_sent[q] = self.bad_sent.get(q, 0) + c
        return counts


def send_checked_batch(client, recs: list[Record], *, chunk: int = 500) -> None:
    """Contract-check each record's full message (as `HubClient` would build it), then send each
    queue's records with one `send_batch` per chunk, idempotency key in the headers."""
    by_queue: dict[str, list[Record]] = collections.defaultdict(list)
    for r in recs:
        by_queue[r.queue].append(r)
    for queue, items in by_queue.items():
        for start in range(0, len(items), chunk):
            part = items[start : start + chunk]
            messages = [full_message(r) for r in part]
            for m in messages:
                contracts.parse_ingest(queue, json.dumps(m, allow_nan=False))
            ids = client.send_batch(queue, messages, headers=[{"idempotency_key": r.key} for r in part])
            now = time.time()
            for r, msg_id in zip(part, ids, strict=True):
                r.msg_id, r.sent, r.attempts = msg_id, now, r.attempts + 1


def full_message(r: Record) -> dict:
    """The wire message `HubClient` would send for `r`."""
    base = {"instance_id": r.instance, "timestamp": r.payload.get("timestamp") or _iso(r.created)}
    p = r.payload
    if r.kind == "pattern_detection":
        return {"type": "pattern_detection", "source": r.instance, "patterns": p["patterns"], **base}
    if r.kind == "code_analysis":
        return {"type": "code_analysis", "analysis": p["analysis"], **base}
    if r.kind == "learned_patterns":
        return {
            "type": "learned_patterns",
            "source": r.instance,
            "usage_count": p["usage_count"],
            "success_rate": p["success_rate"],
            "artifacts": p["artifacts"],
            **base,
        }
    return {"type": "heartbeat", "version": p["version"], "status": p["status"], **base}


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


# Bodies every consumed queue must refuse: broken shapes, wrong types, bad values, wrong queue.
MALFORMED: list[str] = [
    json.dumps(
        {
            "type": "pattern_detection",
            "instance_id": "singularity-1",
            "timestamp": "not a time",
            "patterns": [],
        }
    ),
    json.dumps({"type": "no_such_type", "instance_id": "singularity-1"}),
    json.dumps("just a string"),
    json.dumps([1, 2, 3]),
    json.dumps({"instance_id": "singularity-1", "timestamp": "2025-10-25T12:00:00Z"}),
    json.dumps(
        {
            "type": "pattern_detection",
            "instance_id": "singularity-1",
            "timestamp": "2025-10-25T12:00:00Z",
            "patterns": [{"pattern_type": "framework", "name": "phoenix", "confidence": 3.5}],
        }
    ),
    json.dumps(
        {
            "type": "learned_patterns",
            "source": "singularity-1",
            "timestamp": "2025-10-25T12:00:00Z",
            "usage_count": -5,
            "success_rate": 7,
            "artifacts": [],
        }
    ),
    json.dumps({"type": "heartbeat", "timestamp": "2025-10-25T12:00:00Z", "status": "ok"}),
    json.dumps({"type": "llm_request", "request_id": "r-1", "timestamp": "2025-10-25T12:00:00Z"}),
    json.dumps(
        {
            "type": "pattern_detection",
            "instance_id": "../../etc/passwd",
            "timestamp": "2025-10-25T12:00:00Z",
            "patterns": [],
        }
    ),
]


def check_malformed_corpus() -> None:
    """Every malformed body is refused on every consumed queue (else the burst's count is wrong)."""
    for queue in CONSUMED_QUEUES:
        for body in MALFORMED:
            try:
                contracts.parse_ingest(queue, body)
            except contracts.ContractError:
                continue
            raise AssertionError(f"malformed soak body is accepted on {queue}: {body}")
