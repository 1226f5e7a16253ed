"""`ContractError` and the translation of pydantic errors into dead-letter reasons.

A `ContractError` carries a short machine code (`kind`) and a human-readable `reason` that goes
with the message into the dead-letter queue. Reasons name the message type, the field path, the
offending value (truncated) and what was expected, e.g.

    pattern_detection: patterns[0].confidence = 1.7: must be a number between 0 and 1
    unknown type 'foo'; expected one of: aggregated_learning, ...
    message is a JSON array, expected an object (got [1, 2, 3])
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from .base import BAD_CHARS, char_kind

#: Every `ContractError.kind`, with what it means.
ERROR_KINDS: dict[str, str] = {
    "too_large": "the raw message is over the size limit",
    "too_deep": "arrays/objects nest deeper than the limit",
    "invalid_json": "the text is not JSON",
    "not_object": "the JSON value is not an object",
    "missing_type": "the object has no `type`",
    "unknown_type": "`type` is not a contract type",
    "wrong_queue": "`type` is a contract type that does not belong on this queue",
    "invalid_fields": "fields are missing or have the wrong type or range",
    "non_finite": "a number is NaN or +-Infinity (including numbers that overflow a float)",
    "bad_timestamp": "the timestamp is missing, not ISO-8601 or absurd",
    "bad_instance_id": "the instance id is missing or not a safe id",
    "bad_text": "a string holds control, bidi override/isolate characters or NUL",
    "unknown_request": "a reply on hub_llm_results or hub_approval_responses names a request id the hub never "
    "sent (or another pattern than that request's)",
    "already_decided": "an approval_response for a pattern a person already approved or rejected",
    "bad_result": "an llm_result's result (or error) is not a valid enrichment",
}

VALUE_CHARS = 80

_repr = reprlib.Repr()
_repr.maxstring = VALUE_CHARS
_repr.maxother = VALUE_CHARS
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6
_repr.maxlevel = 3

# What a field is expected to hold, used for range/type errors instead of pydantic's wording.
_FIELD_EXPECTATIONS = {
    "confidence": "must be a number between 0 and 1",
    "success_rate": "must be a number between 0 and 1",
    "usage_count": "must be an integer >= 0",
    "artifacts_count": "must be an integer >= 0",
    "frequency": "must be an integer >= 0",
    "instance_count": "must be an integer >= 0",
    "rank": "must be an integer >= 0",
}
_RANGE_AND_TYPE_ERRORS = frozenset(
    {
        "less_than_equal",
        "greater_than_equal",
        "less_than",
        "greater_than",
        "float_type",
        "int_type",
        "int_from_float",
        "finite_number",
    }
)
_CUSTOM_KINDS = frozenset({"bad_text", "bad_timestamp", "bad_instance_id"})
_NOT_OBJECT_ERRORS = frozenset({"dict_type", "model_type", "model_attributes_type"})
_ROOT_ERRORS = _NOT_OBJECT_ERRORS | {"union_tag_not_found", "union_tag_invalid"}


class ContractError(ValueError):
    """A message that does not satisfy its contract.

    `str(err)` and `err.reason` are the human-readable reason (for the dead-letter queue);
    `err.kind` is a short machine code (see `ERROR_KINDS`); `err.message_type` is the message's
    `type` when it could be determined.
    """

    def __init__(self, kind: str, reason: str, *, message_type: str | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.message_type = message_type

    def __str__(self) -> str:
        return self.reason

    def __reduce__(self) -> Any:  # keep kind and reason across pickling (e.g. between processes)
        return (_rebuild_contract_error, (self.kind, self.reason, self.message_type))

    def __repr__(self) -> str:
        return f"ContractError(kind={self.kind!r}, reason={self.reason!r})"


def _rebuild_contract_error(kind: str, reason: str, message_type: str | None) -> ContractError:
    return ContractError(kind, reason, message_type=message_type)


def format_value(value: Any) -> str:
    """A short printable rendering of an offending value (control/bidi characters escaped)."""
    text = _repr.repr(value)
    if len(text) > VALUE_CHARS:
        text = text[: VALUE_CHARS - 3] + "..."
    return text


def format_path(loc: Iterable[int | str]) -> str:
    """`('patterns', 0, 'confidence')` -> `patterns[0].confidence`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def json_kind(value: Any) -> str:
    """The JSON name of a decoded value's type."""
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def format_json(value: Any) -> str:
    """Like `format_value`, in JSON notation (`null`, `true`, `"text"`)."""
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        return format_value(value)
    if len(text) > VALUE_CHARS:
        text = text[: VALUE_CHARS - 3] + "..."
    return text


def not_object_error(value: Any) -> ContractError:
    return ContractError(
        "not_object", f"message is a JSON {json_kind(value)}, expected an object (got {format_json(value)})"
    )


def missing_type_error(message: Mapping[str, Any], known: Collection[str]) -> ContractError:
    what = "a null 'type'" if "type" in message else "no 'type' field"
    return ContractError("missing_type", f"message has {what}; expected one of: {', '.join(sorted(known))}")


def _where_type_goes(type_name: str, type_queues: Mapping[str, str]) -> str:
    queue = type_queues.get(type_name)
    return f"'{queue}'" if queue else "another queue"


