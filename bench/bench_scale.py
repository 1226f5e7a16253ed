"""Scale bench: 1,000 simulated instances against a hub driven by its daemon (webserver + daemon).

    .venv/bin/python bench/bench_scale.py                      # 1,000 instances, 3 minutes
    .venv/bin/python bench/bench_scale.py --instances 200 --minutes 1

Starts its own hub (embedded PostgreSQL in a fresh data folder, port 3310 by default), publishes
from `--instances` instances (heartbeats every 15 s, one message every 10 s each, batched with
`send_batch` after the SDK's contract check), waits for ingest to drain, runs an aggregation and
lets the automation sensor fan the ranking out to every inbox, then runs `queue_statistics`.
Prints the figures, and the ratio of `queue_statistics` with the fleet's inboxes to the same
run measured before the fleet existed (the baseline). Exits 1 when a pass condition failed.
The logic lives in `queue_assets_tests/soak/scale.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from queue_assets_tests.soak.scale import ScaleOptions, run_scale  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", type=int, default=1000)
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--heartbeat-every", type=float, default=15.0)
    p.add_argument("--publish-every", type=float, default=10.0)
    p.add_argument("--port", type=int, default=3310)
    p.add_argument("--keep", action="store_true", help="keep the data folder afterwards")
    p.add_argument("--json", type=Path, default=None, help="write the full report here")
    a = p.parse_args()
    opts = ScaleOptions(
        instances=a.instances,
        minutes=a.minutes,
        heartbeat_every_s=a.heartbeat_every,
        publish_every_s=a.publish_every,
        port=a.port,
        keep=a.keep,
    )
    report = run_scale(opts, log=lambda m: print(m, file=sys.stderr, flush=True))
    if a.json:
        a.json.write_text(json.dumps(report, indent=2, default=str))
    pub, ing = report.get("publish", {}), report.get("ingest", {})
    print(
        f"instances: {pub.get('instances')}, published {pub.get('messages')} messages in {pub.get('seconds')} s "
        f"({pub.get('msgs_per_s')} msg/s); drained {ing.get('drained_after_publish_s')} s after publishing stopped"
    )
    print(
        f"ingest: {ing.get('ingest_runs')} runs; latency {ing.get('latency')}; max lag {ing.get('max_oldest_age_s')}"
    )
    print(
        f"accounting: {report.get('accounting', {}).get('published')} published = "
        f"{report.get('accounting', {}).get('stored')} stored + "
        f"{report.get('accounting', {}).get('dead_lettered_valid')} dead-lettered"
    )
    fan = report.get("fanout", {})
    print(
        f"fan-out: {fan.get('skipped') or fan.get('inboxes', {}).get('summary')} "
        f"(distribution run {fan.get('distribution_run')}, {fan.get('triggered_by')})"
    )
    base, scale = report.get("statistics_baseline", {}), report.get("statistics_at_scale", {})
    print(f"queue_statistics: baseline {base}; with the fleet {scale}")
    if base.get("asset_elapsed_s") and scale.get("asset_elapsed_s"):
        print(
            f"ratio (statistics with {pub.get('instances')} inboxes / baseline): "
            f"{scale['asset_elapsed_s'] / max(1e-9, base['asset_elapsed_s']):.1f}x measured, "
            f"run {scale.get('run_s')} s vs {base.get('run_s')} s"
        )
    print("PASSED" if report["passed"] else "FAILED: " + "; ".join(report["problems"]))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
