"""The discriminated union over every message type, and the parsing entry points.

`parse_ingest` is the ingest hot path: it validates the raw text (str or bytes, straight from
pgmq's `msg::text`) with one pre-built pydantic `TypeAdapter` per queue, in this order:

1. size: the raw UTF-8 byte length against `max_bytes` (before any parsing);
2. depth: a scan of brackets outside strings against `max_depth` (never a RecursionError);
3. JSON, object, `type` (and for `parse_ingest`/`parse_for_queue`: the type belongs on the queue);
4. fields (typed numbers must be finite; NaN/Infinity also as strings); then, only when the text
   contains something that could be one (`NaN`, `Infinity`, a 3-digit exponent, a 309-digit
   number, `\\u0000`), an exact scan for non-finite numbers and NUL characters anywhere, including
   the free-form parts (analysis, content, examples, extra fields).

Every failure is a `ContractError` with a `kind` and a reason for the dead-letter queue.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from itertools import accumulate
from typing import Annotated, Any, Union, get_args

from pydantic import BaseModel, Discriminator, Field, Tag, TypeAdapter, ValidationError

from .base import MAX_BYTES, MAX_DEPTH
from .errors import ContractError, format_path, format_value, from_validation_error, type_error
from .hub import (
    HUB_MODELS,
    AggregatedLearning,
    AggregatedPatterns,
    LearningExported,
    PatternLearned,
    PatternsUpdated,
    TemplatesUpdated,
)
from .ingest import (
    INGEST_MODELS,
    INGEST_QUEUE_OF_TYPE,
    CodeAnalysis,
    Heartbeat,
    LearnedArtifacts,
    LearnedPatterns,
    PatternDetection,
)
from .requests import (
    QUEUE_MODELS,
    SERVICE_MODELS,
    ApprovalRequest,
    ApprovalResponse,
    JobRequest,
    JobResult,
    LlmRequest,
    LlmResult,
    QuestionRequest,
    QuestionResponse,
)


def _model_types(model: type[BaseModel]) -> tuple[str, ...]:
    """The `type` value(s) a model stands for."""
    service_type = getattr(model, "TYPE", None)
    if service_type:
        return (service_type,)
    literal = get_args(model.model_fields["type"].annotation)
    if not literal:
        raise TypeError(f"{model.__name__}.type must be a Literal of its type value(s)")
    return literal


#: type -> model, for every message type.
_ALL_MODELS: tuple[type[BaseModel], ...] = (*INGEST_MODELS, *HUB_MODELS, *SERVICE_MODELS)
MODEL_OF_TYPE: dict[str, type[BaseModel]] = {t: model for model in _ALL_MODELS for t in _model_types(model)}
ALL_TYPES: frozenset[str] = frozenset(MODEL_OF_TYPE)
INGEST_MESSAGE_TYPES: frozenset[str] = frozenset(t for m in INGEST_MODELS for t in _model_types(m))
HUB_MESSAGE_TYPES: frozenset[str] = frozenset(t for m in HUB_MODELS for t in _model_types(m))
SERVICE_MESSAGE_TYPES: frozenset[str] = frozenset(t for m in SERVICE_MODELS for t in _model_types(m))

#: ingest queue -> the `type`s it accepts.
INGEST_TYPES: dict[str, frozenset[str]] = {
    "pattern_messages": frozenset({"pattern_detection", "code_analysis"}),
    "learned_patterns": frozenset({"learned_patterns", "learned_artifacts"}),
    "instance_heartbeat": frozenset({"heartbeat"}),
}

#: Where each type travels (used in wrong-queue reasons and the docs).
QUEUE_OF_TYPE: dict[str, str] = {
    **INGEST_QUEUE_OF_TYPE,
    **{t: "inbox_<instance_id>" for t in HUB_MESSAGE_TYPES},
    "templates_updated": "template_updates and inbox_<instance_id>",
    **{model.TYPE: queue for queue, model in QUEUE_MODELS.items()},  # type: ignore[attr-defined]
}


def _type_of(value: Any) -> Any:
    if isinstance(value, dict):
        return value.get("type")
    return getattr(value, "type", None)


IngestMessage = Annotated[
    Union[PatternDetection, CodeAnalysis, LearnedPatterns, LearnedArtifacts, Heartbeat],  # noqa: UP007
    Field(discriminator="type"),
]
"""An instance -> hub message."""

HubToInstanceMessage = Annotated[
    Union[  # noqa: UP007
        AggregatedPatterns,
        PatternsUpdated,
        TemplatesUpdated,
        LearningExported,
        AggregatedLearning,
        PatternLearned,
    ],
    Field(discriminator="type"),
]
"""A hub -> instance message."""

Message = Annotated[
    Union[  # noqa: UP007
        Annotated[PatternDetection, Tag("pattern_detection")],
        Annotated[CodeAnalysis, Tag("code_analysis")],
        Annotated[LearnedPatterns, Tag("learned_patterns")],
        Annotated[LearnedArtifacts, Tag("learned_artifacts")],
        Annotated[Heartbeat, Tag("heartbeat")],
        Annotated[AggregatedPatterns, Tag("aggregated_patterns")],
        Annotated[PatternsUpdated, Tag("patterns_updated")],
        Annotated[TemplatesUpdated, Tag("templates_updated")],
        Annotated[LearningExported, Tag("learning_exported")],
        Annotated[AggregatedLearning, Tag("aggregated_learning")],
        Annotated[PatternLearned, Tag("pattern_learned")],
        Annotated[LlmRequest, Tag("llm_request")],
        Annotated[LlmResult, Tag("llm_result")],
        Annotated[ApprovalRequest, Tag("approval_request")],
        Annotated[ApprovalResponse, Tag("approval_response")],
        Annotated[QuestionRequest, Tag("question_request")],
        Annotated[QuestionResponse, Tag("question_response")],
        Annotated[JobRequest, Tag("job_request")],
        Annotated[JobResult, Tag("job_result")],
    ],
    Discriminator(_type_of),
]
"""Any message, discriminated on `type` (request/reply messages only when they carry a `type`)."""


class _Parser:
    """A pre-built adapter plus what is needed to explain its failures."""

    def __init__(
        self,
        target: Any,
        known: frozenset[str],
        *,
        tagged: bool,
        type_name: str | None = None,
        queue: str | None = None,
        check_type: Callable[[BaseModel], None] | None = None,
    ) -> None:
        self.validate_json = TypeAdapter(target).validate_json
        self.known = known
        self.tagged = tagged
        self.type_name = type_name
        self.queue = queue
        self.check_type = check_type

    def __call__(self, raw: str | bytes | bytearray, max_bytes: int, max_depth: int) -> Any:
        _check_size(raw, max_bytes)
        _check_depth(raw, max_depth)
        try:
            message = self.validate_json(raw)
        except ValidationError as exc:
            raise from_validation_error(
                exc,
                tagged=self.tagged,
                type_name=self.type_name,
                known=self.known,
                queue=self.queue,
                all_types=ALL_TYPES,
                type_queues=QUEUE_OF_TYPE,
            ) from None
        if self.check_type is not None:
            self.check_type(message)
        if _may_hold_non_finite_or_nul(raw):
            _check_free_form(raw, message.type)
        return message


# --- limits ------------------------------------------------------------------------------------


def _check_size(raw: str | bytes | bytearray, max_bytes: int) -> None:
    if isinstance(raw, str):
        size = len(raw)
        if size * 4 <= max_bytes:  # even all-4-byte characters would fit
            return
        size = len(raw.encode("utf-8", "surrogatepass"))
    elif isinstance(raw, (bytes, bytearray)):
        size = len(raw)
    else:
        raise TypeError(f"raw message must be str or bytes, not {type(raw).__name__}")
    if size > max_bytes:
        raise ContractError("too_large", f"message is {size} bytes, over the limit of {max_bytes} bytes")


def json_object(raw: str, max_bytes: int, what: str) -> dict[str, Any]:
    """`raw` as a JSON object, for a reply to one of the hub's own requests (an llm_result, an
    approval response). Raises `ContractError` (too_large, invalid_json, not_object) naming `what`."""
    size = len(raw.encode())
    if size > max_bytes:
        raise ContractError("too_large", f"{what} is {size} bytes, over {max_bytes}")
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ContractError("invalid_json", f"{what} is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ContractError("not_object", f"{what} is not a JSON object")
    return doc


_STRING_STR = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_STRING_BYTES = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NON_BRACKET_STR = re.compile(r"[^\[\]{}]+")
_NON_BRACKET_BYTES = re.compile(rb"[^\[\]{}]+")
_DELTA_STR = {"[": 1, "{": 1, "]": -1, "}": -1}.__getitem__
_DELTA_BYTES = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}.__getitem__


def nesting_depth(raw: str | bytes | bytearray) -> int:
    """How deeply arrays/objects nest in JSON text (brackets inside strings are ignored)."""
    deltas: Iterator[int]
    if isinstance(raw, str):
        deltas = map(_DELTA_STR, _NON_BRACKET_STR.sub("", _STRING_STR.sub("", raw)))
    else:
        deltas = map(_DELTA_BYTES, _NON_BRACKET_BYTES.sub(b"", _STRING_BYTES.sub(b"", raw)))
    return max(accumulate(deltas), default=0)


def _check_depth(raw: str | bytes | bytearray, max_depth: int) -> None:
    if isinstance(raw, str):
        opens = raw.count("{") + raw.count("[")
    else:
        opens = raw.count(b"{") + raw.count(b"[")
    if opens <= max_depth:  # cannot nest deeper than the number of opening brackets
        return
    depth = nesting_depth(raw)
    if depth > max_depth:
        raise ContractError("too_deep", f"message nests {depth} levels deep, over the limit of {max_depth}")


# --- non-finite numbers and NUL in free-form JSON -----------------------------------------------

# A cheap test for anything that could decode to NaN/Infinity (the tokens, a 3+ digit exponent, a
# 309+ digit mantissa) or hold a NUL character, run on every valid message: digits are mapped to
# `0` and `E` to `e`, then a few substring searches. Matches inside strings (e.g. `file1234` or a
# hash) are false alarms that the exact scan settles.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789E", b"000000000e")
_LONG_DIGITS = b"0" * 309


def _may_hold_non_finite_or_nul(raw: str | bytes | bytearray) -> bool:
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if b"NaN" in raw or b"Infinity" in raw or b"\\u0000" in raw:
        return True
    digits = raw.translate(_DIGITS_TO_ZERO)
    return b"e000" in digits or b"e+000" in digits or _LONG_DIGITS in digits


class _NonFinite:
    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token


def _parse_float(token: str) -> float | _NonFinite:
    value = float(token)
    return value if math.isfinite(value) else _NonFinite(token)


def _find_bad(value: Any, loc: list[int | str]) -> tuple[str, list[int | str], Any] | None:
    if isinstance(value, _NonFinite):
        return "non_finite", loc, value.token
    if isinstance(value, str):
        return ("bad_text", loc, value) if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return "bad_text", loc, key
            found = _find_bad(item, [*loc, key])
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_bad(item, [*loc, index])
            if found:
                return found
    return None


def _check_free_form(raw: str | bytes | bytearray, message_type: str) -> None:
    try:
        decoded = json.loads(raw, parse_float=_parse_float, parse_constant=_NonFinite)
    except RecursionError:  # only with a caller-chosen huge max_depth
        raise ContractError("too_deep", "message nests too deeply to scan") from None
    found = _find_bad(decoded, [])
    if found is None:
        return
    kind, loc, value = found
    path = format_path(loc)
    if kind == "non_finite":
        reason = f"{path} = {value}: NaN and Infinity are not allowed (numbers beyond +-1.8e308 overflow to Infinity)"
    else:
        reason = f"{path} = {format_value(value)}: contains U+0000 (NUL), which PostgreSQL cannot store"
    raise ContractError(kind, f"{message_type}: {reason}", message_type=message_type)


# --- the parsers --------------------------------------------------------------------------------


def _service_type_check(model: type[BaseModel], queue: str) -> Callable[[BaseModel], None]:
    own = model.TYPE  # type: ignore[attr-defined]

    def check(message: BaseModel) -> None:
        found = message.type  # type: ignore[attr-defined]
        if found != own and found in ALL_TYPES:
            raise type_error(found, {own}, queue=queue, all_types=ALL_TYPES, type_queues=QUEUE_OF_TYPE)

    return check


_MESSAGE_PARSER = _Parser(Message, ALL_TYPES, tagged=True)
_INGEST_PARSERS: dict[str, _Parser] = {
    "pattern_messages": _Parser(
        Annotated[Union[PatternDetection, CodeAnalysis], Field(discriminator="type")],  # noqa: UP007
        INGEST_TYPES["pattern_messages"],
        tagged=True,
        queue="pattern_messages",
    ),
    "learned_patterns": _Parser(
        Annotated[Union[LearnedPatterns, LearnedArtifacts], Field(discriminator="type")],  # noqa: UP007
        INGEST_TYPES["learned_patterns"],
        tagged=True,
        queue="learned_patterns",
    ),
    "instance_heartbeat": _Parser(
        Heartbeat,
        INGEST_TYPES["instance_heartbeat"],
        tagged=False,
        type_name="heartbeat",
        queue="instance_heartbeat",
    ),
}
_QUEUE_PARSERS: dict[str, _Parser] = {
    **_INGEST_PARSERS,
    **{
        queue: _Parser(
            model,
            frozenset({model.TYPE}),  # type: ignore[attr-defined]
            tagged=False,
            type_name=model.TYPE,  # type: ignore[attr-defined]
            queue=queue,
            check_type=_service_type_check(model, queue),
        )
        for queue, model in QUEUE_MODELS.items()
    },
    "template_updates": _Parser(
        TemplatesUpdated,
        frozenset({"templates_updated"}),
        tagged=False,
        type_name="templates_updated",
        queue="template_updates",
    ),
}
_INBOX_PARSER = _Parser(HubToInstanceMessage, HUB_MESSAGE_TYPES, tagged=True, queue="inbox_<instance_id>")


def parse_message(raw: str | bytes, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Message:
    """Parse any message that carries a `type` (instance -> hub, hub -> instance, request/reply).

    Raises `ContractError` (a `ValueError`) with `kind` and `reason`.
    """
    return _MESSAGE_PARSER(raw, max_bytes, max_depth)


def parse_ingest(
    queue: str, raw: str | bytes, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH
) -> IngestMessage:
    """Parse a message read from an ingest queue (`pattern_messages`, `learned_patterns`,
    `instance_heartbeat`); a valid message of a type that belongs elsewhere is a `wrong_queue` error.

    Raises `ContractError` for a bad message and `ValueError` for a queue that is not an ingest queue.
    """
    parser = _INGEST_PARSERS.get(queue)
    if parser is None:
        raise ValueError(
            f"{queue!r} is not an ingest queue; expected one of: {', '.join(sorted(INGEST_TYPES))}"
        )
    return parser(raw, max_bytes, max_depth)


# One parser per (ingest queue, type): a producer that sets the type itself need not try the union.
_INGEST_TYPE_PARSERS: dict[tuple[str, str], _Parser] = {
    (queue, type_name): _Parser(
        MODEL_OF_TYPE[type_name], frozenset({type_name}), tagged=False, type_name=type_name, queue=queue
    )
    for queue, types in INGEST_TYPES.items()
    for type_name in types
}


def parse_ingest_as(
    queue: str, type_name: str, raw: str | bytes, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH
) -> IngestMessage:
    """`parse_ingest` for a message whose `type` the caller set itself (the SDK): validated against
    that type's model alone, not the queue's union. A message it refuses is parsed again by
    `parse_ingest`, so the error is exactly the one the queue's contract gives."""
    parser = _INGEST_TYPE_PARSERS.get((queue, type_name))
    if parser is not None:
        try:
            return parser(raw, max_bytes, max_depth)
        except ContractError:
            pass
    return parse_ingest(queue, raw, max_bytes=max_bytes, max_depth=max_depth)


