"""How a sensor waits after failed runs of its job: the ingest sensors and the enrichment sensor.

A run that fails every time (a migration missing on a replica, a wrong OPENAI_API_KEY) must not
make its sensor request a new run on every tick, forever. After `n` consecutive failed runs the
sensor waits `base_s` × 2^(n−1), at most `cap_s`, counted from the newest failed run's end
(`QUEUE_ASSETS_INGEST_BACKOFF_BASE_S` / `_CAP_S`, 10 s and 600 s). The failures are read from the
instance's run records (the newest few finished runs of the job), so a successful run - once the
cause is gone - ends the backoff by itself.
"""

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg

FINISHED_STATUSES = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]


@dataclass(frozen=True)
class RunBackoff:
    """Why a sensor waits: the newest finished runs of its job failed `failures` times in a row."""

    kind: str
    """What the runs do, for the reason: "ingest", "enrichment"."""
    scope: str | None
    """What they do it on (an ingest run's queue), or None."""
    failures: int
    last_run_id: str
    last_failed_at: float
    delay_s: float
    cap_s: float

    @property
    def next_attempt_at(self) -> float:
        return self.last_failed_at + self.delay_s

    def reason(self) -> str:
        def at(ts: float) -> str:
            return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")

        runs = f"{self.kind} run{'s' if self.failures != 1 else ''}" + (
            f" of `{self.scope}`" if self.scope else ""
        )
        return (
            f"the last {self.failures} {runs} failed (newest {self.last_run_id[:8]}, ended "
            f"{at(self.last_failed_at)}); backing off {self.delay_s:.0f}s (doubling per failure, cap "
            f"{self.cap_s:.0f}s): next attempt at {at(self.next_attempt_at)}. See the failed run's logs for the cause."
        )


def backoff_delay(failures: int, base_s: float, cap_s: float) -> float:
    """`base_s` after one failure, doubled per further failure, never more than `cap_s`."""
    return min(cap_s, base_s * 2 ** min(failures - 1, 62))


def failures_to_reach_cap(base_s: float, cap_s: float) -> int:
    """How many finished runs to look at: counting further cannot lengthen the delay."""
    return max(1, math.ceil(math.log2(max(cap_s / base_s, 1.0))) + 1)


def run_backoff(
    instance: dg.DagsterInstance,
    job_name: str,
    base_s: float,
    cap_s: float,
    *,
    kind: str,
    scope: str | None = None,
) -> RunBackoff | None:
    """The backoff of `job_name` from its newest finished runs (newest first), or None after a success."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=job_name, statuses=FINISHED_STATUSES),
        limit=failures_to_reach_cap(base_s, cap_s),
    )
    failures = 0
    for record in records:
        if record.dagster_run.status != dg.DagsterRunStatus.FAILURE:
            break
        failures += 1
    if not failures:
        return None
    newest = records[0]
    ended = newest.end_time or newest.update_timestamp.timestamp()
    return RunBackoff(
        kind,
        scope,
        failures,
        newest.dagster_run.run_id,
        ended,
        backoff_delay(failures, base_s, cap_s),
        cap_s,
    )
