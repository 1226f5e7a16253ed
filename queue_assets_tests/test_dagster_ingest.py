"""The Dagster layer of ingest: definitions load, sensors probe and request runs, real runs store rows."""

from __future__ import annotations

import json

import dagster as dg
import psycopg
import pytest

from queue_assets import embedded
from queue_assets.definitions import defs
from queue_assets.ingest.assets import INGEST_ASSETS
from queue_assets.ingest.sensors import next_request
from queue_assets.resources import SharedQueueResource
from queue_assets_tests.helpers import count, pattern_message, queue_depth, send_many, send_raw

UNREACHABLE = "postgresql://hub:topsecret@127.0.0.1:1/shared_queue"


def test_definitions_load_and_every_job_resolves():
    dg.Definitions.validate_loadable(defs)
    jobs = {j.name for j in defs.resolve_all_job_defs()}
    assert {
        "ingest_pattern_messages_job",
        "ingest_learned_patterns_job",
        "ingest_instance_heartbeat_job",
        "bootstrap_job",
    } <= jobs


def test_queues_are_upstream_of_the_ingest_assets():
    graph = defs.resolve_asset_graph()
    for queue, asset in (
        ("pattern_messages", "pattern_messages"),
        ("learned_patterns", "learned_patterns"),
        ("instance_heartbeat", "instance_heartbeats"),
    ):
        assert dg.AssetKey(["pgmq", queue]) in graph.get(dg.AssetKey(asset)).parent_keys


def _sensor(name: str) -> dg.SensorDefinition:
    return defs.resolve_sensor_def(name)


def _evaluate(name: str, url: str, cursor: str | None = None, instance=None):
    instance = instance or dg.DagsterInstance.ephemeral()
    ctx = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"shared_queue": SharedQueueResource(db_url=url)},
        definitions=defs,
    )
    return _sensor(name)(ctx), ctx


def test_sensor_skips_an_empty_queue_with_the_reason(db_url):
    result, _ = _evaluate("pattern_messages_sensor", db_url)
    assert isinstance(result, dg.SkipReason)
    assert "no visible messages" in result.skip_message


def test_sensor_requests_a_run_keyed_by_what_it_saw_and_never_reads(conn, db_url):
    send_many(conn, "pattern_messages", [pattern_message("singularity-1", i) for i in range(3)])
    result, ctx = _evaluate("pattern_messages_sensor", db_url)
    assert isinstance(result, dg.RunRequest)
    assert result.run_key == "pattern_messages:3"
    assert json.loads(ctx.cursor) == {"newest": 3, "seq": 0, "sent": 3}
    assert conn.execute("SELECT max(read_ct) FROM pgmq.q_pattern_messages").fetchone()[0] == 0


def test_same_newest_message_gets_the_next_key_in_sequence():
    key1, cur1 = next_request("q", 10, 5, None)
    key2, cur2 = next_request("q", 10, 5, cur1)
    key3, _ = next_request("q", 11, 5, cur2)
    assert (key1, key2, key3) == ("q:10", "q:10:1", "q:11")
    assert next_request("q", 10, 0, cur1) is None


def test_sensor_skips_with_a_clear_message_when_the_database_is_down_and_hides_the_password():
    result, _ = _evaluate("pattern_messages_sensor", UNREACHABLE)
    assert isinstance(result, dg.SkipReason)
    assert "cannot reach the shared_queue database at postgresql://hub:***@127.0.0.1:1" in result.skip_message
    assert "topsecret" not in result.skip_message


def _materialize(url: str, asset_name: str, instance=None) -> dg.ExecuteInProcessResult:
    asset = next(a for a in INGEST_ASSETS if a.key == dg.AssetKey(asset_name))
    return dg.materialize(
        [asset],
        resources={"shared_queue": SharedQueueResource(db_url=url)},
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_a_real_ingest_run_stores_rows_and_reports_counts(conn, db_url):
    send_many(
        conn, "pattern_messages", [pattern_message(f"singularity-{i % 2}", i) for i in range(10)] + ["[]"]
    )
    result = _materialize(db_url, "pattern_messages")
    assert result.success
    [mat] = result.asset_materializations_for_node("pattern_messages")
    md = mat.metadata
    assert (md["stored"].value, md["dead_lettered"].value, md["duplicates"].value) == (10, 1, 0)
    assert md["dlq_depth"].value == 1
    assert md["instances"].value == 2
    assert "singularity-0" in md["per_instance"].value
    assert count(conn, "hub.pattern_observations") == 20


def test_a_run_fails_with_a_clear_message_when_the_database_is_down():
    result = _materialize(UNREACHABLE, "pattern_messages")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    text = str(failure.step_failure_data.error)
    assert "cannot reach the shared_queue database" in text
    assert "topsecret" not in text


@pytest.fixture
def restartable_server():
    """A second embedded server we are allowed to stop and start again.

    It lives under the project's data folder, not pytest's tmp_path: as root, pgserver runs the
    server as an unprivileged user, which cannot enter pytest's 0700 temporary folders.
    """
    import shutil
    import uuid

    from queue_assets.settings import project_root

    data = project_root() / ".queue_assets" / f"test-restartable-{uuid.uuid4().hex[:8]}"
    urls = embedded.ensure_running(data)
    from queue_assets import bootstrap

    bootstrap.bootstrap(urls["shared_queue"])
    yield data, urls["shared_queue"]
    embedded.stop(data)
    shutil.rmtree(data, ignore_errors=True)


def test_sensor_and_run_recover_on_the_next_tick_after_the_database_comes_back(restartable_server):
    data, url = restartable_server
    with psycopg.connect(url) as c:
        send_raw(
            c,
            "instance_heartbeat",
            json.dumps(
                {"type": "heartbeat", "instance_id": "singularity-9", "timestamp": "2025-10-25T12:00:00Z"}
            ),
        )
    instance = dg.DagsterInstance.ephemeral()
    embedded.stop(data)
    down, ctx = _evaluate("instance_heartbeat_sensor", url, instance=instance)
    assert isinstance(down, dg.SkipReason) and "cannot reach" in down.skip_message
    assert not _materialize(url, "instance_heartbeats", instance).success
    embedded.ensure_running(data)
    up, _ = _evaluate("instance_heartbeat_sensor", url, cursor=ctx.cursor, instance=instance)
    assert isinstance(up, dg.RunRequest)
    assert _materialize(url, "instance_heartbeats", instance).success
    with psycopg.connect(url) as c:
        assert count(c, "hub.instances") == 1
        assert queue_depth(c, "instance_heartbeat") == 0


def test_ingest_jobs_carry_the_per_queue_tag_that_dagster_yaml_limits_to_two_runs():
    import yaml

    from queue_assets.ingest.sensors import INGEST_QUEUE_TAG
    from queue_assets.settings import project_root

    config = yaml.safe_load((project_root() / "dagster.yaml").read_text())
    [limit] = [
        t for t in config["concurrency"]["runs"]["tag_concurrency_limits"] if t["key"] == INGEST_QUEUE_TAG
    ]
    assert limit == {"key": INGEST_QUEUE_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 2}
    for queue in ("pattern_messages", "learned_patterns", "instance_heartbeat"):
        assert defs.resolve_job_def(f"ingest_{queue}_job").tags[INGEST_QUEUE_TAG] == queue
