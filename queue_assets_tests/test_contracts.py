"""Message contracts: what the hub accepts, what it refuses, and how it explains a refusal.

Pure Python: no database, no Dagster.
"""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queue_assets import contracts
from queue_assets.contracts import (
    ALL_TYPES,
    INGEST_TYPES,
    MODEL_OF_TYPE,
    QUEUE_MODELS,
    AggregatedLearning,
    AggregatedPatterns,
    CodeAnalysis,
    ContractError,
    Heartbeat,
    JobRequest,
    LearnedArtifacts,
    LearnedPatterns,
    LearningExported,
    LlmRequest,
    LlmResult,
    PatternDetection,
    PatternsUpdated,
    TemplatesUpdated,
    parse_for_queue,
    parse_ingest,
    parse_message,
)
from queue_assets.contracts.schema import write_json_schemas
from queue_assets_tests.corpus import (
    BAD_INPUT_CORPUS,
    CORPUS_MAX_BYTES,
    CORPUS_QUEUE,
    HOSTILE_DEEP_NESTING,
    VALID_SAMPLES,
    VALID_SAMPLES_BY_QUEUE,
)

REPO = Path(__file__).resolve().parents[1]
TS = "2025-10-25T12:00:00.000000Z"  # Elixir DateTime.utc_now() as JSON
NOON_UTC = datetime(2025, 10, 25, 12, 0, tzinfo=UTC)


def detection(**overrides) -> dict:
    message = {
        "type": "pattern_detection",
        "instance_id": "singularity-1",
        "timestamp": TS,
        "patterns": [{"pattern_type": "framework", "name": "phoenix", "confidence": 0.92}],
    }
    message.update(overrides)
    return message


def with_pattern(**fields) -> str:
    pattern = {"pattern_type": "framework", "name": "phoenix", **fields}
    return json.dumps(detection(patterns=[pattern]), ensure_ascii=False)


def rejected(raw: str | bytes, **kwargs) -> ContractError:
    with pytest.raises(ContractError) as info:
        parse_message(raw, **kwargs)
    return info.value


# --- the wire format of DESIGN.md ----------------------------------------------------------------

# Verbatim from DESIGN.md "Wire format", with its "..." timestamps replaced by a real one.
DESIGN_EXAMPLES = [
    """{"type": "pattern_detection", "instance_id": "singularity-1", "source": "singularity-1",
 "timestamp": "2025-10-25T12:00:00.000000Z",
 "patterns": [{"pattern_type": "framework", "name": "phoenix", "confidence": 0.92,
               "indicators": ["mix.exs has :phoenix"], "language": "elixir", "examples": ["..."]}]}""",
    """{"type": "learned_patterns", "source": "singularity-2", "timestamp": "TS", "usage_count": 500,
 "success_rate": 0.95, "artifacts": [{"artifact_id": "tmpl-genserver-cache", "artifact_type": "template",
                                      "name": "GenServer cache", "content": {"...": "..."}}]}""",
    """{"type": "code_analysis", "instance_id": "singularity-1", "timestamp": "TS", "analysis": {"...": "..."}}""",
    """{"type": "heartbeat", "instance_id": "singularity-3", "timestamp": "TS", "version": "1.4.0", "status": "ok"}""",
]


@pytest.mark.parametrize("raw", [e.replace('"TS"', f'"{TS}"') for e in DESIGN_EXAMPLES])
def test_every_wire_format_example_of_the_design_parses(raw):
    message = parse_message(raw)
    assert message.type == json.loads(raw)["type"]
    assert message.timestamp == NOON_UTC


def test_the_design_pattern_detection_example_keeps_every_pattern_field():
    message = parse_message(DESIGN_EXAMPLES[0])
    assert isinstance(message, PatternDetection)
    [pattern] = message.patterns
    assert (pattern.pattern_type, pattern.name, pattern.confidence) == ("framework", "phoenix", 0.92)
    assert pattern.indicators == ["mix.exs has :phoenix"]
    assert (pattern.language, pattern.examples) == ("elixir", ["..."])


def test_the_instance_is_instance_id_when_given():
    message = parse_message(json.dumps(detection(instance_id="singularity-1", source="worker-7")))
    assert message.instance == "singularity-1"


def test_the_instance_is_source_when_only_source_is_given():
    message = parse_message(json.dumps(detection(instance_id=None, source="singularity-2")))
    assert message.instance == "singularity-2"


def test_every_instance_message_exposes_its_instance():
    for raw in VALID_SAMPLES:
        assert parse_message(raw).instance.startswith("singularity")


def test_a_message_with_neither_instance_id_nor_source_is_rejected_with_a_clear_reason():
    message = detection()
    del message["instance_id"]
    error = rejected(json.dumps(message))
    assert error.kind == "bad_instance_id"
    assert "neither instance_id nor source" in error.reason


