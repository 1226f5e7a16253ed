"""Fuzzing with hypothesis: the message contracts, the name validators, and the ingest loop on real pgmq.

Properties:
- `parse_message`, `parse_ingest` and `parse_for_queue` either return a model whose `type` belongs
  where it was parsed, or raise `ContractError` (with a known `kind` and a bounded reason); never
  anything else, whatever the text, bytes, size or depth limits;
- the name validators either return their input unchanged, and then it is a safe identifier and
  file name, or raise `InvalidNameError`;
- the ingest loop, fed arbitrary JSON documents that jsonb accepts (plus valid and near-valid
  messages) with arbitrary headers, never crashes; every message ends stored, duplicate (same
  idempotency key) or dead-lettered, exactly as the contract says, and every dead letter is in the DLQ.

The default example counts keep each test to a few seconds. For a longer hunt, multiply them:
`QUEUE_ASSETS_FUZZ_SCALE=50 .venv/bin/pytest queue_assets_tests/test_fuzz.py`.
"""

from __future__ import annotations

import copy
import json
import os
import re
import uuid
from pathlib import PurePosixPath

import psycopg
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from psycopg import sql

from queue_assets import security
from queue_assets.contracts import (
    ALL_TYPES,
    ERROR_KINDS,
    INGEST_TYPES,
    QUEUE_MODELS,
    ContractError,
    parse_for_queue,
    parse_ingest,
    parse_message,
)
from queue_assets.ingest.core import MAX_IDEMPOTENCY_KEY, IngestConfig, ingest_queue
from queue_assets.names import (
    PGMQ_MAX_QUEUE_NAME,
    InvalidNameError,
    dlq_for,
    inbox_queue_for,
    validate_instance_id,
    validate_queue_name,
)
from queue_assets.queues import CONSUMED_QUEUES
from queue_assets_tests.corpus import VALID_SAMPLES, VALID_SAMPLES_BY_QUEUE

SCALE = max(1, int(os.environ.get("QUEUE_ASSETS_FUZZ_SCALE", "1")))
MAX_REASON_CHARS = 2000


def fuzz(examples: int):
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


# --- strategies ----------------------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=30)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=10), c, max_size=5),
    max_leaves=25,
)
INTERESTING_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "\n",
        "\x00",
        "\u202e",
        "\u2066",
        "NaN",
        "Infinity",
        "-inf",
        "1e400",
        "2025-10-25T12:00:00Z",
        "2025-13-45T99:99:99Z",
        "0000-01-01T00:00:00Z",
        "singularity-1",
        "singularity-1\n",
        "../../etc/passwd",
        "a" * 300,
        "é",
        "日本",
        "\ud800x",
        "null",
        "framework",
        "inbox_x",
        "DROP TABLE hub.instances; --",
    ]
) | st.text(max_size=40)
FIELD_VALUES = JSON_VALUES | INTERESTING_STRINGS | st.sampled_from(sorted(ALL_TYPES))
SAMPLES = [json.loads(raw) for raw in VALID_SAMPLES]


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


@st.composite
def mutated_messages(draw, samples=SAMPLES, values=FIELD_VALUES):
    """A valid message with a few fields replaced, removed or added: gets deep into the validators."""
    message = copy.deepcopy(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = [p for p in _paths(message) if p]
        if not paths or not isinstance(message, dict):
            break
        path = draw(st.sampled_from(paths))
        parent = message
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(values)
        elif isinstance(parent, list):
            parent.append(draw(values))
    return message


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False)


RAW_INPUTS = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300),
    JSON_VALUES.map(_dumps),
    mutated_messages().map(_dumps),
    mutated_messages().map(lambda m: _dumps(m).encode("utf-8", "surrogatepass")),
    st.sampled_from(VALID_SAMPLES),
)
LIMITS = st.fixed_dictionaries(
    {}, optional={"max_bytes": st.integers(1, 5000), "max_depth": st.integers(1, 40)}
)
QUEUES_WITH_CONTRACTS = sorted([*INGEST_TYPES, *QUEUE_MODELS, "template_updates", "inbox_singularity_1"])


def check_outcome(call, accepted_types):
    """Run a parser: a model of an accepted type, or a well-formed ContractError; nothing else."""
    try:
        model = call()
    except ContractError as exc:
        assert exc.kind in ERROR_KINDS, exc.kind
        assert exc.reason and len(exc.reason) <= MAX_REASON_CHARS, len(exc.reason)
        return None
    assert getattr(model, "type", None) in accepted_types, getattr(model, "type", None)
    return model


# --- contracts -----------------------------------------------------------------------------------


@fuzz(200)
@given(RAW_INPUTS, LIMITS)
def test_parse_message_returns_a_message_or_raises_contract_error(raw, limits):
    check_outcome(lambda: parse_message(raw, **limits), ALL_TYPES)


@fuzz(200)
@given(st.sampled_from(CONSUMED_QUEUES), RAW_INPUTS, LIMITS)
def test_parse_ingest_accepts_only_the_queues_own_types(queue, raw, limits):
    check_outcome(lambda: parse_ingest(queue, raw, **limits), INGEST_TYPES[queue])


