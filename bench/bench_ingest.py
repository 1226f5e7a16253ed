"""Ingest throughput end to end vs a raw pgmq read(100) + archive(ids[]) loop, and SDK send latency.

    .venv/bin/python bench/bench_ingest.py [--messages 20000] [--rounds 3] [--server URL]

Both loops run in the same process against the same server, alternating, on the same payloads
(pattern_detection messages with 2 patterns). Prints the medians and the ratio, with the load
average beside it (the machine may be shared: compare only figures taken at a low load).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fresh_database, parse_args  # noqa: E402
from queue_assets.db import make_pgmq  # noqa: E402
from queue_assets.ingest.core import IngestConfig, ingest_queue  # noqa: E402
from queue_assets.sdk import HubClient  # noqa: E402
from queue_assets_tests.helpers import pattern_message, send_many  # noqa: E402


def raw_loop(q, queue: str) -> int:
    n = 0
    while True:
        msgs = q.read(queue, vt=30, qty=100)
        if not msgs:
            return n
        q.archive_batch(queue, [m.msg_id for m in msgs])
        n += len(msgs)


def main() -> None:
    args = parse_args(
        __doc__,
        messages=(int, 20_000, "messages per round"),
        rounds=(int, 3, "rounds"),
        sends=(int, 2000, "sends for the latency comparison"),
        batch=(int, IngestConfig().batch_size, "ingest batch size (SHARED_QUEUE_BATCH_SIZE)"),
    )
    url, label, drop = fresh_database(args.server)
    load_before = os.getloadavg()
    payloads = [pattern_message(f"singularity-{i % 8}", i) for i in range(args.messages)]
    q = make_pgmq(url)
    raw_rates, ingest_rates = [], []
    try:
        with psycopg.connect(url) as conn:
            for _ in range(args.rounds):
                send_many(conn, "llm_requests", payloads)
                t = time.perf_counter()
                n = raw_loop(q, "llm_requests")
                raw_rates.append(n / (time.perf_counter() - t))
                send_many(conn, "pattern_messages", payloads)
                t = time.perf_counter()
                r = ingest_queue(
                    conn, "pattern_messages", IngestConfig(batch_size=args.batch), prefetch_url=url
                )
                ingest_rates.append(r.read / (time.perf_counter() - t))
                assert r.stored == args.messages, r
            raw_send, sdk_send = [], []
            with HubClient(url, "singularity-1", client=q) as hub:
                pattern = {"pattern_type": "framework", "name": "phoenix", "confidence": 0.9}
                for i in range(args.sends):
                    msg = {
                        "type": "pattern_detection",
                        "instance_id": "singularity-1",
                        "timestamp": "2025-10-25T12:00:00Z",
                        "patterns": [pattern],
                    }
                    t = time.perf_counter()
                    q.send("llm_requests", msg, headers={"idempotency_key": f"k{i}"})
                    raw_send.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    hub.publish_patterns([pattern], idempotency_key=f"k{i}")
                    sdk_send.append(time.perf_counter() - t)
    finally:
        q.close()
        drop()
    raw, ing = statistics.median(raw_rates), statistics.median(ingest_rates)
    p50_raw, p50_sdk = statistics.median(raw_send) * 1000, statistics.median(sdk_send) * 1000
    print(f"server: {label}")
    print(f"messages per round: {args.messages}, rounds: {args.rounds}, ingest batch size: {args.batch}")
    print(
        f"raw pgmq read(100)+archive loop: {raw:,.0f} msg/s (rounds: {', '.join(f'{x:,.0f}' for x in raw_rates)})"
    )
    print(
        f"hub ingest (read, validate, store, archive): {ing:,.0f} msg/s "
        f"(rounds: {', '.join(f'{x:,.0f}' for x in ingest_rates)})"
    )
    load_after = os.getloadavg()
    print(
        f"ratio ingest/raw: {ing / raw:.2f} (load average 1/5/15 min: before "
        f"{'/'.join(f'{x:.1f}' for x in load_before)}, after {'/'.join(f'{x:.1f}' for x in load_after)})"
    )
    print(
        f"send p50: raw pgmq.send {p50_raw:.3f} ms, SDK publish_patterns {p50_sdk:.3f} ms "
        f"(ratio {p50_sdk / p50_raw:.2f}) over {args.sends} sends each"
    )


if __name__ == "__main__":
    main()