def test_source_used_as_the_instance_must_be_a_valid_instance_id():
    error = rejected(json.dumps(detection(instance_id=None, source="../etc")))
    assert error.kind == "bad_instance_id"
    assert "../etc" in error.reason


def test_learned_artifacts_is_accepted_with_the_shape_of_learned_patterns():
    raw = json.loads(VALID_SAMPLES_BY_QUEUE["learned_patterns"][0])
    raw["type"] = "learned_artifacts"
    message = parse_ingest("learned_patterns", json.dumps(raw))
    assert isinstance(message, LearnedArtifacts)
    assert isinstance(message, LearnedPatterns)
    assert message.artifacts[0].artifact_id == "tmpl-genserver-cache"


def test_artifact_content_may_be_any_json_value():
    for content in [{"a": [1, {"b": None}]}, "text", 3, 2.5, None, [True, False]]:
        raw = json.loads(VALID_SAMPLES_BY_QUEUE["learned_patterns"][0])
        raw["artifacts"][0]["content"] = content
        assert parse_message(json.dumps(raw)).artifacts[0].content == content


def test_an_artifact_needs_an_artifact_id():
    raw = json.loads(VALID_SAMPLES_BY_QUEUE["learned_patterns"][0])
    del raw["artifacts"][0]["artifact_id"]
    error = rejected(json.dumps(raw))
    assert error.kind == "invalid_fields"
    assert "artifacts[0].artifact_id: required field is missing" in error.reason


def test_usage_count_must_be_a_non_negative_integer():
    raw = json.loads(VALID_SAMPLES_BY_QUEUE["learned_patterns"][0])
    raw["usage_count"] = -1
    error = rejected(json.dumps(raw))
    assert error.reason == "learned_patterns: usage_count = -1: must be an integer >= 0"


def test_success_rate_must_be_between_0_and_1():
    raw = json.loads(VALID_SAMPLES_BY_QUEUE["learned_patterns"][0])
    raw["success_rate"] = 1.5
    assert (
        rejected(json.dumps(raw)).reason
        == "learned_patterns: success_rate = 1.5: must be a number between 0 and 1"
    )


def test_code_analysis_keeps_its_free_form_analysis():
    message = parse_ingest("pattern_messages", VALID_SAMPLES_BY_QUEUE["pattern_messages"][3])
    assert isinstance(message, CodeAnalysis)
    assert message.analysis["nested"] == {"ok": True}


def test_heartbeat_version_and_status_are_optional():
    message = parse_ingest("instance_heartbeat", VALID_SAMPLES_BY_QUEUE["instance_heartbeat"][1])
    assert isinstance(message, Heartbeat)
    assert (message.version, message.status) == (None, None)


@pytest.mark.parametrize("queue", sorted(VALID_SAMPLES_BY_QUEUE))
def test_every_valid_sample_parses_on_its_ingest_queue(queue):
    for raw in VALID_SAMPLES_BY_QUEUE[queue]:
        assert parse_ingest(queue, raw).type in INGEST_TYPES[queue]


def test_raw_bytes_parse_like_text():
    raw = VALID_SAMPLES[1]
    assert parse_message(raw.encode()) == parse_message(raw)


# --- timestamps ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-10-25T12:00:00.000000Z", NOON_UTC),  # Elixir DateTime.utc_now()
        ("2025-10-25T12:00:00.123456Z", NOON_UTC.replace(microsecond=123456)),
        ("2025-10-25T12:00:00.123Z", NOON_UTC.replace(microsecond=123000)),  # JavaScript toISOString()
        ("2025-10-25T12:00:00Z", NOON_UTC),  # no fractional part
        ("2025-10-25T12:00:00.123456789Z", NOON_UTC.replace(microsecond=123456)),  # nanoseconds, truncated
        ("2025-10-25T14:00:00+02:00", NOON_UTC),  # offset
        ("2025-10-25T07:00:00-05:00", NOON_UTC),
        ("2025-10-25T12:00:00+00:00", NOON_UTC),
        ("2025-10-25 12:00:00Z", NOON_UTC),  # space separator
    ],
)
def test_producer_timestamps_are_normalised_to_aware_utc(text, expected):
    message = parse_message(json.dumps(detection(timestamp=text)))
    assert message.timestamp == expected
    assert message.timestamp.tzinfo is UTC


def test_a_naive_timestamp_is_taken_as_utc():
    message = parse_message(json.dumps(detection(timestamp="2025-10-25T12:00:00")))
    assert message.timestamp == NOON_UTC
    assert message.timestamp.utcoffset() == timedelta(0)


def test_a_timestamp_is_written_back_as_utc_with_z():
    message = parse_message(json.dumps(detection(timestamp="2025-10-25T14:00:00+02:00")))
    assert json.loads(message.model_dump_json())["timestamp"] == "2025-10-25T12:00:00Z"


