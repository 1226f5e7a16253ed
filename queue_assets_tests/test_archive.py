"""Archive analytics on real PostgreSQL + pgmq: stable schemas, filters, request/reply pairing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from queue_assets.contracts import ContractError, LlmRequest, PatternDetection
from queue_assets.names import InvalidNameError
from queue_assets.operations.archive import (
    MESSAGE_COLUMNS,
    PAIR_COLUMNS,
    UNANSWERED_COLUMNS,
    ArchiveQueryError,
    count_unanswered,
    find_unanswered,
    load_request_pairs,
    read_archive,
    read_messages,
    to_models,
)
from queue_assets_tests.helpers import pattern_message
from queue_assets_tests.ops_corpus import put

T = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)


def h(hours: float) -> datetime:
    return T - timedelta(hours=hours)


def _dtypes(frame: pd.DataFrame) -> dict[str, str]:
    return {c: str(t) for c, t in frame.dtypes.items()}


def test_an_empty_archive_reads_as_a_frame_with_the_fixed_schema(conn):
    frame = read_archive(conn, "llm_requests")
    assert frame.empty
    assert _dtypes(frame) == MESSAGE_COLUMNS


def test_a_frame_with_rows_has_the_same_schema(conn):
    put(conn, "llm_requests", {"request_id": "r1", "agent_id": "a1"}, enqueued_at=h(2), archived_at=h(1))
    put(conn, "llm_requests", {"request_id": "r2"}, enqueued_at=h(1))
    frame = read_messages(conn, "llm_requests")
    assert len(frame) == 2
    assert _dtypes(frame) == MESSAGE_COLUMNS


def test_live_and_archived_messages_are_both_read_and_marked(conn):
    put(conn, "llm_requests", {"request_id": "old"}, enqueued_at=h(3), archived_at=h(2))
    put(conn, "llm_requests", {"request_id": "new"}, enqueued_at=h(1))
    frame = read_messages(conn, "llm_requests")
    assert list(frame["request_id"]) == ["old", "new"]
    assert list(frame["live"]) == [False, True]
    assert frame["archived_at"].isna().tolist() == [False, True]
    assert list(read_archive(conn, "llm_requests")["request_id"]) == ["old"]


def test_time_filter_applies_to_enqueued_at(conn):
    for hours in (30, 20, 10):
        put(conn, "llm_requests", {"request_id": f"r{hours}"}, enqueued_at=h(hours), archived_at=h(hours - 1))
    frame = read_archive(conn, "llm_requests", since=h(25), until=h(10))
    assert list(frame["request_id"]) == ["r20"]


def test_type_filter_uses_the_queue_contract_type_for_untyped_messages(conn):
    put(conn, "llm_requests", {"task": "untyped"}, enqueued_at=h(1), archived_at=h(1))
    put(conn, "llm_requests", {"type": "custom_kind", "task": "typed"}, enqueued_at=h(1), archived_at=h(1))
    frame = read_archive(conn, "llm_requests", message_type="llm_request")
    assert [m["task"] for m in frame["message"]] == ["untyped"]
    assert list(frame["message_type"]) == ["llm_request"]


def test_instance_filter_matches_instance_id_or_source(conn):
    q = "pattern_messages"
    put(
        conn,
        q,
        {"type": "pattern_detection", "instance_id": "singularity-1"},
        enqueued_at=h(1),
        archived_at=h(1),
    )
    put(conn, q, {"type": "pattern_detection", "source": "singularity-1"}, enqueued_at=h(1), archived_at=h(1))
    put(
        conn,
        q,
        {"type": "pattern_detection", "instance_id": "singularity-2"},
        enqueued_at=h(1),
        archived_at=h(1),
    )
    frame = read_archive(conn, q, instance="singularity-1")
    assert len(frame) == 2 and set(frame["instance_id"]) == {"singularity-1"}


@pytest.mark.parametrize("name", ["llm_requests'; DROP TABLE hub.instances; --", "../a_llm_requests", 'a"b'])
def test_a_hostile_queue_name_is_refused_before_any_sql(conn, name):
    with pytest.raises(InvalidNameError, match="is not allowed"):
        read_archive(conn, name)
    assert conn.execute("SELECT to_regclass('hub.instances') IS NOT NULL").fetchone()[0]


def test_a_queue_that_does_not_exist_is_named_in_the_error(conn):
    with pytest.raises(ArchiveQueryError, match="'no_such_queue' does not exist"):
        read_archive(conn, "no_such_queue")


def test_naive_datetimes_are_refused(conn):
    with pytest.raises(ArchiveQueryError, match="timezone-aware"):
        read_archive(conn, "llm_requests", since=datetime(2030, 1, 1))


def test_rows_become_contract_models(conn):
    put(conn, "llm_requests", {"request_id": "r1", "task": "t"}, enqueued_at=h(1), archived_at=h(1))
    raw = pattern_message("singularity-1", 1)
    put(conn, "pattern_messages", json.loads(raw), enqueued_at=h(1), archived_at=h(1))
    put(conn, "pattern_messages", {"type": "pattern_detection"}, enqueued_at=h(1), archived_at=h(1))
    [(_, llm)] = to_models(read_archive(conn, "llm_requests"))
    assert isinstance(llm, LlmRequest) and llm.request_id == "r1"
    (_, good), (_, bad) = to_models(read_archive(conn, "pattern_messages"))
    assert isinstance(good, PatternDetection)
    assert isinstance(bad, ContractError)


@pytest.fixture
def conversation(conn):
    """LLM requests: answered (archived reply), answered (live reply), unanswered old, unanswered recent."""
    put(conn, "llm_requests", {"request_id": "a", "agent_id": "x"}, enqueued_at=h(5), archived_at=h(4.9))
    put(conn, "llm_results", {"request_id": "a", "result": 1}, enqueued_at=h(4.8), archived_at=h(4.7))
    put(conn, "llm_requests", {"request_id": "b"}, enqueued_at=h(4))
    put(conn, "llm_results", {"correlation_id": "b", "result": 2}, enqueued_at=h(4) + timedelta(seconds=30))
    put(conn, "llm_requests", {"request_id": "c", "agent_id": "y"}, enqueued_at=h(3), archived_at=h(2.9))
    put(conn, "llm_requests", {"request_id": "d"}, enqueued_at=h(0.05))
    put(conn, "llm_requests", {"task": "no id"}, enqueued_at=h(2))  # cannot be paired
    put(conn, "llm_results", {"request_id": "a", "result": "late duplicate"}, enqueued_at=h(1))


def test_requests_pair_with_replies_live_or_archived(conn, conversation):
    pairs = load_request_pairs(conn, "llm_requests", since=h(24))
    assert _dtypes(pairs) == PAIR_COLUMNS
    assert list(pairs["request_id"]) == ["a", "b", "c", "d"]
    assert list(pairs["answered"]) == [True, True, False, False]
    assert list(pairs["reply_live"].astype(object)) == [False, True, pd.NA, pd.NA]
    assert pairs["latency_s"].iloc[0] == pytest.approx(0.2 * 3600)  # the first reply counts, not the late one
    assert pairs["latency_s"].iloc[1] == pytest.approx(30.0)


def test_unanswered_keeps_only_requests_older_than_the_timeout(conn, conversation):
    missing = find_unanswered(
        conn, "llm_requests", timeout=timedelta(minutes=15), lookback=timedelta(days=1), as_of=T
    )
    assert list(missing["request_id"]) == ["c"]
    assert list(missing["instance_id"]) == ["y"]


def test_sql_count_of_unanswered_agrees_with_the_dataframe_pairing(conn, conversation):
    for timeout in (timedelta(minutes=1), timedelta(minutes=15), timedelta(hours=3.5)):
        frame = find_unanswered(conn, "llm_requests", timeout=timeout, lookback=timedelta(days=1), as_of=T)
        n, sample = count_unanswered(
            conn, "llm_requests", timeout=timeout, lookback=timedelta(days=1), as_of=T
        )
        assert n == len(frame)
        assert list(sample["request_id"]) == list(frame["request_id"])
        assert _dtypes(sample) == UNANSWERED_COLUMNS


def test_pairing_an_empty_queue_gives_the_fixed_schema(conn):
    pairs = load_request_pairs(conn, "job_requests", since=h(24))
    assert pairs.empty and _dtypes(pairs) == PAIR_COLUMNS


def test_pairing_refuses_a_queue_that_is_not_a_request_queue(conn):
    with pytest.raises(ArchiveQueryError, match="'llm_results' is not a request queue"):
        load_request_pairs(conn, "llm_results", since=h(24))