def parse_for_queue(
    queue: str, raw: str | bytes, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH
) -> BaseModel:
    """Parse a message by the queue it was read from, whether or not it carries a `type`.

    Knows the request/reply queues (`QUEUE_MODELS`), the ingest queues (as `parse_ingest`),
    `template_updates` and `inbox_<instance>` queues. Raises `ContractError` for a bad message and
    `ValueError` for a queue without a contract.
    """
    parser = _QUEUE_PARSERS.get(queue)
    if parser is None and queue.startswith("inbox_"):
        parser = _INBOX_PARSER
    if parser is None:
        known = ", ".join(sorted([*_QUEUE_PARSERS, "inbox_<instance_id>"]))
        raise ValueError(f"no message contract for queue {queue!r}; known queues: {known}")
    return parser(raw, max_bytes, max_depth)


def model_for_type(type_name: str) -> type[BaseModel]:
    """The model of a message `type`; `KeyError` for an unknown type."""
    return MODEL_OF_TYPE[type_name]


__all__ = [
    "ALL_TYPES",
    "HUB_MESSAGE_TYPES",
    "INGEST_MESSAGE_TYPES",
    "INGEST_TYPES",
    "MODEL_OF_TYPE",
    "QUEUE_OF_TYPE",
    "SERVICE_MESSAGE_TYPES",
    "HubToInstanceMessage",
    "IngestMessage",
    "Message",
    "model_for_type",
    "nesting_depth",
    "parse_for_queue",
    "parse_ingest",
    "parse_ingest_as",
    "parse_message",
]