@pytest.mark.parametrize(
    ("value", "expected_in_reason"),
    [
        ("yesterday", "not an ISO-8601 timestamp"),
        ("2025-13-45T00:00:00Z", "month must be in 1..12"),
        ("2025-10-25T25:00:00Z", "hour must be in 0..23"),
        ("9999-12-31T23:59:59Z", "year 9999 is outside 2000..2100"),
        ("0001-01-01T00:00:00Z", "year 1 is outside 2000..2100"),
        ("", "not an ISO-8601 timestamp"),
        (1761393600, "must be an ISO-8601 timestamp string"),
    ],
)
def test_bad_timestamps_are_rejected_naming_the_value(value, expected_in_reason):
    error = rejected(json.dumps(detection(timestamp=value)))
    assert error.kind == "bad_timestamp"
    assert f"timestamp = {value!r}" in error.reason
    assert expected_in_reason in error.reason


def test_a_missing_timestamp_on_an_instance_message_is_an_error():
    message = detection()
    del message["timestamp"]
    error = rejected(json.dumps(message))
    assert (error.kind, error.reason) == (
        "bad_timestamp",
        "pattern_detection: timestamp: required field is missing",
    )


# --- patterns ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern_type", ["framework", "technology", "microservice", "code"])
def test_the_four_pattern_kinds_of_seed_003_are_accepted(pattern_type):
    assert parse_message(with_pattern(pattern_type=pattern_type)).patterns[0].pattern_type == pattern_type


def test_any_other_pattern_kind_is_rejected_listing_the_four():
    error = rejected(with_pattern(pattern_type="library"))
    assert error.kind == "invalid_fields"
    assert "patterns[0].pattern_type = 'library'" in error.reason
    assert "'framework', 'technology', 'microservice' or 'code'" in error.reason


def test_confidence_is_optional():
    assert parse_message(with_pattern()).patterns[0].confidence is None


def test_confidence_outside_0_to_1_is_rejected_with_path_value_and_expectation():
    error = rejected(with_pattern(confidence=1.7))
    assert error.kind == "invalid_fields"
    assert error.reason == "pattern_detection: patterns[0].confidence = 1.7: must be a number between 0 and 1"


def test_a_name_is_required():
    error = rejected(json.dumps(detection(patterns=[{"pattern_type": "code"}])))
    assert error.reason == "pattern_detection: patterns[0].name: required field is missing"


def test_a_blank_name_is_rejected():
    error = rejected(with_pattern(name="   "))
    assert error.kind == "invalid_fields"
    assert "must be 1 to 200 characters after stripping whitespace, got 0" in error.reason


def test_a_name_over_200_characters_is_rejected():
    error = rejected(with_pattern(name="x" * 201))
    assert "got 201" in error.reason


def test_names_are_stripped_and_nfc_normalised():
    name = parse_message(with_pattern(name="  cafe\u0301  ")).patterns[0].name
    assert name == "caf\u00e9"


@pytest.mark.parametrize("name", ["café", "日本", "Ελληνικά", "emoji 🚀", "naïve-résumé"])
def test_valid_non_ascii_names_pass(name):
    assert parse_message(with_pattern(name=name)).patterns[0].name == name


def test_unknown_extra_fields_are_kept_at_every_level():
    raw = json.loads(VALID_SAMPLES_BY_QUEUE["learned_patterns"][0])
    raw["producer"] = {"version": "1.4.0"}
    raw["artifacts"][0]["origin"] = "lib/cache.ex"
    message = parse_message(json.dumps(raw))
    assert message.model_extra == {"producer": {"version": "1.4.0"}}
    assert message.artifacts[0].model_extra == {"origin": "lib/cache.ex"}
    pattern = parse_message(with_pattern(seen_in=["a", "b"])).patterns[0]
    assert pattern.model_extra == {"seen_in": ["a", "b"]}
    assert json.loads(pattern.model_dump_json())["seen_in"] == ["a", "b"]


def test_strings_are_not_coerced_to_numbers():
    error = rejected(with_pattern(confidence="0.5"))
    assert (error.kind, error.reason) == (
        "invalid_fields",
        "pattern_detection: patterns[0].confidence = '0.5': must be a number between 0 and 1",
    )


def test_several_errors_are_reported_together():
    error = rejected(json.dumps(detection(patterns=[{"pattern_type": "x", "name": 5, "confidence": 2}])))
    assert "pattern_type = 'x'" in error.reason
    assert "name = 5" in error.reason
    assert "confidence = 2" in error.reason


