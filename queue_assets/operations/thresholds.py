"""Alert thresholds per queue, with defaults by kind of queue and overrides from JSON.

Overrides come from the environment variable `QUEUE_ASSETS_QUEUE_THRESHOLDS` or from the
`queue_statistics` run config field `thresholds_json` (which wins), both a JSON object mapping a
queue name, a glob (`inbox_*`) or a kind (`kind:inbox`) to the fields to change:

    {"pattern_messages": {"max_depth": 50000, "max_oldest_age_s": 600},
     "inbox_*": {"max_oldest_age_s": 86400},
     "llm_requests": {"reply_timeout_s": 300, "severity": "ERROR"}}

`null` switches a limit off. Precedence: exact name, then globs (longest first), then `kind:`,
then the built-in defaults below. Pure Python: no Dagster, no database.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from ..queues import REPLY_QUEUE_FOR, TEMPLATE_UPDATES
from .inventory import KINDS, queue_kind

ENV_VAR = "QUEUE_ASSETS_QUEUE_THRESHOLDS"
SEVERITIES = ("WARN", "ERROR")


class ThresholdError(ValueError):
    """A thresholds override that cannot be used; the message names the key, the value and why."""


@dataclass(frozen=True)
class Threshold:
    max_depth: int | None = 10_000
    """Alert when more messages than this wait in the queue."""
    max_oldest_age_s: float | None = 3600.0
    """Alert when the oldest waiting message is older than this."""
    max_dlq_depth: int | None = 0
    """Alert when the queue's dead-letter queue holds more than this."""
    reply_timeout_s: float | None = None
    """Request queues: a request without a reply after this long is unanswered."""
    severity: str = "WARN"
    """Severity of a depth/age/unanswered alert for this queue."""
    dlq_severity: str = "ERROR"
    """Severity of a non-empty dead-letter queue: someone has to look at it."""


# Defaults by kind. Consumed hub queues are drained within seconds by the ingest sensors, so a
# 15-minute-old message means ingest has stopped. Inboxes are read by instances that may be offline
# for a while. Dead-letter queues alert through `max_dlq_depth` of their source queue.
KIND_DEFAULTS: dict[str, Threshold] = {
    "hub": Threshold(max_depth=10_000, max_oldest_age_s=900.0),
    "request_reply": Threshold(max_depth=1_000, max_oldest_age_s=900.0),
    "inbox": Threshold(max_depth=10_000, max_oldest_age_s=7 * 86_400.0),
    "dlq": Threshold(max_depth=None, max_oldest_age_s=None, max_dlq_depth=None),
    "other": Threshold(),
}
# Per-queue defaults. template_updates is an audit trail nobody has to drain; replies to humans
# (approvals, questions) take longer than machine replies.
QUEUE_DEFAULTS: dict[str, dict] = {
    TEMPLATE_UPDATES: {"max_depth": 100_000, "max_oldest_age_s": None},
    "llm_requests": {"reply_timeout_s": 900.0},
    "job_requests": {"reply_timeout_s": 3600.0},
    "approval_requests": {"reply_timeout_s": 86_400.0},
    "question_requests": {"reply_timeout_s": 86_400.0},
}
assert set(QUEUE_DEFAULTS) >= set(REPLY_QUEUE_FOR)

_FIELDS = {f.name: f for f in fields(Threshold)}


def _check_fields(key: str, values: object) -> dict:
    if not isinstance(values, Mapping):
        raise ThresholdError(f"thresholds[{key!r}] = {str(values)[:80]!r}: expected an object of limits")
    out = {}
    for name, value in values.items():
        if name not in _FIELDS:
            raise ThresholdError(
                f"thresholds[{key!r}] has unknown field {name!r}; known fields: {', '.join(sorted(_FIELDS))}"
            )
        if name in ("severity", "dlq_severity"):
            if value not in SEVERITIES:
                raise ThresholdError(
                    f"thresholds[{key!r}].{name} = {value!r}: expected one of {', '.join(SEVERITIES)}"
                )
        elif value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value < 0
        ):
            raise ThresholdError(
                f"thresholds[{key!r}].{name} = {value!r}: expected a number >= 0, or null for no limit"
            )
        out[name] = value
    return out


def parse_overrides(text: str | None, *, source: str = ENV_VAR) -> dict[str, dict]:
    """The overrides in `text` (JSON), checked; an empty or missing text means none."""
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ThresholdError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ThresholdError(f"{source}: expected a JSON object mapping queue names or patterns to limits")
    out = {}
    for key, values in data.items():
        if key.startswith("kind:") and key[5:] not in KINDS:
            raise ThresholdError(f"{source}: key {key!r} names no kind of queue; kinds: {', '.join(KINDS)}")
        out[key] = _check_fields(key, values)
    return out


@dataclass(frozen=True)
class Thresholds:
    """Resolves the threshold of any queue from the defaults and the overrides."""

    overrides: Mapping[str, dict]

    @classmethod
    def load(cls, run_config_json: str | None = None, *, env_json: str | None = None) -> Thresholds:
        """The defaults with `env_json` (the `QUEUE_ASSETS_QUEUE_THRESHOLDS` setting,
        `Settings.queue_thresholds`) merged over them, then `run_config_json` over that."""
        merged = dict(parse_overrides(env_json, source=ENV_VAR))
        for key, values in parse_overrides(run_config_json, source="thresholds_json").items():
            merged[key] = {**merged.get(key, {}), **values}
        return cls(merged)

    def for_queue(self, queue: str) -> Threshold:
        kind = queue_kind(queue)
        result = replace(KIND_DEFAULTS[kind], **QUEUE_DEFAULTS.get(queue, {}))
        layers = [self.overrides.get(f"kind:{kind}")]
        globs = sorted(
            (k for k in self.overrides if any(c in k for c in "*?[") and not k.startswith("kind:")), key=len
        )
        layers += [self.overrides[g] for g in globs if fnmatch.fnmatchcase(queue, g)]
        layers.append(self.overrides.get(queue))
        for layer in layers:
            if layer:
                result = replace(result, **layer)
        return result