@fuzz(200)
@given(st.sampled_from(QUEUES_WITH_CONTRACTS), RAW_INPUTS, LIMITS)
def test_parse_for_queue_returns_a_model_or_raises_contract_error(queue, raw, limits):
    try:
        parse_for_queue(queue, raw, **limits)
    except ContractError as exc:
        assert exc.kind in ERROR_KINDS and exc.reason and len(exc.reason) <= MAX_REASON_CHARS


@fuzz(100)
@given(st.sampled_from(sorted(VALID_SAMPLES_BY_QUEUE)), st.data())
def test_an_accepted_ingest_message_is_accepted_again_after_a_json_round_trip(queue, data):
    raw = data.draw(
        st.sampled_from(VALID_SAMPLES_BY_QUEUE[queue])
        | mutated_messages([json.loads(r) for r in VALID_SAMPLES_BY_QUEUE[queue]]).map(_dumps)
    )
    model = check_outcome(lambda: parse_ingest(queue, raw), INGEST_TYPES[queue])
    assume(model is not None)
    again = parse_ingest(queue, json.dumps(model.model_dump(mode="json"), allow_nan=False))
    assert again.type == model.type and again.instance == model.instance


# --- names ---------------------------------------------------------------------------------------

NAME_CHARS = st.sampled_from(list("abcxyzAZ019_-./\\ \t\n\r\x00;'\"$%é") + ["\u0130", "\u212a", "ı"])
NAMEISH = st.one_of(
    st.text(NAME_CHARS, max_size=60),
    st.text(max_size=60),
    st.from_regex(r"[a-z][a-z0-9_]{0,50}", fullmatch=True).flatmap(
        lambda s: st.sampled_from([s, s + "\n", "\n" + s, s + " ", s.upper()])
    ),
)
OBJECTS = (
    NAMEISH | st.none() | st.integers() | st.binary(max_size=10) | st.lists(st.text(max_size=3), max_size=2)
)
SAFE_QUEUE = re.compile(r"[a-z][a-z0-9_]*")
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _safe_file_name(name: str) -> bool:
    return (
        PurePosixPath(name).name == name
        and name not in (".", "..")
        and not name.startswith("-")
        and "/" not in name
        and "\\" not in name
        and name.isascii()
        and name.isprintable()
    )


@fuzz(500)
@given(OBJECTS)
@example("pattern_messages\n")  # found by this test: `$` in a `re.match` pattern accepts a trailing newline
def test_validate_queue_name_accepts_only_safe_identifiers(name):
    try:
        got = validate_queue_name(name)
    except InvalidNameError:
        return
    assert got is name
    assert SAFE_QUEUE.fullmatch(got) and len(got) <= PGMQ_MAX_QUEUE_NAME and _safe_file_name(got)


@fuzz(500)
@given(OBJECTS)
@example("singularity-1\n")
def test_validate_instance_id_accepts_only_safe_ids_whose_derived_names_are_safe(instance_id):
    try:
        got = validate_instance_id(instance_id)
    except InvalidNameError:
        return
    assert got is instance_id and SAFE_ID.fullmatch(got) and _safe_file_name(got)
    inbox = inbox_queue_for(got)
    assert SAFE_QUEUE.fullmatch(inbox) and len(inbox) <= PGMQ_MAX_QUEUE_NAME and inbox.startswith("inbox_")
    role = security.instance_role_for(got)
    assert SAFE_QUEUE.fullmatch(role) and len(role) <= 63


@fuzz(300)
@given(OBJECTS)
def test_dlq_for_and_inbox_queue_for_raise_only_invalid_name_error(name):
    for derive in (dlq_for, inbox_queue_for, security.instance_role_for):
        try:
            got = derive(name)
        except InvalidNameError:
            continue
        assert SAFE_QUEUE.fullmatch(got) and len(got) <= 63


# --- the ingest loop on real pgmq ----------------------------------------------------------------

JSONB_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
JSONB_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | JSONB_TEXT,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(JSONB_TEXT, c, max_size=4),
    max_leaves=20,
)

JSONB_FIELD_VALUES = JSONB_VALUES | INTERESTING_STRINGS.filter(
    lambda t: "\x00" not in t and "\ud800" not in t
)


def _jsonb_safe(value) -> bool:
    try:
        text = json.dumps(value, allow_nan=False)
    except ValueError:  # NaN/Infinity: not JSON, so not something a producer can put in jsonb
        return False
    return "\\u0000" not in text and not re.search(r"\\ud[89a-f]", text)


@st.composite
def ingest_messages(draw, queue: str, key_prefix: str):
    own = [json.loads(r) for r in VALID_SAMPLES_BY_QUEUE[queue]]
    body = draw(
        st.one_of(
            JSONB_VALUES,
            st.sampled_from(own),
            mutated_messages(own, JSONB_FIELD_VALUES),
            mutated_messages(SAMPLES, JSONB_FIELD_VALUES),
        )
    )
    headers = draw(
        st.one_of(
            st.none(),
            JSONB_VALUES,
            st.fixed_dictionaries(
                {"idempotency_key": st.sampled_from(["k1", "k2", "k3"]).map(lambda k: key_prefix + k)}
            ),
            st.fixed_dictionaries(
                {"idempotency_key": JSONB_VALUES | st.just("x" * (MAX_IDEMPOTENCY_KEY + 1))}
            ),
        )
    )
    assume(_jsonb_safe(body) and _jsonb_safe(headers))
    return body, headers


