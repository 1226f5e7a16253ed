"""Settings of the learned-pattern export, from `QUEUE_ASSETS_EXPORT_*`, validated together.

Every bad value is reported with the variable's name and the reason (`SettingsError`, as for the
hub's other settings). Read when the code location loads, so a typo fails at start, not at 01:00.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from ..settings import SettingsError

EXPORT_FOLDER = "learned_patterns"
BRANCH_PREFIX = "feature/learned-patterns-"
START_DATE_VAR = "QUEUE_ASSETS_EXPORT_START_DATE"
DEFAULT_START_DATE = date(2026, 11, 1)
"""The first daily cycle of the export: a hub installed today should not show a year of missing partitions."""
_BRANCH_RE = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/\-]{1,200}(?<![./])$")


@dataclass(frozen=True)
class ExportSettings:
    min_usage: int = 10
    """An artifact is exported when its total usage across the fleet reaches this..."""
    min_success_rate: float = 0.8
    """...its usage-weighted success rate reaches this..."""
    min_instances: int = 1
    """...and at least this many instances reported it."""
    max_growth_factor: float = 10.0
    """The export is blocked when it holds more than this many times the previous export's artifacts."""
    base_branch: str = "main"
    """The branch each cycle's branch starts from and its pull request targets."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ExportSettings:
        env = os.environ if env is None else env
        problems: list[str] = []

        def get(name: str, parse: Callable[[str], object], default: object) -> object:
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                return default
            try:
                return parse(raw.strip())
            except ValueError as exc:
                problems.append(f"{name}={raw[:80]!r}: {exc}")
                return default

        settings = cls(
            min_usage=get("QUEUE_ASSETS_EXPORT_MIN_USAGE", _int_range(0, 10**15), cls.min_usage),
            min_success_rate=get(
                "QUEUE_ASSETS_EXPORT_MIN_SUCCESS_RATE", _float_range(0.0, 1.0), cls.min_success_rate
            ),
            min_instances=get(
                "QUEUE_ASSETS_EXPORT_MIN_INSTANCES", _int_range(1, 1_000_000), cls.min_instances
            ),
            max_growth_factor=get(
                "QUEUE_ASSETS_EXPORT_MAX_GROWTH", _float_range(1.0, 1e6), cls.max_growth_factor
            ),
            base_branch=get("QUEUE_ASSETS_EXPORT_BASE_BRANCH", _branch, cls.base_branch),
        )
        if problems:
            raise SettingsError(problems)
        return settings


def export_start_date(env: Mapping[str, str] | None = None, *, today: date | None = None) -> date:
    """The first cycle (partition) of the export, `QUEUE_ASSETS_EXPORT_START_DATE` (YYYY-MM-DD, UTC).

    Read when the definitions load, since a partitions definition is fixed then. It must not be after
    today (UTC): a start in the future leaves the export with no partition to run.
    """
    env = os.environ if env is None else env
    raw = (env.get(START_DATE_VAR) or "").strip()
    if not raw:
        return DEFAULT_START_DATE
    today = today or datetime.now(UTC).date()
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            raise ValueError
        start = date.fromisoformat(raw)
    except ValueError:
        raise SettingsError([f"{START_DATE_VAR}={raw[:80]!r}: expected a date as YYYY-MM-DD"]) from None
    if start > today:
        raise SettingsError(
            [
                f"{START_DATE_VAR}={raw!r}: must not be after today ({today.isoformat()}, UTC); "
                "the export would have no cycle to run"
            ]
        )
    return start


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("expected a whole number") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return parse


def _float_range(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("expected a number") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise ValueError(f"must be a number between {lo:g} and {hi:g}")
        return value

    return parse


def _branch(raw: str) -> str:
    if not _BRANCH_RE.match(raw) or raw.endswith(".lock"):
        raise ValueError("not a valid branch name (letters, digits, '.', '_', '-', '/')")
    return raw