# --- non-finite numbers --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["NaN", "nan", "Infinity", "inf", "-inf", "-Infinity"])
def test_non_finite_strings_in_number_fields_are_rejected(value):
    error = rejected(with_pattern(confidence=value))
    assert error.kind == "non_finite"
    assert f"patterns[0].confidence = {value!r}" in error.reason


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "1" + "0" * 400])
def test_numbers_that_overflow_a_float_are_rejected(literal):
    error = rejected(with_pattern(confidence=0.5).replace("0.5", literal))
    assert error.kind == "non_finite"
    assert "patterns[0].confidence" in error.reason
    assert "NaN and Infinity are not allowed" in error.reason


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_tokens_in_number_fields_are_rejected(token):
    assert rejected(with_pattern(confidence=0.5).replace("0.5", token)).kind == "non_finite"


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (with_pattern(examples=["a", 7]).replace("7", "1e400"), "patterns[0].examples[1] = 1e400"),
        (with_pattern(examples=["a", 7]).replace("7", "NaN"), "patterns[0].examples[1] = NaN"),
        (
            json.dumps(detection(extra={"deep": [1, 7]})).replace("7", "-Infinity"),
            "extra.deep[1] = -Infinity",
        ),
        (
            json.dumps(
                {"type": "code_analysis", "instance_id": "a", "timestamp": TS, "analysis": {"r": 7}}
            ).replace("7", "1.5e999"),
            "analysis.r = 1.5e999",
        ),
    ],
)
def test_non_finite_numbers_in_free_form_json_are_rejected_naming_the_path(raw, path):
    error = rejected(raw)
    assert error.kind == "non_finite"
    assert path in error.reason


def test_text_that_only_looks_non_finite_is_fine():
    raw = with_pattern(
        name="Infinity", examples=["NaN", "file1234", "1e400", {"e999": "x"}], confidence=1e-300
    )
    pattern = parse_message(raw).patterns[0]
    assert pattern.examples == ["NaN", "file1234", "1e400", {"e999": "x"}]


def test_big_but_finite_numbers_in_free_form_json_are_fine():
    raw = with_pattern(examples=[1e308, 10**30])
    assert parse_message(raw).patterns[0].examples == [1e308, 10**30]


def test_nul_characters_anywhere_are_rejected_because_postgresql_cannot_store_them():
    raw = json.dumps(
        {"type": "code_analysis", "instance_id": "a", "timestamp": TS, "analysis": {"t": "a\u0000b"}}
    )
    error = rejected(raw)
    assert error.kind == "bad_text"
    assert "analysis.t = 'a\\x00b'" in error.reason


# --- odd Unicode ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "char"),
    [
        ("name", "\u202eevil", "U+202E"),  # right-to-left override
        ("name", "a\u202ab", "U+202A"),  # left-to-right embedding
        ("name", "phoenix\u2066", "U+2066"),  # left-to-right isolate
        ("name", "x\u2069", "U+2069"),  # pop directional isolate
        ("name", "bell\u0007", "U+0007"),  # C0 control
        ("name", "tab\there", "U+0009"),
        ("name", "next\u0085line", "U+0085"),  # C1 control (NEL), even though str.strip() would eat it
        ("name", "\u0085phoenix", "U+0085"),
        ("name", "del\u007f", "U+007F"),
        ("language", "elixir\u001b[31m", "U+001B"),
        ("pattern_type", "frame\u0007work", "U+0007"),
    ],
)
def test_control_and_bidi_characters_in_names_and_kinds_are_rejected(field, value, char):
    error = rejected(with_pattern(**{field: value}))
    assert error.kind == "bad_text"
    assert char in error.reason
    assert f"patterns[0].{field} = {value!r}" in error.reason


def test_control_characters_in_instance_ids_are_rejected():
    assert rejected(json.dumps(detection(instance_id="node\u202e1"))).kind == "bad_instance_id"


def test_an_artifact_id_with_a_bidi_override_is_rejected():
    raw = json.loads(VALID_SAMPLES_BY_QUEUE["learned_patterns"][0])
    raw["artifacts"][0]["artifact_id"] = "tmpl\u202e"
    assert rejected(json.dumps(raw)).kind == "bad_text"


def test_free_form_text_may_hold_any_unicode():
    examples = ["line1\nline2\ttab", "\u202e reversed", "日本"]
    assert parse_message(with_pattern(examples=examples)).patterns[0].examples == examples


# --- instance ids --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "instance_id", ["'; drop table hub.instances; --", "../x", "a/b", "has space", "x" * 42, "-lead", ""]
)
def test_instance_ids_with_sql_or_path_characters_are_rejected_with_the_names_module_reason(instance_id):
    error = rejected(json.dumps(detection(instance_id=instance_id)))
    assert error.kind == "bad_instance_id"
    assert "instance id" in error.reason
    assert f"instance_id = {instance_id[:60]!r}"[:60] in error.reason


@pytest.mark.parametrize("instance_id", ["singularity-1", "node_2", "A1", "x" * 41])
def test_safe_instance_ids_are_accepted(instance_id):
    assert parse_message(json.dumps(detection(instance_id=instance_id))).instance == instance_id


