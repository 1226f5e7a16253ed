"""The blocking checks of `aggregated_patterns`: a bad ranking never becomes the live one.

`core.aggregate` evaluates them on the staged ranking, inside its transaction, and swaps the
ranking into `hub.aggregated_patterns` only when both pass; the asset reports them as its own
check results (`check_specs`, so they run in the asset's step). A failed blocking check also stops
`pattern_distribution`: in a run that selects both it is skipped, and its automation condition
requires its dependencies' blocking checks to pass.
"""

from __future__ import annotations

import dagster as dg

from . import core

KEYS_CHECK = "aggregated_patterns_keys_are_unique_and_ranked"
VALUES_CHECK = "aggregated_patterns_values_are_in_range"

AGGREGATION_CHECK_SPECS = [
    dg.AssetCheckSpec(
        KEYS_CHECK,
        asset="aggregated_patterns",
        blocking=True,
        description="One row per (pattern_type, name), known pattern kinds, ranks exactly 1..n from one run, "
        "and the run's snapshot matches the ranking. Evaluated on the staged ranking before it is published.",
    ),
    dg.AssetCheckSpec(
        VALUES_CHECK,
        asset="aggregated_patterns",
        blocking=True,
        description="Confidence in [0, 1]; score within [instance_count, instance_count + 0.9]; "
        "observation_count >= instance_count >= 1; first_seen <= last_seen. Evaluated on the staged "
        "ranking before it is published.",
    ),
]


def _result(name: str, problems: list[str], ok: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description=("; ".join(problems))[:2000] if problems else ok,
        metadata={"problems": dg.MetadataValue.int(len(problems))},
    )


def check_results(result: core.AggregationResult) -> list[dg.AssetCheckResult]:
    return [
        _result(KEYS_CHECK, result.key_problems, "unique keys, ranks 1..n, snapshot consistent"),
        _result(VALUES_CHECK, result.value_problems, "all values in range"),
    ]
