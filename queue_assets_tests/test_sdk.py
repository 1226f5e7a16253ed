"""The producer SDK on real pgmq: publish, idempotency keys, request/reply, local validation."""

from __future__ import annotations

import pytest
from psycopg import pq

from queue_assets.contracts import ContractError
from queue_assets.db import make_pgmq
from queue_assets.ingest.core import IngestConfig, ingest_queue
from queue_assets.sdk import HubClient, RequestReplyClient
from queue_assets_tests.helpers import count, queue_depth

PATTERN = {"pattern_type": "framework", "name": "phoenix", "confidence": 0.92, "language": "elixir"}


def test_published_messages_of_every_kind_are_ingested(conn, db_url):
    with HubClient(db_url, "singularity-1") as hub:
        hub.publish_patterns([PATTERN])
        hub.publish_code_analysis({"files": 3})
        hub.publish_learned_patterns(
            [{"artifact_id": "tmpl-a", "artifact_type": "template"}], usage_count=5, success_rate=0.8
        )
        hub.heartbeat(version="1.4.0")
    for q in ("pattern_messages", "learned_patterns", "instance_heartbeat"):
        assert ingest_queue(conn, q, IngestConfig()).dead_lettered == 0
    assert count(conn, "hub.pattern_observations") == 1
    assert count(conn, "hub.code_analyses") == 1
    assert count(conn, "hub.learned_artifacts") == 1
    assert conn.execute("SELECT version FROM hub.instances").fetchone()[0] == "1.4.0"


def test_a_retried_send_with_the_same_idempotency_key_is_stored_once(conn, db_url):
    with HubClient(db_url, "singularity-1") as hub:
        hub.publish_patterns([PATTERN], idempotency_key="scan-42")
        hub.publish_patterns([PATTERN], idempotency_key="scan-42")
    result = ingest_queue(conn, "pattern_messages", IngestConfig())
    assert (result.stored, result.duplicates) == (1, 1)


def test_a_bad_message_is_refused_before_it_is_sent(conn, db_url):
    with HubClient(db_url, "singularity-1") as hub:
        with pytest.raises(ContractError, match=r"confidence = 1\.7"):
            hub.publish_patterns([{**PATTERN, "confidence": 1.7}])
        with pytest.raises(ContractError, match="NaN|Out of range"):
            hub.publish_patterns([{**PATTERN, "confidence": float("nan")}])
    assert queue_depth(conn, "pattern_messages") == 0


def test_an_unsafe_instance_id_is_refused_by_the_client():
    with pytest.raises(ValueError, match="instance id"):
        HubClient("postgresql://unused@127.0.0.1:1/x", "../etc/passwd")


def test_request_reply_round_trip_then_archive_and_delete(conn, db_url):
    rr = RequestReplyClient(db_url)
    try:
        _, rid1 = rr.publish_request("llm", {"agent_id": "a1", "task": "summarise"})
        _, rid2 = rr.publish_request("llm", {"agent_id": "a1", "task": "translate"})
        rr.publish_reply("llm", {"request_id": rid1, "result": "ok"})
        rr.publish_reply("llm", {"request_id": rid2, "result": "ok"})
        replies = rr.read_replies("llm", limit=10)
        assert sorted(r.message["request_id"] for r in replies) == sorted([rid1, rid2])
        assert rr.archive_reply("llm", replies[0].msg_id)
        assert rr.delete_reply("llm", replies[1].msg_id)
    finally:
        rr.close()
    assert queue_depth(conn, "llm_requests") == 2
    assert queue_depth(conn, "llm_results") == 0
    assert count(conn, "pgmq.a_llm_results") == 1


def test_unknown_request_kind_is_refused_with_the_choices(db_url):
    rr = RequestReplyClient(db_url)
    try:
        with pytest.raises(
            ValueError, match="unknown request kind 'sms'; expected one of: approval, job, llm, question"
        ):
            rr.publish_request("sms", {})
    finally:
        rr.close()


