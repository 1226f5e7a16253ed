"""What the SDK's send costs over a raw `pgmq.send` of the same message, on the same pool.

    .venv/bin/python bench/bench_send_check.py [--sends 2000] [--server URL]

Three kinds of send, interleaved on one `make_pgmq` client, to `pattern_messages`, each with an
idempotency header: the official client's `send` of a `pattern_detection` message (the baseline),
`backoff.send_with_backoff` of the same message (the SDK's safe send: its BEGIN checks the pooled
connection before anything of the message leaves), and `HubClient.publish_patterns` (builds the
same message, validates it against the contracts, then the safe send). Prints each p50 and its
ratio to the baseline, and the p50 of validation alone.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fresh_database, parse_args  # noqa: E402
from queue_assets import contracts  # noqa: E402
from queue_assets.backoff import send_with_backoff  # noqa: E402
from queue_assets.db import make_pgmq  # noqa: E402
from queue_assets.sdk import HubClient, _dumps  # noqa: E402

PATTERN = {"pattern_type": "framework", "name": "phoenix", "confidence": 0.9}
TIMESTAMP = "2025-10-25T12:00:00Z"


def main() -> None:
    args = parse_args(__doc__, sends=(int, 2000, "sends of each kind"))
    url, label, drop = fresh_database(args.server)
    client = make_pgmq(url)
    try:
        hub = HubClient(url, "singularity-1", client=client)
        message = {
            "type": "pattern_detection",
            "source": "singularity-1",
            "patterns": [PATTERN],
            "instance_id": "singularity-1",
            "timestamp": TIMESTAMP,
        }
        times: dict[str, list[float]] = {"raw": [], "safe": [], "sdk": [], "validate": []}
        for i in range(args.sends):
            t = time.perf_counter()
            client.send("pattern_messages", message, headers={"idempotency_key": f"r-{i}"})
            times["raw"].append(time.perf_counter() - t)
            t = time.perf_counter()
            send_with_backoff(
                client, "pattern_messages", message, {"idempotency_key": f"c-{i}"}, idempotent=True
            )
            times["safe"].append(time.perf_counter() - t)
            t = time.perf_counter()
            hub.publish_patterns([PATTERN], idempotency_key=f"s-{i}", timestamp=TIMESTAMP)
            times["sdk"].append(time.perf_counter() - t)
            t = time.perf_counter()
            contracts.parse_ingest_as("pattern_messages", "pattern_detection", _dumps(message))
            times["validate"].append(time.perf_counter() - t)
        p50 = {k: statistics.median(v) * 1000 for k, v in times.items()}
        print(f"{label}: {args.sends} sends of each kind, interleaved; load average {os.getloadavg()[0]:.1f}")
        print(f"  pgmq client send               p50 {p50['raw']:.3f} ms")
        print(
            f"  send_with_backoff              p50 {p50['safe']:.3f} ms  ratio {p50['safe'] / p50['raw']:.2f}x"
        )
        print(
            f"  HubClient.publish_patterns     p50 {p50['sdk']:.3f} ms  ratio {p50['sdk'] / p50['raw']:.2f}x"
        )
        print(f"  validation alone (dumps+parse) p50 {p50['validate']:.3f} ms")
    finally:
        client.close()
        drop()


if __name__ == "__main__":
    main()
