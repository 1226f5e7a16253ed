"""Reusable message corpora for the contract tests and the pgmq ingest tests.

`BAD_INPUT_CORPUS`: `(kind, raw JSON text)` pairs, each rejected with that `ContractError.kind` by
`parse_ingest("pattern_messages", raw, max_bytes=CORPUS_MAX_BYTES)` (all but the `wrong_queue`
entries also by `parse_message(raw, max_bytes=CORPUS_MAX_BYTES)`).

Every text is valid JSON that PostgreSQL `jsonb` accepts (no `\\u0000`, no lone surrogates, no
literal NaN/Infinity tokens) and survives a round trip through jsonb unchanged as a value
(`json.loads(raw) == json.loads(jsonb_text)`), so the ingest tests can send them through real pgmq
and compare what lands in the dead-letter queue. Non-finite numbers are therefore the strings
"NaN"/"Infinity"/"-inf" and the number 10**400 written out in full (401 digits): that is what
jsonb turns `1e400` into, and it still overflows a float. Texts use `json.dumps` spacing
(`", "`, `": "`) and raw UTF-8, like jsonb's output, so their byte sizes survive the round trip.

Size assumption: the `too_large` entry is a valid `pattern_detection` just over
`CORPUS_MAX_BYTES` (4096) bytes; every other entry is under it. Configure the ingest with
`max_bytes=CORPUS_MAX_BYTES` when sending the corpus.

The `too_deep` entry nests 500 arrays, so that `json.loads` (and psycopg's default jsonb loader,
which uses it) can still decode it. `HOSTILE_DEEP_NESTING` nests 10,000 levels: the parser refuses
it as `too_deep` (with the default `max_bytes`), but `json.loads` raises RecursionError on it, so
an ingest that wants to survive it must read pgmq messages as text (`msg::text`).

`VALID_SAMPLES`: raw valid messages for the three ingest queues (`VALID_SAMPLES_BY_QUEUE` says
which queue each belongs to).
"""

from __future__ import annotations

import json
from typing import Any

CORPUS_MAX_BYTES = 4096
CORPUS_QUEUE = "pattern_messages"

ELIXIR_TS = "2025-10-25T12:00:00.000000Z"


def _dump(message: Any) -> str:
    return json.dumps(message, ensure_ascii=False)


def _pattern(**overrides: Any) -> dict[str, Any]:
    pattern: dict[str, Any] = {
        "pattern_type": "framework",
        "name": "phoenix",
        "confidence": 0.92,
        "indicators": ["mix.exs has :phoenix"],
        "language": "elixir",
        "examples": ["use Phoenix.Router"],
    }
    pattern.update(overrides)
    return {k: v for k, v in pattern.items() if v is not _DROP}


_DROP = object()


def _detection(*, patterns: Any = None, **overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "pattern_detection",
        "instance_id": "singularity-1",
        "source": "singularity-1",
        "timestamp": ELIXIR_TS,
        "patterns": [_pattern()] if patterns is None else patterns,
    }
    message.update(overrides)
    return {k: v for k, v in message.items() if v is not _DROP}


def _with_pattern(**overrides: Any) -> str:
    return _dump(_detection(patterns=[_pattern(**overrides)]))


def _too_large() -> str:
    """A valid pattern_detection of CORPUS_MAX_BYTES + 1..+40 bytes."""
    base = _detection(patterns=[_pattern(examples=[""])])
    filler = CORPUS_MAX_BYTES + 1 - len(_dump(base).encode())
    base["patterns"][0]["examples"] = ["x" * filler]
    text = _dump(base)
    assert CORPUS_MAX_BYTES < len(text.encode()) <= CORPUS_MAX_BYTES + 40
    return text


def _nested_examples(depth: int) -> str:
    """A pattern_detection whose first pattern's `examples` nests `depth` arrays."""
    head = _dump(_detection(patterns=[_pattern(examples="@")]))
    return head.replace('"@"', "[" * depth + "]" * depth)


CORPUS_DEPTH = 500
HOSTILE_DEEP_NESTING = _nested_examples(10_000)