def test_reading_one_reply_returns_a_list_of_one(db_url):
    rr = RequestReplyClient(db_url)
    try:
        _, rid = rr.publish_request("job", {"agent_id": "a1", "task": "lint"})
        rr.publish_reply("job", {"request_id": rid, "result": "ok"})
        [reply] = rr.read_replies("job", limit=1)
        assert reply.message["request_id"] == rid
    finally:
        rr.close()


def _statements_sent(trace_file) -> list[str]:
    """The frontend messages that each cost a round trip (a simple Query, or a Sync), from a libpq trace."""
    lines = trace_file.read_text(errors="replace").splitlines()
    return [
        " ".join(line.split()[2:4])
        for line in lines
        if line.startswith("F") and line.split()[2] in ("Query", "Sync")
    ]


def test_a_publish_costs_the_round_trips_of_a_raw_pgmq_send(conn, db_url, tmp_path):
    """Breaks when the SDK's send adds a round trip to the official client's `send`, e.g. a separate
    connection check (an empty query) before the BEGIN: the latency a producer pays per message."""
    client = make_pgmq(db_url, pool_size=1)  # one connection: both sends are traced on it
    try:
        trace = tmp_path / "libpq.trace"
        with trace.open("w") as out:
            with client.pool.connection() as c:
                pgconn = c.pgconn
            pgconn.trace(out.fileno())
            pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
            client.send("pattern_messages", {"type": "heartbeat"}, headers={"idempotency_key": "raw"})
            raw = _statements_sent(trace)
            with HubClient(db_url, "singularity-1", client=client) as hub:
                hub.publish_patterns([PATTERN], idempotency_key="sdk")
            sdk = _statements_sent(trace)[len(raw) :]
            pgconn.untrace()
    finally:
        client.close()
    assert raw == ['Query "BEGIN"', "Sync", 'Query "COMMIT"']
    assert sdk == raw


def test_a_non_finite_number_in_a_free_form_field_is_refused_before_it_is_sent(conn, db_url):
    """Breaks when the SDK's serialiser turns NaN/Infinity into something valid (orjson writes them
    as `null`, json.dumps with allow_nan as the bare tokens): the publish must fail, naming the
    value, and nothing may reach the queue. The SDK sends the very text it validated."""
    with HubClient(db_url, "singularity-1") as hub:
        for bad in (float("nan"), float("inf"), float("-inf")):
            with pytest.raises(ContractError, match="NaN|Infinity|non-finite|not JSON compliant") as err:
                hub.publish_patterns([{**PATTERN, "score": bad}])
            assert err.value.kind == "non_finite"
    assert queue_depth(conn, "pattern_messages") == 0


def test_the_sdk_validates_against_one_model_with_the_queue_contracts_errors():
    """Breaks when `parse_ingest_as` (the SDK's check, one model instead of the queue's union) gives
    a bad message another error than `parse_ingest`, the queue's contract, gives it."""
    import json

    from queue_assets.contracts import parse_ingest, parse_ingest_as

    bad = [
        {
            "type": "pattern_detection",
            "instance_id": "i-1",
            "timestamp": "2025-10-25T12:00:00Z",
            "patterns": [{**PATTERN, "confidence": 1.7}],
        },
        {"type": "pattern_detection", "instance_id": "i-1", "timestamp": "2025-10-25T12:00:00Z"},
        {"type": "pattern_detection", "instance_id": "i-1", "timestamp": "yesterday", "patterns": []},
        {"instance_id": "i-1", "timestamp": "2025-10-25T12:00:00Z", "patterns": [PATTERN]},
        {"type": "code_analysis", "instance_id": "i-1", "timestamp": "2025-10-25T12:00:00Z"},
    ]
    for message in bad:
        raw = json.dumps(message)
        with pytest.raises(ContractError) as expected:
            parse_ingest("pattern_messages", raw)
        with pytest.raises(ContractError) as got:
            parse_ingest_as("pattern_messages", "pattern_detection", raw)
        assert (got.value.kind, got.value.reason) == (expected.value.kind, expected.value.reason)
    good = json.dumps({**bad[0], "patterns": [PATTERN]})
    assert parse_ingest_as("pattern_messages", "pattern_detection", good) == parse_ingest(
        "pattern_messages", good
    )