# --- shape of the whole message ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kind_name"),
    [("[1, 2, 3]", "array"), ('"hello"', "string"), ("42", "number"), ("null", "null"), ("true", "boolean")],
)
def test_a_message_that_is_not_an_object_is_rejected(raw, kind_name):
    error = rejected(raw)
    assert error.kind == "not_object"
    assert error.reason.startswith(f"message is a JSON {kind_name}, expected an object")
    assert raw in error.reason


def test_a_message_without_type_is_rejected_listing_the_types():
    message = detection()
    del message["type"]
    error = rejected(json.dumps(message))
    assert error.kind == "missing_type"
    assert "no 'type' field" in error.reason
    assert "pattern_detection" in error.reason


def test_a_null_type_counts_as_missing():
    error = rejected(json.dumps(detection(type=None)))
    assert (error.kind, error.reason[:29]) == ("missing_type", "message has a null 'type'; ex")
    with pytest.raises(ContractError) as info:
        parse_ingest("pattern_messages", json.dumps(detection(type=None)))
    assert info.value.kind == "missing_type"
    with pytest.raises(ContractError) as info:
        parse_ingest("instance_heartbeat", json.dumps(detection(type=None)))
    assert info.value.kind == "missing_type"


@pytest.mark.parametrize(
    ("value", "shown"), [("foo", "'foo'"), (42, "42"), (["x"], "['x']"), ("patterns", "'patterns'")]
)
def test_an_unknown_type_is_rejected_naming_it_and_listing_the_types(value, shown):
    error = rejected(json.dumps(detection(type=value)))
    assert error.kind == "unknown_type"
    assert error.reason.startswith(f"unknown type {shown}; expected one of: ")
    assert "heartbeat" in error.reason


def test_text_that_is_not_json_is_rejected():
    error = rejected('{"type": "heartbeat", ')
    assert error.kind == "invalid_json"
    assert "not valid JSON" in error.reason


def test_text_holding_a_lone_surrogate_is_rejected():
    error = rejected('{"type": "heartbeat", "instance_id": "a\ud800"}')
    assert (error.kind, error.reason) == (
        "invalid_json",
        "message text cannot be encoded as UTF-8 (it holds a lone surrogate)",
    )


def test_a_contract_error_survives_pickling():
    error = pickle.loads(pickle.dumps(rejected("[]")))
    assert (error.kind, error.reason) == (
        "not_object",
        "message is a JSON array, expected an object (got [])",
    )


def test_wrong_field_types_are_rejected_naming_path_and_value():
    error = rejected(json.dumps(detection(patterns="phoenix")))
    assert (error.kind, error.reason) == (
        "invalid_fields",
        "pattern_detection: patterns = 'phoenix': must be a valid array",
    )
    error = rejected(json.dumps(detection(patterns=["phoenix"])))
    assert error.reason == "pattern_detection: patterns[0] = 'phoenix': must be an object"


def test_long_values_are_truncated_in_reasons():
    error = rejected(with_pattern(confidence="z" * 5000))
    assert len(error.reason) < 250
    assert "zzz" in error.reason


def test_contract_error_is_a_value_error_whose_text_is_the_reason():
    error = rejected("[]")
    assert isinstance(error, ValueError)
    assert str(error) == error.reason
    assert error.kind in contracts.ERROR_KINDS


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), JSON_VALUES.map(json.dumps), st.binary(max_size=100)))
def test_arbitrary_input_never_raises_anything_but_a_contract_error(raw):
    try:
        parse_message(raw)
    except ContractError as error:
        assert error.kind in contracts.ERROR_KINDS and error.reason


# --- size and depth ------------------------------------------------------------------------------


def test_a_message_over_the_size_limit_is_rejected_naming_size_and_limit():
    raw = with_pattern(examples=["x" * 5000])
    size = len(raw.encode())
    error = rejected(raw, max_bytes=4096)
    assert (error.kind, error.reason) == (
        "too_large",
        f"message is {size} bytes, over the limit of 4096 bytes",
    )


def test_the_size_is_checked_before_parsing():
    assert rejected("[" * 5000, max_bytes=4096).kind == "too_large"


def test_the_size_limit_counts_utf8_bytes_not_characters():
    raw = with_pattern(name="日本" * 90)  # 180 characters, 540 bytes in the name
    assert len(raw) < 500 < len(raw.encode())
    assert rejected(raw, max_bytes=500).kind == "too_large"
    assert parse_message(raw, max_bytes=len(raw.encode())).patterns[0].name == "日本" * 90


def test_the_default_size_limit_is_one_mebibyte():
    raw = with_pattern(examples=["x" * 1_048_576])
    assert rejected(raw).kind == "too_large"