BAD_INPUT_CORPUS: list[tuple[str, str]] = [
    # not an object
    ("not_object", "[1, 2, 3]"),
    ("not_object", '"pattern_detection"'),
    ("not_object", "42"),
    ("not_object", "null"),
    ("not_object", "true"),
    # no type / unknown type
    ("missing_type", _dump(_detection(type=_DROP))),
    ("unknown_type", _dump(_detection(type="foo"))),
    ("unknown_type", _dump(_detection(type=42))),
    # wrong field types and ranges
    ("invalid_fields", _dump(_detection(patterns="phoenix"))),
    ("invalid_fields", _with_pattern(confidence="high")),
    ("invalid_fields", _with_pattern(confidence=1.7)),
    ("invalid_fields", _with_pattern(confidence=True)),
    ("invalid_fields", _with_pattern(name=_DROP)),
    ("invalid_fields", _with_pattern(name="   ")),
    ("invalid_fields", _with_pattern(pattern_type="frameworks")),
    ("invalid_fields", _with_pattern(indicators="mix.exs")),
    # non-finite numbers (as strings, and as a number that overflows a float)
    ("non_finite", _with_pattern(confidence="NaN")),
    ("non_finite", _with_pattern(confidence="Infinity")),
    ("non_finite", _with_pattern(confidence="-inf")),
    ("non_finite", _with_pattern(confidence=10**400)),  # 1e400 as jsonb stores it
    # over the size limit (for max_bytes=CORPUS_MAX_BYTES)
    ("too_large", _too_large()),
    # bad timestamps
    ("bad_timestamp", _dump(_detection(timestamp="yesterday"))),
    ("bad_timestamp", _dump(_detection(timestamp="2025-13-45T00:00:00Z"))),
    ("bad_timestamp", _dump(_detection(timestamp="9999-12-31T23:59:59Z"))),
    ("bad_timestamp", _dump(_detection(timestamp="0001-01-01T00:00:00Z"))),
    ("bad_timestamp", _dump(_detection(timestamp=1761393600))),
    ("bad_timestamp", _dump(_detection(timestamp=_DROP))),
    # instance ids with SQL / path characters, or none at all
    ("bad_instance_id", _dump(_detection(instance_id="'; drop table hub.instances; --"))),
    ("bad_instance_id", _dump(_detection(instance_id="../x"))),
    ("bad_instance_id", _dump(_detection(instance_id="a/b"))),
    ("bad_instance_id", _dump(_detection(instance_id="has space"))),
    ("bad_instance_id", _dump(_detection(instance_id=_DROP, source="../../etc/passwd"))),
    ("bad_instance_id", _dump(_detection(instance_id=_DROP, source=_DROP))),
    # deep nesting
    ("too_deep", _nested_examples(CORPUS_DEPTH)),
    # odd Unicode: bidi override / isolate, C0 and C1 controls
    ("bad_text", _with_pattern(name="\u202eevil")),
    ("bad_text", _with_pattern(name="phoenix\u2066")),
    ("bad_text", _with_pattern(name="bell\u0007")),
    ("bad_text", _with_pattern(name="next\u0085line")),
    ("bad_text", _with_pattern(language="elixir\u001b[31m")),
    ("bad_text", _with_pattern(pattern_type="frame\u0007work")),
    # a valid message of a type that belongs on another queue
    (
        "wrong_queue",
        _dump({"type": "heartbeat", "instance_id": "singularity-3", "timestamp": ELIXIR_TS, "status": "ok"}),
    ),
    (
        "wrong_queue",
        _dump(
            {
                "type": "learned_patterns",
                "source": "singularity-2",
                "timestamp": ELIXIR_TS,
                "usage_count": 500,
                "success_rate": 0.95,
                "artifacts": [],
            }
        ),
    ),
]

VALID_SAMPLES_BY_QUEUE: dict[str, list[str]] = {
    "pattern_messages": [
        _dump(_detection()),
        _dump(
            _detection(
                instance_id=_DROP,
                source="singularity-2",
                timestamp="2025-10-25T14:00:00+02:00",
                patterns=[
                    _pattern(name="café", pattern_type="technology", confidence=_DROP),
                    _pattern(
                        name="日本", pattern_type="microservice", language=_DROP, examples=[{"k": [1, 2.5]}]
                    ),
                    _pattern(name="genserver-cache", pattern_type="code", confidence=0, indicators=[]),
                ],
            )
        ),
        _dump(
            _detection(
                timestamp="2025-10-25T12:00:00Z", producer_version="1.4.0", patterns=[_pattern(rank_hint=3)]
            )
        ),
        _dump(
            {
                "type": "code_analysis",
                "instance_id": "singularity-1",
                "timestamp": "2025-10-25T12:00:00",
                "analysis": {
                    "dead_code": ["lib/old.ex"],
                    "files": 120,
                    "ratio": 0.125,
                    "nested": {"ok": True},
                },
            }
        ),
    ],
    "learned_patterns": [
        _dump(
            {
                "type": "learned_patterns",
                "source": "singularity-2",
                "timestamp": ELIXIR_TS,
                "usage_count": 500,
                "success_rate": 0.95,
                "artifacts": [
                    {
                        "artifact_id": "tmpl-genserver-cache",
                        "artifact_type": "template",
                        "name": "GenServer cache",
                        "content": {"code": "defmodule Cache do ... end", "params": ["ttl"]},
                        "usage_count": 120,
                        "success_rate": 0.9,
                    }
                ],
            }
        ),
        _dump(
            {
                "type": "learned_artifacts",
                "instance_id": "singularity-3",
                "timestamp": "2025-10-25T12:00:00.123Z",
                "usage_count": 0,
                "success_rate": 0,
                "artifacts": [{"artifact_id": "prompt-1", "content": "plain text"}],
            }
        ),
    ],
    "instance_heartbeat": [
        _dump(
            {
                "type": "heartbeat",
                "instance_id": "singularity-3",
                "timestamp": ELIXIR_TS,
                "version": "1.4.0",
                "status": "ok",
            }
        ),
        _dump(
            {"type": "heartbeat", "instance_id": "singularity_4", "timestamp": "2025-10-25T12:00:00+00:00"}
        ),
    ],
}

VALID_SAMPLES: list[str] = [raw for samples in VALID_SAMPLES_BY_QUEUE.values() for raw in samples]
