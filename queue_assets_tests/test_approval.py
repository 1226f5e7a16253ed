"""A person in the loop (issue 12, seed 004's HITL queues): with QUEUE_ASSETS_PATTERN_APPROVAL=required
an enriched pattern is held and sent on approval_requests (reply_to hub_approval_responses); the
responses are ingested exactly once and make it approved or rejected, broadcast once. The HITL
bridge is simulated as a plain pgmq consumer that honours `reply_to`; PostgreSQL, pgmq and the
ingest loop are real."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from queue_assets.ingest.core import IngestConfig, ingest_queue
from queue_assets.patterns.enrichment import run_enrichment
from queue_assets.sdk import HubClient
from queue_assets.settings import Settings, SettingsError
from queue_assets_tests.helpers import count, dlq_messages, queue_depth, send_raw
from queue_assets_tests.test_enrichment import CFG, GOOD, ICFG, router
from queue_assets_tests.test_fanout import heartbeat, inbox
from queue_assets_tests.test_patterns import _ingest, _pattern_message, _query
from queue_assets_tests.test_security import Producers, denied


@pytest.fixture
def approval_required(monkeypatch):
    monkeypatch.setenv("QUEUE_ASSETS_PATTERN_APPROVAL", "required")


def bridge(conn, decide=lambda req: {"approved": True, "reviewer": "alice"}) -> list[dict]:
    """The simulated HITL bridge: read approval_requests, check reply_to, answer there."""
    rows = conn.execute("SELECT msg_id, message FROM pgmq.read('approval_requests', 30, 100)").fetchall()
    requests = []
    for msg_id, req in rows:
        assert req["reply_to"] == "hub_approval_responses" and req["agent_id"] == "centralcloud"
        reply = decide(req)
        if reply is not None:
            body = reply if isinstance(reply, str) else json.dumps({"request_id": req["request_id"], **reply})
            send_raw(conn, req["reply_to"], body)
        conn.execute("SELECT pgmq.archive('approval_requests', %s::bigint)", (msg_id,))
        requests.append(req)
    conn.commit()
    return requests


def _icfg() -> IngestConfig:
    """The ingest settings as a run builds them: QUEUE_ASSETS_PATTERN_APPROVAL from the environment
    (the `approval_required` fixture sets it), passed down like the rest."""
    return replace(ICFG, pattern_approval=Settings.from_env().pattern_approval)


def ingest_replies(conn):
    return ingest_queue(conn, "hub_llm_results", _icfg())


def ingest_responses(conn):
    return ingest_queue(conn, "hub_approval_responses", _icfg())


def pattern(conn, key="phoenix", ptype="framework"):
    row = conn.execute(
        "SELECT status, version, enrichment, approval, reviewed_by, review_reason"
        " FROM hub.patterns WHERE pattern_type = %s AND canonical_name = %s",
        (ptype, key),
    ).fetchone()
    conn.commit()
    return row


def learned(db_url, instance="singularity-0") -> list[dict]:
    return [m.message for m in inbox(db_url, instance) if m.message["type"] == "pattern_learned"]


def enriched_and_held(conn, instances=("singularity-0",)) -> dict:
    """A key reported by `instances`, enriched by the router, held for approval: the request sent."""
    for i in instances:
        heartbeat(conn, i)
    _ingest(conn, [_pattern_message(i, ["Phoenix"]) for i in instances])
    run_enrichment(conn, CFG)
    router(conn)
    assert ingest_replies(conn).stored == 1
    ((_, req),) = conn.execute("SELECT msg_id, message FROM pgmq.q_approval_requests").fetchall()
    conn.commit()
    return req


def test_an_enriched_pattern_is_held_for_a_person_and_reaches_no_instance(conn, db_url, approval_required):
    """Breaks if the enrichment is broadcast or served by query before a person approved it, or if
    the approval_request lacks reply_to, the pattern or the enrichment."""
    req = enriched_and_held(conn, ("singularity-0", "singularity-1"))
    assert req["type"] == "approval_request" and req["reply_to"] == "hub_approval_responses"
    task = req["task"]
    assert (task["kind"], task["pattern_type"], task["name"]) == ("pattern_approval", "framework", "phoenix")
    assert task["enrichment"] == GOOD and task["instances"] == 2
    assert task["provenance"]["request_id"].startswith("enrich-framework-phoenix-")
    assert "approved" in task["response_schema"]["properties"]
    assert learned(db_url) == [] and learned(db_url, "singularity-1") == []
    status, _, enrichment_doc, approval, _, _ = pattern(conn)
    assert (status, enrichment_doc, approval) == ("enriched", None, "pending")
    served = _query(conn, "framework", "phoenix")
    assert served["status"] == "enriched" and served["approval"] == "pending" and served["enrichment"] is None
    assert count(conn, "hub.pattern_approvals", "status = 'pending' AND proposal IS NOT NULL") == 1


def test_approval_publishes_the_pattern_as_approved_with_reviewer_once(conn, db_url, approval_required):
    """Breaks if an approval does not store the enrichment, bump the version, record the reviewer,
    or broadcast exactly one non-provisional copy to every inbox."""
    heartbeat(conn, "singularity-1")
    enriched_and_held(conn)
    held_version = pattern(conn)[1]
    (req,) = bridge(conn, lambda req: {"approved": True, "reviewer": "alice", "reason": "looks right"})
    result = ingest_responses(conn)
    assert (result.stored, result.dead_lettered) == (1, 0)
    status, version, enrichment_doc, approval, reviewer, reason = pattern(conn)
    assert (status, approval, reviewer, reason) == ("approved", "approved", "alice", "looks right")
    assert enrichment_doc == GOOD and version == held_version + 1
    for instance in ("singularity-0", "singularity-1"):
        (msg,) = learned(db_url, instance)
        assert msg["status"] == "approved" and msg["version"] == version
        assert msg["provisional"] is False  # one instance saw it, but a person approved it
        assert msg["reviewed_by"] == "alice" and msg["description"] == GOOD["description"]
    served = _query(conn, "framework", "Phoenix")
    assert (
        served["status"] == "approved" and served["enrichment"] == GOOD and served["reviewed_by"] == "alice"
    )
    conn.commit()  # the query's count of this hour is a row the SDK's query below updates too
    with HubClient(db_url, "singularity-1") as client:
        info = client.query_pattern("framework", "phoenix-framework")
    assert (info.status, info.approval, info.reviewed_by, info.enrichment) == (
        "approved",
        "approved",
        "alice",
        GOOD,
    )
    assert (
        count(conn, "hub.pattern_approvals", f"request_id = '{req['request_id']}' AND status = 'approved'")
        == 1
    )


def test_rejection_records_the_reason_and_broadcasts_no_content(conn, db_url, approval_required):
    """Breaks if a rejected enrichment is published (broadcast or query), or the reason is lost."""
    enriched_and_held(conn)
    bridge(conn, lambda req: {"approved": False, "reviewer": "bob", "reason": "describes another project"})
    assert ingest_responses(conn).stored == 1
    status, _, enrichment_doc, approval, reviewer, reason = pattern(conn)
    assert (status, approval, enrichment_doc, reviewer) == ("rejected", "rejected", None, "bob")
    assert reason == "describes another project"
    (msg,) = learned(db_url)
    assert msg["status"] == "rejected" and msg["description"] is None and msg["review_reason"] == reason
    assert _query(conn, "framework", "phoenix")["enrichment"] is None
    (proposal,) = conn.execute("SELECT proposal FROM hub.pattern_approvals").fetchone()
    assert proposal == GOOD  # what the person saw, kept for the record


def test_with_approval_off_nothing_is_sent_for_approval(conn, db_url, monkeypatch):
    """Breaks if the default (off) holds patterns or sends approval_requests."""
    monkeypatch.delenv("QUEUE_ASSETS_PATTERN_APPROVAL", raising=False)
    heartbeat(conn, "singularity-0")
    _ingest(conn, [_pattern_message("singularity-0", ["Phoenix"])])
    run_enrichment(conn, CFG)
    router(conn)
    ingest_replies(conn)
    assert queue_depth(conn, "approval_requests") == 0
    (msg,) = learned(db_url)
    assert msg["status"] == "enriched" and msg["provisional"] is True
    assert pattern(conn)[3] is None


def test_a_response_for_an_unknown_request_goes_to_the_dlq(conn, approval_required):
    enriched_and_held(conn)
    send_raw(
        conn,
        "hub_approval_responses",
        json.dumps({"request_id": "approve-nope", "approved": True, "reviewer": "eve"}),
    )
    result = ingest_responses(conn)
    assert (result.stored, result.dead_lettered) == (0, 1)
    ((_, headers),) = dlq_messages(conn, "hub_approval_responses")
    assert headers["x-dlq-kind"] == "unknown_request" and "approve-nope" in headers["x-dlq-reason"]
    assert pattern(conn)[3] == "pending"


def test_a_response_naming_another_pattern_than_its_request_goes_to_the_dlq(conn, approval_required):
    req = enriched_and_held(conn)
    send_raw(
        conn,
        "hub_approval_responses",
        json.dumps(
            {
                "request_id": req["request_id"],
                "approved": True,
                "reviewer": "eve",
                "pattern_type": "framework",
                "name": "ecto",
            }
        ),
    )
    assert ingest_responses(conn).dead_lettered == 1
    ((_, headers),) = dlq_messages(conn, "hub_approval_responses")
    assert headers["x-dlq-kind"] == "unknown_request" and "framework/ecto" in headers["x-dlq-reason"]
    assert pattern(conn)[3] == "pending"


def test_a_second_decision_for_an_approved_pattern_goes_to_the_dlq(conn, db_url, approval_required):
    """Breaks if a later, different response overturns a decision or broadcasts again."""
    heartbeat(conn, "singularity-0")
    req = enriched_and_held(conn)
    bridge(conn)
    ingest_responses(conn)
    version = pattern(conn)[1]
    send_raw(
        conn,
        "hub_approval_responses",
        json.dumps({"request_id": req["request_id"], "approved": False, "reviewer": "mallory"}),
    )
    result = ingest_responses(conn)
    assert (result.stored, result.dead_lettered) == (0, 1)
    ((_, headers),) = dlq_messages(conn, "hub_approval_responses")
    assert (
        headers["x-dlq-kind"] == "already_decided"
        and "already approved by 'alice'" in headers["x-dlq-reason"]
    )
    assert pattern(conn)[:2] == ("approved", version)
    assert len(learned(db_url)) == 1


def test_an_approval_for_a_rejected_pattern_goes_to_the_dlq(conn, db_url, approval_required):
    req = enriched_and_held(conn)
    bridge(conn, lambda req: {"approved": False, "reviewer": "bob"})
    ingest_responses(conn)
    send_raw(
        conn,
        "hub_approval_responses",
        json.dumps({"request_id": req["request_id"], "approved": True, "reviewer": "alice"}),
    )
    assert ingest_responses(conn).dead_lettered == 1
    ((_, headers),) = dlq_messages(conn, "hub_approval_responses")
    assert headers["x-dlq-kind"] == "already_decided" and "rejected by 'bob'" in headers["x-dlq-reason"]
    status, _, enrichment_doc, *_ = pattern(conn)
    assert (status, enrichment_doc) == ("rejected", None)
    assert [m["status"] for m in learned(db_url)] == ["rejected"]


def test_a_duplicate_response_is_stored_once(conn, db_url, approval_required):
    """Breaks if the same decision delivered twice (same batch, then again later) is applied or
    broadcast twice, or dead-lettered (it is not an error)."""
    heartbeat(conn, "singularity-0")
    req = enriched_and_held(conn)
    body = json.dumps({"request_id": req["request_id"], "approved": True, "reviewer": "alice"})
    send_raw(conn, "hub_approval_responses", body)
    send_raw(conn, "hub_approval_responses", body)
    result = ingest_responses(conn)
    assert (result.stored, result.duplicates, result.dead_lettered) == (1, 1, 0)
    send_raw(conn, "hub_approval_responses", body)
    result = ingest_responses(conn)
    assert (result.stored, result.duplicates, result.dead_lettered) == (0, 1, 0)
    assert len(learned(db_url)) == 1 and pattern(conn)[0] == "approved"
    assert count(conn, "hub.ingest_ledger", "queue = 'hub_approval_responses'") == 3


def test_two_different_decisions_in_one_batch_first_wins_the_other_is_dead_lettered(conn, approval_required):
    req = enriched_and_held(conn)
    for approved, who in ((False, "bob"), (True, "alice")):
        send_raw(
            conn,
            "hub_approval_responses",
            json.dumps({"request_id": req["request_id"], "approved": approved, "reviewer": who}),
        )
    result = ingest_responses(conn)
    assert (result.stored, result.dead_lettered) == (1, 1)
    assert pattern(conn)[:1] + pattern(conn)[4:5] == ("rejected", "bob")
    ((message, headers),) = dlq_messages(conn, "hub_approval_responses")
    assert message["reviewer"] == "alice" and headers["x-dlq-kind"] == "already_decided"


@pytest.mark.parametrize(
    ("body", "kind", "words"),
    [
        (json.dumps(["approved"]), "not_object", "not a JSON object"),
        (json.dumps({"request_id": "__RID__", "reviewer": "alice"}), "invalid_fields", "approved"),
        (
            json.dumps({"request_id": "__RID__", "approved": "yes", "reviewer": "alice"}),
            "invalid_fields",
            "approved",
        ),
        (json.dumps({"request_id": "__RID__", "approved": True}), "invalid_fields", "reviewer"),
        (
            json.dumps({"request_id": "__RID__", "approved": True, "reviewer": "a", "score": 9}),
            "invalid_fields",
            "score",
        ),
        (
            json.dumps({"request_id": "__RID__", "approved": True, "reviewer": "a", "reason": "x" * 2001}),
            "invalid_fields",
            "reason",
        ),
        (json.dumps({"approved": True, "reviewer": "alice"}), "invalid_fields", "request_id"),
    ],
    ids=[
        "array",
        "no-approved",
        "approved-string",
        "no-reviewer",
        "extra-field",
        "long-reason",
        "no-request-id",
    ],
)
def test_a_malformed_response_goes_to_the_dlq_with_the_reason(conn, approval_required, body, kind, words):
    """Breaks if a response that breaks the contract decides anything or is dropped without a reason."""
    req = enriched_and_held(conn)
    send_raw(conn, "hub_approval_responses", body.replace("__RID__", req["request_id"]))
    result = ingest_responses(conn)
    assert (result.stored, result.dead_lettered) == (0, 1)
    ((_, headers),) = dlq_messages(conn, "hub_approval_responses")
    assert headers["x-dlq-kind"] == kind and words in headers["x-dlq-reason"], headers
    assert pattern(conn)[3] == "pending" and queue_depth(conn, "hub_approval_responses") == 0


def test_the_setting_accepts_off_and_required_only():
    assert Settings.from_env({}).pattern_approval == "off"
    assert Settings.from_env({"QUEUE_ASSETS_PATTERN_APPROVAL": "Required"}).pattern_approval == "required"
    with pytest.raises(
        SettingsError, match=r"QUEUE_ASSETS_PATTERN_APPROVAL='maybe': expected one of: off, required"
    ):
        Settings.from_env({"QUEUE_ASSETS_PATTERN_APPROVAL": "maybe"})


def test_the_decisions_have_an_ingest_asset_and_sensor_downstream_of_the_replies():
    import dagster as dg

    from queue_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    queue = dg.AssetKey(["pgmq", "hub_approval_responses"])
    assert queue in graph.get(dg.AssetKey("approval_decisions")).parent_keys
    assert dg.AssetKey("enrichment_replies") in graph.get(queue).parent_keys
    assert defs.resolve_sensor_def("hub_approval_responses_sensor") is not None
    assert defs.resolve_job_def("ingest_hub_approval_responses_job") is not None


def test_status_and_pattern_commands_show_the_decision(conn, db_url, approval_required, monkeypatch, capsys):
    from queue_assets import cli

    enriched_and_held(conn)
    monkeypatch.setenv("SHARED_QUEUE_DB_URL", db_url)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert cli.main(["status"]) == 0
    assert (
        "APPROVAL (a person, QUEUE_ASSETS_PATTERN_APPROVAL): 1 pending, 0 approved, 0 rejected"
        in capsys.readouterr().out
    )
    bridge(conn, lambda req: {"approved": False, "reviewer": "bob", "reason": "wrong project"})
    ingest_responses(conn)
    assert cli.main(["pattern", "framework", "Phoenix"]) == 0
    out = capsys.readouterr().out
    assert "status rejected" in out and "approval        rejected by bob: wrong project" in out
    assert cli.main(["status"]) == 0  # a decided pattern still counts as enriched-then-decided
    assert (
        "ENRICHMENT (LLM): 0 enriching, 0 enriched, 0 approved, 1 rejected, 0 enrichment_failed patterns"
        in capsys.readouterr().out
    )


def test_an_instance_cannot_send_a_decision(db_url, conn):
    """Breaks if hub_approval_responses became writable by instances (e.g. listed as a consumed
    queue): an instance could then approve its own pattern."""
    producers = Producers(db_url)
    try:
        me = producers.new()
        with producers.connect(me) as pc:
            reason = denied(
                pc,
                "SELECT pgmq.send('hub_approval_responses', %s::jsonb)",
                (json.dumps({"request_id": "approve-x", "approved": True, "reviewer": "me"}),),
            )
        assert "permission denied" in reason
    finally:
        producers.close()
    assert queue_depth(conn, "hub_approval_responses") == 0
