"""Fan-out on real PostgreSQL + pgmq: inboxes bound to hub topics, one copy per active instance.

Instances become known the way they do in production: a heartbeat sent to `instance_heartbeat`,
stored by the real ingest loop.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from queue_assets import contracts
from queue_assets.fanout import fan_out, hub_message, publish, sync_inboxes
from queue_assets.ingest.core import IngestConfig, ingest_queue
from queue_assets.sdk import HubClient
from queue_assets_tests.helpers import count, queue_depth, send_many, send_raw

CFG = IngestConfig(batch_size=100, visibility_timeout_s=30, max_attempts=3)
HOUR = 3600


def heartbeat(conn, instance_id: str, *, age_s: float = 0) -> None:
    """Send a heartbeat stamped `age_s` seconds ago and store it through the ingest loop."""
    ts = (datetime.now(UTC) - timedelta(seconds=age_s)).isoformat().replace("+00:00", "Z")
    send_raw(
        conn,
        "instance_heartbeat",
        json.dumps({"type": "heartbeat", "instance_id": instance_id, "timestamp": ts, "status": "ok"}),
    )
    result = ingest_queue(conn, "instance_heartbeat", CFG)
    assert result.stored == 1


def patterns_message(n: int = 1) -> dict:
    return hub_message(
        "aggregated_patterns",
        patterns=[
            {"pattern_type": "framework", "name": f"phoenix-{i}", "rank": i + 1, "score": 3.5}
            for i in range(n)
        ],
    )


def templates_message() -> dict:
    return hub_message(
        "templates_updated",
        git_url="/srv/git/templates_data.git",
        commit="abc1234",
        updated_files=["templates/elixir/genserver_cache.ex.eex"],
    )


def inbox(db_url: str, instance_id: str, limit: int = 100) -> list:
    with HubClient(db_url, instance_id) as client:
        return client.read_inbox(limit=limit, vt=60)


def test_three_active_instances_each_receive_exactly_one_copy_of_each_message(conn, db_url):
    for i in (1, 2, 3):
        heartbeat(conn, f"singularity-{i}")
    first = fan_out(conn, patterns_message(), HOUR)
    second = fan_out(conn, templates_message(), HOUR)
    conn.commit()
    assert (first.copies, second.copies) == (3, 3)
    assert first.sync.created == first.sync.bound == ["singularity-1", "singularity-2", "singularity-3"]
    for i in (1, 2, 3):
        got = inbox(db_url, f"singularity-{i}")
        assert sorted(m.type for m in got) == ["aggregated_patterns", "templates_updated"]


def test_a_stale_instance_receives_nothing_and_keeps_its_inbox(conn, db_url):
    for i in (1, 2, 3):
        heartbeat(conn, f"singularity-{i}")
    heartbeat(conn, "singularity-4", age_s=2 * HOUR)
    result = fan_out(conn, patterns_message(), HOUR)
    conn.commit()
    assert result.copies == 3
    assert result.sync.stale == ["singularity-4"]
    assert "singularity-4" in result.sync.created  # the inbox exists, it is just not bound
    assert queue_depth(conn, "inbox_singularity_4") == 0
    assert [len(inbox(db_url, f"singularity-{i}")) for i in (1, 2, 3)] == [1, 1, 1]


def test_a_stale_instance_receives_again_after_a_new_heartbeat(conn, db_url):
    heartbeat(conn, "singularity-1")
    heartbeat(conn, "singularity-4", age_s=2 * HOUR)
    fan_out(conn, patterns_message(1), HOUR)
    conn.commit()
    heartbeat(conn, "singularity-4")
    again = fan_out(conn, patterns_message(2), HOUR)
    conn.commit()
    assert again.copies == 2
    assert again.sync.bound == ["singularity-4"]
    got = inbox(db_url, "singularity-4")
    assert [len(m.message["patterns"]) for m in got] == [2]  # only what was published after it came back


def test_an_instance_that_goes_silent_is_unbound_and_its_unread_messages_stay(conn, db_url):
    heartbeat(conn, "singularity-1", age_s=300)
    assert fan_out(conn, patterns_message(), HOUR).copies == 1
    conn.commit()
    went_stale = sync_inboxes(conn, stale_after_s=60)  # now 300 s of silence is too long
    assert went_stale.unbound == ["singularity-1"]
    assert publish(conn, templates_message(), stale_after_s=60) == 0
    conn.commit()
    assert [m.type for m in inbox(db_url, "singularity-1")] == ["aggregated_patterns"]
    assert count(conn, "hub.instance_inboxes", "instance_id = 'singularity-1' AND state = 'stale'") == 1


def test_an_instance_known_only_from_pattern_messages_gets_an_inbox_but_no_messages(conn, db_url):
    send_raw(
        conn,
        "pattern_messages",
        json.dumps(
            {
                "type": "pattern_detection",
                "instance_id": "singularity-9",
                "timestamp": "2025-10-25T12:00:00Z",
                "patterns": [{"pattern_type": "code", "name": "retry"}],
            }
        ),
    )
    ingest_queue(conn, "pattern_messages", CFG)
    result = fan_out(conn, patterns_message(), HOUR)
    conn.commit()
    assert (result.copies, result.sync.created, result.sync.stale) == (
        0,
        ["singularity-9"],
        ["singularity-9"],
    )


def test_sync_is_idempotent(conn):
    for i in (1, 2):
        heartbeat(conn, f"singularity-{i}")
    sync_inboxes(conn, HOUR)
    again = sync_inboxes(conn, HOUR)
    conn.commit()
    assert (again.created, again.bound, again.unbound) == ([], [], [])
    assert again.active == ["singularity-1", "singularity-2"]
    assert count(conn, "pgmq.topic_bindings") == 2


def test_publish_returns_the_number_of_inboxes_and_sends_once_per_inbox(conn):
    for i in range(1, 6):
        heartbeat(conn, f"node-{i}")
    assert publish(conn, patterns_message(), stale_after_s=HOUR) == 5
    conn.commit()
    assert sum(queue_depth(conn, f"inbox_node_{i}") for i in range(1, 6)) == 5


def test_an_invalid_message_is_refused_with_its_reason_and_nothing_is_sent(conn):
    heartbeat(conn, "singularity-1")
    bad = hub_message("aggregated_patterns", patterns=[{"pattern_type": "gadget", "name": "x"}])
    with pytest.raises(contracts.ContractError, match="pattern_type"):
        fan_out(conn, bad, HOUR)
    conn.commit()
    assert count(conn, "pgmq.topic_bindings") == 0  # not even the inbox sync ran


def test_an_instance_to_hub_message_is_not_published_to_inboxes(conn):
    heartbeat(conn, "singularity-1")
    message = {"type": "heartbeat", "instance_id": "singularity-1", "timestamp": "2025-10-25T12:00:00Z"}
    with pytest.raises(contracts.ContractError, match="not a hub -> instance message"):
        publish(conn, message, stale_after_s=HOUR)


def test_a_routing_key_outside_the_hub_topics_is_refused(conn):
    with pytest.raises(ValueError, match="must start with 'hub.'"):
        publish(conn, patterns_message(), "other.aggregated_patterns", stale_after_s=HOUR)


def test_a_hand_edited_inbox_name_is_skipped_with_the_reason(conn):
    heartbeat(conn, "singularity-1")
    conn.execute(
        "UPDATE hub.instances SET inbox_queue = 'pattern_messages' WHERE instance_id = 'singularity-1'"
    )
    result = sync_inboxes(conn, HOUR)
    conn.commit()
    assert "its inbox is 'inbox_singularity_1'" in result.skipped["singularity-1"]
    assert count(conn, "pgmq.topic_bindings") == 0


def test_reading_an_inbox_the_hub_has_not_created_yet_is_empty(db_url):
    assert inbox(db_url, "singularity-77") == []


def test_an_archived_inbox_message_is_not_read_again(conn, db_url):
    heartbeat(conn, "singularity-1")
    publish(conn, patterns_message(), stale_after_s=HOUR)
    conn.commit()
    with HubClient(db_url, "singularity-1") as client:
        (msg,) = client.read_inbox(vt=0)
        assert client.archive_inbox(msg.msg_id) is True
        assert client.read_inbox(vt=0) == []
    assert count(conn, "pgmq.a_inbox_singularity_1") == 1


def test_a_message_over_the_size_limit_is_refused(conn):
    heartbeat(conn, "singularity-1")
    huge = hub_message(
        "templates_updated", git_url="/srv/t.git", updated_files=[f"f{i:07d}" * 40 for i in range(4000)]
    )
    with pytest.raises(contracts.ContractError, match="over the limit of 1048576 bytes"):
        publish(conn, huge, stale_after_s=HOUR)


def many_heartbeats(conn, n: int) -> None:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    send_many(
        conn,
        "instance_heartbeat",
        [json.dumps({"type": "heartbeat", "instance_id": f"node-{i}", "timestamp": now}) for i in range(n)],
    )
    assert ingest_queue(conn, "instance_heartbeat", CFG).stored == n


def test_a_large_fleet_gets_its_inboxes_in_several_transactions(conn):
    from queue_assets.fanout import CREATE_BATCH

    many_heartbeats(conn, 2 * CREATE_BATCH + 10)
    result = sync_inboxes(conn, HOUR)
    assert len(result.created) == len(result.bound) == 2 * CREATE_BATCH + 10
    assert publish(conn, patterns_message(), stale_after_s=HOUR) == 2 * CREATE_BATCH + 10


def test_inside_an_open_transaction_a_large_sync_is_refused_with_what_to_do(conn):
    from queue_assets.fanout import CREATE_BATCH

    many_heartbeats(conn, CREATE_BATCH + 1)
    conn.execute("SELECT 1")  # the caller's transaction is open
    with pytest.raises(
        RuntimeError, match="call sync_inboxes on a connection with no open transaction first"
    ):
        sync_inboxes(conn, HOUR)
