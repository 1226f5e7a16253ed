"""What the SDK's safe-retry send costs: `send_with_backoff` vs the official client's `send`, same pool.

    .venv/bin/python bench/bench_send_check.py [--sends 2000] [--server URL]

`send_with_backoff` checks the pooled connection (one empty round trip) before sending, so that a
stale connection is replaced instead of making the send's outcome unknown. Both kinds of send are
interleaved on one `make_pgmq` client; prints the p50 of each and the ratio.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fresh_database, parse_args  # noqa: E402
from queue_assets.backoff import send_with_backoff  # noqa: E402
from queue_assets.db import make_pgmq  # noqa: E402


def main() -> None:
    args = parse_args(__doc__, sends=(int, 2000, "sends of each kind"))
    url, label, drop = fresh_database(args.server)
    client = make_pgmq(url)
    try:
        message = {"type": "heartbeat", "instance_id": "singularity-1", "timestamp": "2025-10-25T12:00:00Z"}
        raw, checked = [], []
        for i in range(args.sends):
            t = time.perf_counter()
            client.send("instance_heartbeat", message, headers={"idempotency_key": f"r-{i}"})
            raw.append(time.perf_counter() - t)
            t = time.perf_counter()
            send_with_backoff(client, "instance_heartbeat", message, {"idempotency_key": f"c-{i}"}, idempotent=True)
            checked.append(time.perf_counter() - t)
        p50_raw, p50_checked = statistics.median(raw) * 1000, statistics.median(checked) * 1000
        print(f"{label}: {args.sends} sends each, interleaved")
        print(f"  pgmq client send       p50 {p50_raw:.3f} ms")
        print(f"  send_with_backoff      p50 {p50_checked:.3f} ms  ratio {p50_checked / p50_raw:.2f}x")
    finally:
        client.close()
        drop()


if __name__ == "__main__":
    main()