def test_ten_thousand_levels_of_nesting_are_rejected_without_recursion_error():
    raw = with_pattern(examples=["@"]).replace('"@"', "[" * 10_000 + "]" * 10_000)
    error = rejected(raw)
    assert error.kind == "too_deep"
    assert error.reason == "message nests 10004 levels deep, over the limit of 32"


def test_the_hostile_deep_nesting_sample_is_rejected_as_too_deep():
    assert rejected(HOSTILE_DEEP_NESTING).kind == "too_deep"


def test_nesting_up_to_the_limit_is_accepted():
    raw = with_pattern(examples=["@"]).replace('"@"', "[" * 28 + "]" * 28)  # 4 levels + 28 = 32
    assert contracts.nesting_depth(raw) == 32
    parse_message(raw, max_depth=32)
    assert rejected(raw, max_depth=31).kind == "too_deep"


def test_brackets_inside_strings_do_not_count_as_nesting():
    raw = with_pattern(examples=["[[[[{{{{" * 100, 'quote \\" [[[[ '])
    assert contracts.nesting_depth(raw) == 4
    assert parse_message(raw).patterns[0].examples[0].startswith("[[[[")


def test_depth_is_checked_before_json_validity():
    assert rejected("[" * 100).kind == "too_deep"


# --- queues --------------------------------------------------------------------------------------


def test_ingest_queues_accept_their_types():
    assert INGEST_TYPES == {
        "pattern_messages": frozenset({"pattern_detection", "code_analysis"}),
        "learned_patterns": frozenset({"learned_patterns", "learned_artifacts"}),
        "instance_heartbeat": frozenset({"heartbeat"}),
    }


@pytest.mark.parametrize(
    ("queue", "raw", "belongs"),
    [
        ("pattern_messages", VALID_SAMPLES_BY_QUEUE["instance_heartbeat"][0], "instance_heartbeat"),
        ("instance_heartbeat", VALID_SAMPLES_BY_QUEUE["pattern_messages"][0], "pattern_messages"),
        ("learned_patterns", VALID_SAMPLES_BY_QUEUE["pattern_messages"][3], "pattern_messages"),
        ("pattern_messages", VALID_SAMPLES_BY_QUEUE["learned_patterns"][1], "learned_patterns"),
    ],
)
def test_a_valid_type_on_the_wrong_ingest_queue_is_rejected_naming_both(queue, raw, belongs):
    with pytest.raises(ContractError) as info:
        parse_ingest(queue, raw)
    message_type = json.loads(raw)["type"]
    assert info.value.kind == "wrong_queue"
    assert f"type '{message_type}' does not belong on queue '{queue}'" in info.value.reason
    assert f"it goes to '{belongs}'" in info.value.reason


def test_a_hub_message_on_an_ingest_queue_is_a_wrong_queue_error():
    raw = json.dumps({"type": "learning_exported", "timestamp": TS, "branch": "b", "artifacts_count": 1})
    with pytest.raises(ContractError) as info:
        parse_ingest("pattern_messages", raw)
    assert info.value.kind == "wrong_queue"


def test_an_unknown_type_on_an_ingest_queue_lists_what_the_queue_accepts():
    with pytest.raises(ContractError) as info:
        parse_ingest("pattern_messages", json.dumps(detection(type="patterns")))
    assert info.value.reason == "unknown type 'patterns'; expected one of: code_analysis, pattern_detection"


def test_a_single_type_queue_reports_a_missing_type():
    raw = json.loads(VALID_SAMPLES_BY_QUEUE["instance_heartbeat"][0])
    del raw["type"]
    with pytest.raises(ContractError) as info:
        parse_ingest("instance_heartbeat", json.dumps(raw))
    assert info.value.kind == "missing_type"


def test_parse_ingest_refuses_a_queue_that_is_not_an_ingest_queue():
    with pytest.raises(ValueError, match="not an ingest queue") as info:
        parse_ingest("llm_requests", VALID_SAMPLES[0])
    assert not isinstance(info.value, ContractError)


# --- the bad-input corpus ------------------------------------------------------------------------

REQUIRED_CORPUS_KINDS = {
    "not_object",
    "missing_type",
    "unknown_type",
    "invalid_fields",
    "non_finite",
    "too_large",
    "bad_timestamp",
    "bad_instance_id",
    "too_deep",
    "bad_text",
    "wrong_queue",
}


def test_the_corpus_covers_every_kind_of_bad_input():
    assert {kind for kind, _ in BAD_INPUT_CORPUS} >= REQUIRED_CORPUS_KINDS


@pytest.mark.parametrize(
    ("kind", "raw"), BAD_INPUT_CORPUS, ids=[f"{i}-{k}" for i, (k, _) in enumerate(BAD_INPUT_CORPUS)]
)
def test_every_corpus_entry_is_rejected_on_the_pattern_queue_with_its_kind(kind, raw):
    with pytest.raises(ContractError) as info:
        parse_ingest(CORPUS_QUEUE, raw, max_bytes=CORPUS_MAX_BYTES)
    assert info.value.kind == kind
    assert len(info.value.reason) > 10


