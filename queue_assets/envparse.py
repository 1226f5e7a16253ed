"""The one environment-parsing helper: read variables, parse each, collect every problem.

`settings.Settings.from_env` (the hub's `SHARED_QUEUE_*` / `QUEUE_ASSETS_*`) and
`export.settings.ExportSettings.from_env` (`QUEUE_ASSETS_EXPORT_*`) both read through `EnvReader`,
so a bad value is reported the same way everywhere: the variable, the value as it may be shown
(a password never, a URL redacted) and the reason. No Dagster, no database.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TypeVar

from .redact import redact

T = TypeVar("T")


class EnvReader:
    """Reads variables from `env`; a bad value is noted in `problems` and its default used, so that
    every bad value is reported together (`SettingsError(reader.problems)`)."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self.problems: list[str] = []

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        """`parse(value)` of `name` (stripped), or `default` when it is unset or blank."""
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except ValueError as exc:
            self.problems.append(f"{name}={shown_value(name, raw)}: {exc}")
            return default


def shown_value(name: str, raw: str) -> str:
    """`raw`, the value of variable `name`, as an error may show it: a password never, a URL with
    its credentials replaced by `***`, anything else cut to 80 characters."""
    if "PASSWORD" in name or "TOKEN" in name:
        return "***"
    if name.endswith("_URL"):
        return repr(redact(raw)[:120])
    return repr(raw[:80])


def parse_bool(raw: str) -> bool:
    low = raw.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("expected a whole number") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return parse


def float_range(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("expected a number") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise ValueError(f"must be a number between {lo:g} and {hi:g}")
        return value

    return parse


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.lower()
        if value not in allowed:
            raise ValueError(f"expected one of: {', '.join(allowed)}")
        return value

    return parse
