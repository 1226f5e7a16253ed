"""Settings of the learned-pattern export, from `QUEUE_ASSETS_EXPORT_*`, validated together.

Every bad value is reported with the variable's name and the reason (`SettingsError`, as for the
hub's other settings). Read when the code location loads, so a typo fails at start, not at 01:00.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from ..envparse import EnvReader
from ..envparse import float_range as _float_range
from ..envparse import int_range as _int_range
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
        get = (reader := EnvReader(env)).get
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
        if reader.problems:
            raise SettingsError(reader.problems)
        return settings


def export_start_date(env: Mapping[str, str] | None = None, *, today: date | None = None) -> date:
    """The first cycle (partition) of the export, `QUEUE_ASSETS_EXPORT_START_DATE` (YYYY-MM-DD, UTC).

    Read when the definitions load, since a partitions definition is fixed then. It must not be after
    today (UTC): a start in the future leaves the export with no partition to run.
    """
    env = os.environ if env is None else env
    today = today or datetime.now(UTC).date()

    def parse(raw: str) -> date:
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
                raise ValueError
            start = date.fromisoformat(raw)
        except ValueError:
            raise ValueError("expected a date as YYYY-MM-DD") from None
        if start > today:
            raise ValueError(
                f"must not be after today ({today.isoformat()}, UTC); the export would have no cycle to run"
            )
        return start

    start = (reader := EnvReader(env)).get(START_DATE_VAR, parse, DEFAULT_START_DATE)
    if reader.problems:
        raise SettingsError(reader.problems)
    return start


def _branch(raw: str) -> str:
    if not _BRANCH_RE.match(raw) or raw.endswith(".lock"):
        raise ValueError("not a valid branch name (letters, digits, '.', '_', '-', '/')")
    return raw