def type_error(
    value: Any,
    known: Collection[str],
    *,
    queue: str | None = None,
    all_types: Collection[str] = (),
    type_queues: Mapping[str, str] | None = None,
) -> ContractError:
    """A `type` that is not accepted here: unknown, or (for a queue) a known type on the wrong queue."""
    expected = ", ".join(sorted(known))
    if queue is not None and isinstance(value, str) and value in all_types and value not in known:
        where = _where_type_goes(value, type_queues or {})
        return ContractError(
            "wrong_queue",
            f"type '{value}' does not belong on queue '{queue}' (it goes to {where}); "
            f"queue '{queue}' accepts: {expected}",
            message_type=value,
        )
    return ContractError("unknown_type", f"unknown type {format_value(value)}; expected one of: {expected}")


def _is_non_finite_text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return not math.isfinite(float(value))
    except ValueError:
        return False


def _pydantic_expectation(err: Mapping[str, Any]) -> str:
    msg = err["msg"]
    if msg.startswith("Input should "):
        return "must " + msg[len("Input should ") :]
    return (msg[0].lower() + msg[1:]) if msg else err["type"]


def _describe(err: Mapping[str, Any], loc: tuple[Any, ...]) -> tuple[str, str]:
    """(kind, text) for one pydantic error at field path `loc`."""
    etype = err["type"]
    path = format_path(loc) or "message"
    field = next((p for p in reversed(loc) if isinstance(p, str)), "")
    value = err.get("input")
    if etype == "missing":
        kind = "bad_timestamp" if field == "timestamp" else "invalid_fields"
        return kind, f"{path}: required field is missing"
    if etype in _CUSTOM_KINDS:
        kind = etype
        expectation = err["msg"]
    elif etype == "finite_number" or (etype == "float_type" and _is_non_finite_text(value)):
        kind = "non_finite"
        expectation = "NaN and Infinity are not allowed (numbers beyond +-1.8e308 overflow to Infinity)"
        if field in _FIELD_EXPECTATIONS:
            expectation += f"; {_FIELD_EXPECTATIONS[field]}"
    elif isinstance(value, str) and BAD_CHARS.search(value):
        # e.g. a pattern_type with a control character: name the character, not just the mismatch
        char = BAD_CHARS.search(value).group()  # type: ignore[union-attr]
        kind = "bad_text"
        expectation = f"contains U+{ord(char):04X} ({char_kind(char)}); {_pydantic_expectation(err)}"
    else:
        kind = "invalid_fields"
        if etype in _RANGE_AND_TYPE_ERRORS and field in _FIELD_EXPECTATIONS:
            expectation = _FIELD_EXPECTATIONS[field]
        else:
            expectation = _pydantic_expectation(err)
    if not loc:
        return kind, expectation  # a model-level check: there is no single offending value
    return kind, f"{path} = {format_value(value)}: {expectation}"


MAX_LISTED_ERRORS = 3


def from_validation_error(
    exc: ValidationError,
    *,
    tagged: bool,
    type_name: str | None,
    known: Collection[str],
    queue: str | None = None,
    all_types: Collection[str] = (),
    type_queues: Mapping[str, str] | None = None,
) -> ContractError:
    """Translate a pydantic `ValidationError` into a `ContractError`.

    `tagged`: the error locations start with the union tag (a discriminated union was validated);
    otherwise `type_name` names the single model validated. `known` are the types accepted here.
    """
    errors = exc.errors(include_url=False)

    def wrong_type(value: Any) -> ContractError:
        return type_error(value, known, queue=queue, all_types=all_types, type_queues=type_queues)

    for err in errors:
        loc = err["loc"]
        etype = err["type"]
        if etype == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", err["msg"])
            return ContractError(
                "invalid_json", f"message is not valid JSON ({detail}): {format_value(err.get('input'))}"
            )
        if not loc and etype == "string_unicode":  # a Python str holding a lone surrogate
            return ContractError(
                "invalid_json", "message text cannot be encoded as UTF-8 (it holds a lone surrogate)"
            )
        if not loc and etype in _ROOT_ERRORS:
            value = err.get("input")
            if etype in _NOT_OBJECT_ERRORS or not isinstance(value, dict):
                return not_object_error(value)
            if etype == "union_tag_not_found" or value.get("type") is None:
                return missing_type_error(value, known)
            if etype == "union_tag_invalid":
                return wrong_type(value.get("type"))
        if not tagged and loc == ("type",):
            if etype == "missing" or err.get("input") is None:
                return missing_type_error({"type": None} if etype != "missing" else {}, known)
            return wrong_type(err.get("input"))

    described = []
    message_type = type_name
    for err in errors:
        loc = tuple(err["loc"])
        if tagged and loc:
            message_type, loc = str(loc[0]), loc[1:]
        described.append(_describe(err, loc))
    kind = described[0][0]
    texts = [text for _, text in described[:MAX_LISTED_ERRORS]]
    if len(described) > MAX_LISTED_ERRORS:
        texts.append(f"and {len(described) - MAX_LISTED_ERRORS} more error(s)")
    prefix = f"{message_type}: " if message_type else ""
    return ContractError(kind, prefix + "; ".join(texts), message_type=message_type)
