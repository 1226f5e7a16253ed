"""Building blocks shared by every message contract: field types, base models and limits.

Everything here is pure Python + pydantic (no Dagster, no database). The field types carry their
own validation so that the models stay declarative:

- `InstanceId`: checked with `queue_assets.names.validate_instance_id` (ids become queue names and
  file paths, so SQL/path characters are refused).
- `Name` / `Text` / `ShortText`: strings without C0/C1 control characters, bidirectional override
  or isolate characters (U+202A..U+202E, U+2066..U+2069) or lone surrogates; `Name` is stripped,
  NFC-normalised and 1..200 characters long.
- `UtcDatetime`: ISO-8601 text as producers really send it (Elixir `DateTime.utc_now()` JSON
  `2025-10-25T12:00:00.000000Z`, `+02:00` offsets, no fraction, up to 9 fraction digits). A naive
  timestamp (no `Z`, no offset) is taken as UTC. The result is always an aware UTC datetime.
  Years outside `MIN_YEAR..MAX_YEAR` are refused as absurd.
- `UnitFloat` (a finite number in [0, 1]) and `Count` (an integer 0..2**63-1, so it fits a
  PostgreSQL bigint).

All models are strict (no `"0.5"` -> 0.5 or `true` -> 1.0 coercion), forbid NaN/Infinity and keep
unknown extra fields.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeGuard

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from queue_assets import names

# Re-exported: the contracts and the aggregation name it from here.
from queue_assets.patterns.vocabulary import PATTERN_TYPES as PATTERN_TYPES

#: Default limit on the size of one raw message, in UTF-8 bytes.
MAX_BYTES = 1_048_576
#: Default limit on how deeply arrays/objects may nest (the top-level object is depth 1).
MAX_DEPTH = 32
#: Timestamps outside these years are refused as absurd (a producer's clock or encoder is broken).
MIN_YEAR = 2000
MAX_YEAR = 2100
#: Longest `name` after stripping and NFC normalisation.
MAX_NAME_CHARS = 200
#: PostgreSQL bigint upper bound: counts are stored in bigint columns.
MAX_COUNT = 2**63 - 1

PatternType = Literal["framework", "technology", "microservice", "code"]


def is_pattern_type(value: object) -> TypeGuard[PatternType]:
    """True for one of `PATTERN_TYPES` (a database column's `str` becomes a `PatternType`)."""
    return value in PATTERN_TYPES


HUB_SOURCE = "centralcloud"

# C0 controls, DEL + C1 controls, bidi embeddings/overrides (U+202A..U+202E), bidi isolates
# (U+2066..U+2069) and lone surrogates.
BAD_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def char_kind(char: str) -> str:
    code = ord(char)
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return "a control character"
    if 0xD800 <= code <= 0xDFFF:
        return "a lone surrogate"
    return "a bidirectional override/isolate character"


def check_text(value: str) -> str:
    """Refuse control, bidi override/isolate and surrogate characters; return `value`."""
    match = BAD_CHARS.search(value)
    if match is not None:
        char = match.group()
        raise PydanticCustomError(
            "bad_text",
            "contains {char} ({what}) at position {pos}; control characters and bidirectional "
            "override/isolate characters are not allowed",
            {"char": f"U+{ord(char):04X}", "what": char_kind(char), "pos": match.start()},
        )
    return value


def _text_validator(max_chars: int, *, strip: bool) -> Any:
    def validate(value: str) -> str:
        check_text(value)
        if strip:
            value = value.strip()
        if not value.isascii():
            value = unicodedata.normalize("NFC", value)
        if not 1 <= len(value) <= max_chars:
            raise PydanticCustomError(
                "text_length",
                "must be 1 to {max} characters"
                + (" after stripping whitespace" if strip else "")
                + ", got {n}",
                {"max": max_chars, "n": len(value)},
            )
        return value

    return validate


def _text_type(max_chars: int, *, strip: bool, description: str) -> Any:
    schema: dict[str, Any] = {
        "type": "string",
        "minLength": 1,
        "maxLength": max_chars,
        "description": description,
    }
    return Annotated[str, AfterValidator(_text_validator(max_chars, strip=strip)), WithJsonSchema(schema)]


Name = _text_type(
    MAX_NAME_CHARS,
    strip=True,
    description="1..200 characters after stripping surrounding whitespace; NFC-normalised; no control "
    "or bidirectional override/isolate characters",
)
ShortText = _text_type(
    200, strip=True, description="1..200 characters; no control or bidirectional override/isolate characters"
)
Text = _text_type(
    4096,
    strip=False,
    description="1..4096 characters; no control or bidirectional override/isolate characters",
)


def _instance_id(value: str) -> str:
    try:
        return names.validate_instance_id(value)
    except names.InvalidNameError as exc:
        raise PydanticCustomError("bad_instance_id", "{reason}", {"reason": str(exc)}) from None


InstanceId = Annotated[
    str,
    AfterValidator(_instance_id),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": names.INSTANCE_ID_RE.pattern,
            "minLength": 1,
            "maxLength": names.MAX_INSTANCE_ID,
            "description": "letters, digits, '-' and '_', starting with a letter or digit",
        }
    ),
]

_TIMESTAMP_RE = re.compile(
    r"(\d{4})-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?"
)
TIMESTAMP_EXAMPLE = "2025-10-25T12:00:00.000000Z"


def parse_timestamp(value: object) -> datetime:
    """Parse a producer timestamp into an aware UTC datetime (naive input is taken as UTC)."""
    if isinstance(value, datetime):  # built in Python code, not from the wire
        parsed = value
    else:
        if not isinstance(value, str):
            raise PydanticCustomError(
                "bad_timestamp",
                "must be an ISO-8601 timestamp string such as {example}",
                {"example": TIMESTAMP_EXAMPLE},
            )
        match = _TIMESTAMP_RE.fullmatch(value)
        if match is None:
            raise PydanticCustomError(
                "bad_timestamp",
                "is not an ISO-8601 timestamp; expected e.g. {example}",
                {"example": TIMESTAMP_EXAMPLE},
            )
        year = int(match.group(1))
        if not MIN_YEAR <= year <= MAX_YEAR:
            raise PydanticCustomError(
                "bad_timestamp",
                "year {year} is outside {min}..{max}",
                {"year": year, "min": MIN_YEAR, "max": MAX_YEAR},
            )
        try:
            parsed = datetime.fromisoformat(value.upper().replace(",", "."))
        except ValueError as exc:
            raise PydanticCustomError(
                "bad_timestamp",
                "is not a valid date/time ({error}); expected e.g. {example}",
                {"error": str(exc), "example": TIMESTAMP_EXAMPLE},
            ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 2100-12-31T23:59:59-23:59 with MAX_YEAR at the edge
        raise PydanticCustomError("bad_timestamp", "is out of range once converted to UTC", {}) from None


UtcDatetime = Annotated[
    datetime,
    BeforeValidator(parse_timestamp),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "description": "ISO-8601, e.g. 2025-10-25T12:00:00.000000Z or 2025-10-25T14:00:00+02:00; "
            "a timestamp without offset is taken as UTC; normalised to UTC",
        }
    ),
]

UnitFloat = Annotated[float, Field(ge=0, le=1)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]


class ContractModel(BaseModel):
    """Base of every message and sub-object: strict, finite numbers only, extra fields kept."""

    model_config = ConfigDict(
        strict=True,
        allow_inf_nan=False,
        extra="allow",
    )
