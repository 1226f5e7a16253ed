"""Blocking checks on `aggregated_learning`: a bad snapshot must never reach the export.

The checks are evaluated inside the asset's run (its `check_specs`), right after the snapshot is
written; a failure with ERROR severity stops `learned_pattern_export` from running, so nothing is
committed or pushed. The queries live in `learning.py`; this module only names and converts them.
"""

from __future__ import annotations

from datetime import date

import dagster as dg
import psycopg

from . import learning

LEARNING_CHECKS: dict[str, str] = {
    "success_rates_in_unit_interval": "Every usage-weighted success rate is a number in [0, 1].",
    "unique_export_keys": "No artifact id appears twice, and no two exported artifacts share a file name "
    "(compared without case, as on case-insensitive file systems).",
    "export_not_empty": "At least one artifact passed the thresholds: an empty export is never pushed.",
    "export_growth_within_limit": "The export holds at most QUEUE_ASSETS_EXPORT_MAX_GROWTH times the "
    "artifacts of the previous exported cycle.",
}


def learning_check_specs(asset: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(name, asset=asset, description=text, blocking=True)
        for name, text in LEARNING_CHECKS.items()
    ]


def _result(name: str, outcome: learning.CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=outcome.description[:2000],
        metadata=outcome.metadata,
    )


def evaluate_learning_checks(
    conn: psycopg.Connection,
    cycle: date,
    selected: int,
    max_growth_factor: float,
) -> list[dg.AssetCheckResult]:
    return [
        _result("success_rates_in_unit_interval", learning.check_success_rates(conn, cycle)),
        _result("unique_export_keys", learning.check_unique_keys(conn, cycle)),
        _result("export_not_empty", learning.check_not_empty(selected)),
        _result(
            "export_growth_within_limit",
            learning.check_growth(selected, learning.previous_export(conn, cycle), max_growth_factor),
        ),
    ]