@pytest.mark.parametrize(("kind", "raw"), [c for c in BAD_INPUT_CORPUS if c[0] != "wrong_queue"])
def test_every_corpus_entry_but_wrong_queue_is_rejected_by_parse_message_too(kind, raw):
    assert rejected(raw, max_bytes=CORPUS_MAX_BYTES).kind == kind


def test_every_corpus_entry_is_json_that_postgresql_jsonb_accepts():
    for kind, raw in BAD_INPUT_CORPUS:
        assert "\\u0000" not in raw, kind
        value = json.loads(
            raw, parse_constant=lambda token, kind=kind: pytest.fail(f"{kind}: literal {token}")
        )
        json.dumps(value, allow_nan=False)  # no NaN / Infinity once decoded
        raw.encode("utf-8")  # no lone surrogates


def test_the_size_entry_is_valid_and_just_over_the_corpus_limit():
    [raw] = [raw for kind, raw in BAD_INPUT_CORPUS if kind == "too_large"]
    assert CORPUS_MAX_BYTES < len(raw.encode()) <= CORPUS_MAX_BYTES + 40
    assert parse_ingest(CORPUS_QUEUE, raw).type == "pattern_detection"
    assert all(len(raw.encode()) <= CORPUS_MAX_BYTES for kind, raw in BAD_INPUT_CORPUS if kind != "too_large")


# --- request / reply queues ----------------------------------------------------------------------


def test_every_request_and_reply_queue_has_a_model():
    assert set(QUEUE_MODELS) == {
        "llm_requests",
        "llm_results",
        "approval_requests",
        "approval_responses",
        "question_requests",
        "question_responses",
        "job_requests",
        "job_results",
    }


def test_the_seed_llm_request_without_type_parses_by_queue():
    message = parse_for_queue("llm_requests", '{"agent_id": "test", "task": "hello"}')
    assert isinstance(message, LlmRequest)
    assert (message.type, message.agent_id, message.task, message.request_id) == (
        "llm_request",
        "test",
        "hello",
        None,
    )


def test_a_reply_refers_to_its_request_by_request_id_or_correlation_id():
    assert parse_for_queue("llm_results", '{"request_id": "r-1", "result": "hi"}').request_id == "r-1"
    message = parse_for_queue("llm_results", '{"correlation_id": "r-2", "result": "hi"}')
    assert isinstance(message, LlmResult)
    assert message.request_id == "r-2"


def test_a_request_may_name_its_correlation_id_either_way():
    assert parse_for_queue("job_requests", '{"correlation_id": "j-1"}').request_id == "j-1"


@pytest.mark.parametrize("queue", ["llm_results", "approval_responses", "question_responses", "job_results"])
def test_a_reply_without_request_id_is_rejected(queue):
    with pytest.raises(ContractError) as info:
        parse_for_queue(queue, '{"result": "hi"}')
    assert info.value.kind == "invalid_fields"
    assert "request_id: required field is missing" in info.value.reason


def test_request_reply_messages_keep_extra_fields():
    message = parse_for_queue("approval_requests", '{"request_id": "a-1", "diff": "+x", "files": ["a.ex"]}')
    assert message.model_extra == {"diff": "+x", "files": ["a.ex"]}


def test_a_request_reply_message_naming_another_contract_type_is_on_the_wrong_queue():
    with pytest.raises(ContractError) as info:
        parse_for_queue("llm_requests", '{"type": "llm_result", "request_id": "r-1"}')
    assert info.value.kind == "wrong_queue"
    assert "'llm_results'" in info.value.reason


def test_a_service_own_type_value_is_kept():
    message = parse_for_queue("job_requests", '{"type": "embedding_pipeline", "request_id": "j-1"}')
    assert isinstance(message, JobRequest)
    assert message.type == "embedding_pipeline"


def test_request_reply_messages_with_a_type_parse_through_the_union():
    assert isinstance(parse_message('{"type": "llm_result", "request_id": "r-1"}'), LlmResult)


def test_request_reply_limits_apply_too():
    with pytest.raises(ContractError) as info:
        parse_for_queue("llm_requests", '{"task": ' + "[" * 100 + "]" * 100 + "}")
    assert info.value.kind == "too_deep"


def test_parse_for_queue_handles_ingest_inbox_and_template_queues():
    assert (
        parse_for_queue("instance_heartbeat", VALID_SAMPLES_BY_QUEUE["instance_heartbeat"][0]).type
        == "heartbeat"
    )
    raw = json.dumps(
        {"type": "templates_updated", "timestamp": TS, "git_url": "/srv/t.git", "commit": "abc123"}
    )
    assert isinstance(parse_for_queue("template_updates", raw), TemplatesUpdated)
    assert isinstance(parse_for_queue("inbox_singularity_1", raw), TemplatesUpdated)


