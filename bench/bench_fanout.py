"""Fan-out: one `pgmq.send_topic` to 1,000 instance inboxes vs one `pgmq.send` per inbox.

    .venv/bin/python bench/bench_fanout.py [--instances 1000] [--rounds 5] [--server URL]

1,000 instances send a heartbeat (stored by the real ingest loop); `sync_inboxes` creates and
binds their inboxes (timed once: that is the cost of a fleet appearing). Then, alternating, each
round publishes the same message once through `fanout.publish` (validation + `pgmq.send_topic`,
one transaction) and once as the baseline: a loop of `pgmq.send` to every inbox in one
transaction from Python. Two payloads: a small `templates_updated` and an `aggregated_patterns`
with 100 patterns. Prints medians, copies per second and the ratio.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fresh_database, parse_args  # noqa: E402
from queue_assets.fanout import hub_message, publish, sync_inboxes  # noqa: E402
from queue_assets.ingest.core import IngestConfig, ingest_queue  # noqa: E402
from queue_assets_tests.helpers import send_many  # noqa: E402


def payloads() -> dict[str, dict]:
    patterns = [
        {
            "pattern_type": "framework",
            "name": f"pattern-{i}",
            "rank": i + 1,
            "score": 3.25,
            "instance_count": 3,
            "frequency": 120,
            "confidence": 0.8125,
            "indicators": ["mix.exs has :phoenix", "lib/app_web/router.ex"],
        }
        for i in range(100)
    ]
    return {
        "templates_updated": hub_message(
            "templates_updated",
            git_url="/srv/git/templates_data.git",
            commit="0123456789abcdef0123456789abcdef01234567",
            updated_files=["templates/elixir/genserver_cache.ex.eex"],
        ),
        "aggregated_patterns (100 patterns)": hub_message("aggregated_patterns", patterns=patterns),
    }


def main() -> None:
    args = parse_args(__doc__, instances=(int, 1000, "instances (inboxes)"), rounds=(int, 5, "rounds"))
    url, label, drop = fresh_database(args.server)
    print(f"server: {label}; {args.instances} inboxes, {args.rounds} rounds, medians")
    try:
        with psycopg.connect(url) as conn:
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            send_many(
                conn,
                "instance_heartbeat",
                [
                    json.dumps({"type": "heartbeat", "instance_id": f"singularity-{i}", "timestamp": now})
                    for i in range(args.instances)
                ],
            )
            stored = ingest_queue(conn, "instance_heartbeat", IngestConfig(batch_size=500)).stored
            assert stored == args.instances, stored
            t = time.perf_counter()
            sync = sync_inboxes(conn, 3600)
            conn.commit()
            print(
                f"sync_inboxes: created and bound {len(sync.bound)} inboxes in {time.perf_counter() - t:.2f}s; "
                f"a second sync (nothing to do) ",
                end="",
            )
            t = time.perf_counter()
            sync_inboxes(conn, 3600)
            conn.commit()
            print(f"{(time.perf_counter() - t) * 1000:.0f} ms")
            inboxes = [f"inbox_singularity_{i}" for i in range(args.instances)]
            for name, message in payloads().items():
                size = len(json.dumps(message).encode())
                topic_s, loop_s = [], []
                for _ in range(args.rounds):
                    t = time.perf_counter()
                    copies = publish(conn, message, sync=False)
                    conn.commit()
                    topic_s.append(time.perf_counter() - t)
                    assert copies == args.instances, copies
                    body = json.dumps(message)
                    t = time.perf_counter()
                    with conn.cursor() as cur:
                        for inbox in inboxes:
                            cur.execute("SELECT pgmq.send(%s, %s::jsonb)", (inbox, body))
                    conn.commit()
                    loop_s.append(time.perf_counter() - t)
                topic, loop = statistics.median(topic_s), statistics.median(loop_s)
                print(
                    f"{name} ({size:,d} bytes): send_topic {topic * 1000:.0f} ms "
                    f"({args.instances / topic:,.0f} copies/s) | per-inbox pgmq.send loop {loop * 1000:.0f} ms "
                    f"({args.instances / loop:,.0f} copies/s) | loop / send_topic = {loop / topic:.2f}x"
                )
            (depth,) = conn.execute("SELECT count(*) FROM pgmq.q_inbox_singularity_0").fetchone()
            assert depth == 2 * 2 * args.rounds, depth  # both payloads, both methods, every round
    finally:
        drop()


if __name__ == "__main__":
    main()
