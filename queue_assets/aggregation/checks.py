"""Blocking checks on `aggregated_patterns`: a bad ranking must not be distributed.

A failed blocking check stops `pattern_distribution` (its automation condition requires its
dependencies' blocking checks to pass, and in a run that selects both it is skipped).
"""

from __future__ import annotations

import dagster as dg

from ..contracts import PATTERN_TYPES
from ..resources import SharedQueueResource
from . import core
from .assets import aggregated_patterns


def _result(problems: list[str], ok: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description=("; ".join(problems))[:2000] if problems else ok,
        metadata={"problems": dg.MetadataValue.int(len(problems))},
    )


@dg.asset_check(
    asset=aggregated_patterns,
    blocking=True,
    description="One row per (pattern_type, name), known pattern kinds, ranks exactly 1..n from one run, "
    "and the run's snapshot matches the ranking.",
)
def aggregated_patterns_keys_are_unique_and_ranked(shared_queue: SharedQueueResource) -> dg.AssetCheckResult:
    with shared_queue.connection() as conn:
        problems = core.check_keys(conn, PATTERN_TYPES)
    return _result(problems, "unique keys, ranks 1..n, snapshot consistent")


@dg.asset_check(
    asset=aggregated_patterns,
    blocking=True,
    description="Confidence in [0, 1]; score within [instance_count, instance_count + 0.9]; "
    "observation_count >= instance_count >= 1; first_seen <= last_seen.",
)
def aggregated_patterns_values_are_in_range(shared_queue: SharedQueueResource) -> dg.AssetCheckResult:
    with shared_queue.connection() as conn:
        problems = core.check_values(conn)
    return _result(problems, "all values in range")


AGGREGATION_CHECKS = [aggregated_patterns_keys_are_unique_and_ranked, aggregated_patterns_values_are_in_range]