def test_parse_for_queue_refuses_a_queue_without_contract():
    with pytest.raises(ValueError, match="no message contract for queue 'nope'"):
        parse_for_queue("nope", "{}")


# --- hub -> instance messages --------------------------------------------------------------------

HUB_SAMPLES = [
    AggregatedPatterns(
        type="aggregated_patterns",
        timestamp=NOON_UTC,
        patterns=[
            {
                "pattern_type": "framework",
                "name": "phoenix",
                "confidence": 0.9,
                "frequency": 12,
                "instance_count": 3,
                "score": 4.5,
                "rank": 1,
            }
        ],
        stats={"instances": 3},
    ),
    PatternsUpdated(
        type="patterns_updated", timestamp=NOON_UTC, git_url="https://example.org/t.git", commit="abc"
    ),
    TemplatesUpdated(
        type="templates_updated",
        timestamp=NOON_UTC,
        git_url="/srv/t.git",
        commit="abc123",
        updated_files=["a/b.ex"],
    ),
    LearningExported(
        type="learning_exported",
        timestamp=NOON_UTC,
        branch="feature/learned-patterns-20251025",
        pr_url="https://github.com/o/r/pull/1",
        artifacts_count=15,
    ),
    AggregatedLearning(
        type="aggregated_learning",
        timestamp=NOON_UTC,
        artifacts=[{"artifact_id": "tmpl-1", "content": {"a": 1}}],
    ),
]


@pytest.mark.parametrize("message", HUB_SAMPLES, ids=[m.type for m in HUB_SAMPLES])
def test_hub_messages_round_trip_through_json(message):
    assert message.source == "centralcloud"
    assert parse_message(message.model_dump_json()) == message
    assert parse_for_queue("inbox_singularity_1", message.model_dump_json()) == message


def test_learning_exported_pr_url_is_optional():
    raw = json.dumps({"type": "learning_exported", "timestamp": TS, "branch": "b", "artifacts_count": 0})
    assert parse_message(raw).pr_url is None


def test_patterns_updated_accepts_the_seed_field_name_url():
    raw = json.dumps({"type": "patterns_updated", "timestamp": TS, "url": "https://example.org/t.git"})
    assert parse_message(raw).git_url == "https://example.org/t.git"


def test_hub_messages_need_a_timestamp():
    raw = json.dumps({"type": "templates_updated", "git_url": "/srv/t.git"})
    assert rejected(raw).kind == "bad_timestamp"


# --- the union and the schemas -------------------------------------------------------------------


def test_the_union_covers_every_type():
    assert ALL_TYPES == {
        "pattern_detection", "code_analysis", "learned_patterns", "learned_artifacts", "heartbeat",
        "aggregated_patterns", "patterns_updated", "templates_updated", "learning_exported", "aggregated_learning",
        "pattern_learned",
        "llm_request", "llm_result", "approval_request", "approval_response",
        "question_request", "question_response", "job_request", "job_result",
    }  # fmt: skip
    assert set(MODEL_OF_TYPE) == ALL_TYPES


def test_committed_json_schemas_and_index_are_up_to_date(tmp_path):
    written = write_json_schemas(tmp_path / "schemas")
    committed = REPO / "docs"
    generated_names = sorted(p.name for p in (tmp_path / "schemas").glob("*.json"))
    assert generated_names == sorted(p.name for p in (committed / "schemas").glob("*.json")), (
        "run: python -m queue_assets.contracts.schema"
    )
    for path in written:
        relative = path.relative_to(tmp_path)
        assert (committed / relative).read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), (
            f"docs/{relative} is stale; run: python -m queue_assets.contracts.schema"
        )


def test_there_is_one_schema_per_type_plus_the_union_and_the_hub_llm_forms(tmp_path):
    write_json_schemas(tmp_path / "schemas")
    names = {p.stem for p in (tmp_path / "schemas").glob("*.json")}
    assert names == set(ALL_TYPES) | {
        "message",
        "hub_llm_request",
        "hub_llm_result",
        "enrichment_result",
        "hub_approval_request",
        "hub_approval_response",
    }
    union = json.loads((tmp_path / "schemas" / "message.json").read_text())
    assert set(union["discriminator"]["mapping"]) == set(ALL_TYPES)
    index = (tmp_path / "contracts.md").read_text()
    for type_name in ALL_TYPES:
        assert f"[{type_name}.json](schemas/{type_name}.json)" in index


def test_schema_generation_is_deterministic(tmp_path):
    first = [p.read_bytes() for p in write_json_schemas(tmp_path / "a" / "schemas")]
    second = [p.read_bytes() for p in write_json_schemas(tmp_path / "b" / "schemas")]
    assert first == second