def _header_ok(headers) -> tuple[bool, str | None]:
    """The ingest's header rule, restated: an object (or none) whose idempotency_key, if present,
    is a non-empty string of at most MAX_IDEMPOTENCY_KEY characters."""
    if headers is None:
        return True, None
    if not isinstance(headers, dict):
        return False, None
    key = headers.get("idempotency_key")
    if key is None:
        return True, None
    if not isinstance(key, str) or not key or len(key) > MAX_IDEMPOTENCY_KEY:
        return False, None
    return True, key


@pytest.fixture
def queue_conn(db_url):
    with psycopg.connect(db_url) as c:
        yield c


def ingest_and_check(conn: psycopg.Connection, queue: str, batch: list, batch_size: int) -> dict[str, int]:
    """Send `batch` ((body, headers) pairs), run the ingest loop, and check every message's fate
    against an oracle built from the contract and the header rule. Returns the outcome counts."""
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT * FROM pgmq.send_batch(%s, %s::jsonb[], %s::jsonb[])",
            (
                queue,
                [json.dumps(b) for b, _ in batch],
                [json.dumps(h) if h is not None else None for _, h in batch],
            ),
        ).fetchall()
    ]
    conn.commit()
    result = ingest_queue(conn, queue, IngestConfig(batch_size=batch_size, visibility_timeout_s=30))

    # The oracle judges what jsonb stored (the text the hub read), in msg_id order.
    archived = dict(
        conn.execute(
            sql.SQL("SELECT msg_id, message::text FROM {} WHERE msg_id = ANY(%s)").format(
                sql.Identifier("pgmq", f"a_{queue}")
            ),
            (ids,),
        ).fetchall()
    )
    expected, seen_keys = {}, set()
    for msg_id, (_, headers) in zip(ids, batch, strict=True):
        ok, key = _header_ok(headers)
        try:
            model = parse_ingest(queue, archived[msg_id])
        except ContractError:
            ok = False
        if not ok:
            expected[msg_id] = "dead_lettered"
        elif key is not None and (model.instance, key) in seen_keys:
            expected[msg_id] = "duplicate"
        else:
            if key is not None:
                seen_keys.add((model.instance, key))
            expected[msg_id] = "stored"
    ledger = dict(
        conn.execute(
            "SELECT msg_id, outcome FROM hub.ingest_ledger WHERE queue = %s AND msg_id = ANY(%s)",
            (queue, ids),
        ).fetchall()
    )
    dead = sorted(
        r[0]
        for r in conn.execute(
            sql.SQL(
                "SELECT (headers->>'x-dlq-source-msg-id')::bigint FROM {}"
                " WHERE (headers->>'x-dlq-source-msg-id')::bigint = ANY(%s)"
            ).format(sql.Identifier("pgmq", f"q_{queue}_dlq")),
            (ids,),
        ).fetchall()
    )
    depth = conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("pgmq", f"q_{queue}"))
    ).fetchone()[0]
    conn.commit()

    outcomes = {o: list(expected.values()).count(o) for o in ("stored", "duplicate", "dead_lettered")}
    assert len(archived) == len(ids) and depth == 0  # every message archived, none left behind
    assert ledger == expected
    assert dead == sorted(i for i, o in expected.items() if o == "dead_lettered")
    assert (result.read, result.stored, result.duplicates, result.dead_lettered) == (
        len(ids),
        outcomes["stored"],
        outcomes["duplicate"],
        outcomes["dead_lettered"],
    )
    return outcomes


@pytest.mark.parametrize("queue", CONSUMED_QUEUES)
def test_ingest_loop_stores_or_dead_letters_every_fuzzed_message_exactly_once(queue_conn, queue):
    # First a fixed batch with every outcome, so the oracle itself is known to tell them apart.
    valid = json.loads(VALID_SAMPLES_BY_QUEUE[queue][0])
    key = {"idempotency_key": f"fixed-{uuid.uuid4().hex}"}
    fixed = [
        (valid, key),
        (valid, key),
        (valid, None),
        ([1, 2], None),
        (valid, ["not", "an", "object"]),
        ({**valid, "timestamp": "yesterday"}, None),
        (valid, {"idempotency_key": ""}),
    ]
    assert ingest_and_check(queue_conn, queue, fixed, 3) == {"stored": 2, "duplicate": 1, "dead_lettered": 4}

    @fuzz(10)
    @given(st.data(), st.integers(min_value=1, max_value=8))
    def run(data, batch_size):
        prefix = uuid.uuid4().hex[:8] + "-"
        batch = data.draw(st.lists(ingest_messages(queue, prefix), min_size=1, max_size=25))
        ingest_and_check(queue_conn, queue, batch, batch_size)

    run()
