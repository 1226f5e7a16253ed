"""The demo's simulated LLM router and HITL bridge (queue_assets/simulate_services.py) against a real
database: they read only the hub's requests, answer on `reply_to`, produce garbage at the seeded
rate, and together with the real enrichment and ingest leave enriched (approved / rejected)
patterns and a failed enrichment with its reason, as `queue-assets dev` shows."""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace

import pytest

from queue_assets.contracts.approval import HubApprovalResponse
from queue_assets.db import make_pgmq
from queue_assets.ingest.core import ingest_queue
from queue_assets.patterns import approval, enrichment
from queue_assets.patterns.enrichment import EnrichmentConfig, run_enrichment
from queue_assets.simulate_services import HitlBridge, LlmRouter, RouterRates
from queue_assets_tests.helpers import count, queue_depth, send_raw
from queue_assets_tests.test_enrichment import ICFG
from queue_assets_tests.test_fanout import heartbeat, inbox
from queue_assets_tests.test_patterns import _ingest, _pattern_message, _query

N = 200


@pytest.fixture
def q(db_url):
    client = make_pgmq(db_url)
    yield client
    pool = client.pool
    client.close()
    pool.close()


def hub_request(i: int, name: str = "phoenix", reply_to: str = "hub_llm_results") -> str:
    return json.dumps(
        {
            "type": "llm_request",
            "request_id": f"enrich-framework-{name}-{i}",
            "agent_id": "centralcloud",
            "reply_to": reply_to,
            "task": {"kind": "pattern_enrichment", "pattern_type": "framework", "name": name},
        }
    )


def replies(conn, queue: str) -> list[tuple[dict, bool]]:
    """(message, visible now) of every message on `queue`, delayed ones included."""
    rows = conn.execute(
        f"SELECT message, vt <= clock_timestamp() FROM pgmq.q_{queue} ORDER BY msg_id"
    ).fetchall()
    conn.commit()
    return rows


def drain(step) -> None:
    while step():
        pass


def test_router_answers_on_reply_to_at_the_seeded_rates(conn, q):
    """Breaks if replies miss reply_to, if the garbage share strays from the configured rate, if a
    seed does not fix the outcomes, or if the router takes requests that are not the hub's."""
    rates = RouterRates(garbage=0.2, late=0.1, silent=0.1, late_delay_s=600)
    for i in range(N):
        send_raw(conn, "llm_requests", hub_request(i))
    send_raw(conn, "llm_requests", json.dumps({"agent_id": "singularity-1", "task": "summarise"}))
    router = LlmRouter(q, random.Random(11), rates)
    drain(router.step)
    assert sum(router.outcomes.values()) == N and queue_depth(conn, "llm_requests") == 1  # the agent's stays
    assert queue_depth(conn, "llm_results") == 0
    got = replies(conn, "hub_llm_results")
    assert len(got) == N - router.outcomes["silent"]
    # the hub's own parser decides what is garbage
    bad = [m for m, _ in got if enrichment.parse_reply(json.dumps(m), 1 << 20)[2] is not None]
    assert len(bad) == router.outcomes["garbage"]
    assert abs(len(bad) / N - rates.garbage) < 0.07, len(bad)
    assert abs(router.outcomes["silent"] / N - rates.silent) < 0.06
    held_back = [m for m, visible in got if not visible]
    assert len(held_back) == router.outcomes["late"] and abs(len(held_back) / N - rates.late) < 0.06
    # the same seed gives the same outcomes
    first = LlmRouter(q, random.Random(11), rates)
    second = LlmRouter(q, random.Random(11), rates)
    assert [first.answer(json.loads(hub_request(i)))[0] for i in range(N)] == [
        second.answer(json.loads(hub_request(i)))[0] for i in range(N)
    ]


def test_router_honours_any_reply_to_and_reports_unknown_names_as_errors(conn, q):
    send_raw(conn, "llm_requests", hub_request(1, reply_to="elsewhere"))
    send_raw(conn, "llm_requests", hub_request(2, name="unheard-of-0"))
    conn.execute("SELECT pgmq.create('elsewhere')")
    conn.commit()
    router = LlmRouter(q, random.Random(1), RouterRates(garbage=0, late=0, silent=0))
    drain(router.step)
    ((valid, _),) = replies(conn, "elsewhere")
    assert valid["request_id"] == "enrich-framework-phoenix-1" and valid["result"]["description"]
    ((unknown, _),) = replies(conn, "hub_llm_results")
    assert unknown["error"] == "no knowledge of framework 'unheard-of-0'"


def test_bridge_answers_on_reply_to_and_rejects_at_the_seeded_rate(conn, q):
    for i in range(N):
        send_raw(
            conn,
            "approval_requests",
            json.dumps(
                {
                    "request_id": f"approve-{i}",
                    "agent_id": "centralcloud",
                    "reply_to": "hub_approval_responses",
                }
            ),
        )
    bridge = HitlBridge(q, random.Random(5), reject=0.25)
    drain(bridge.step)
    got = [m for m, _ in replies(conn, "hub_approval_responses")]
    assert [m["request_id"] for m in got] == [f"approve-{i}" for i in range(N)]
    assert all(approval.parse_response(json.dumps(m), 1 << 20)[2] is None for m in got)
    rejected = [HubApprovalResponse.model_validate(m) for m in got if not m["approved"]]
    assert len(rejected) == bridge.outcomes["rejected"] and abs(len(rejected) / N - 0.25) < 0.07
    assert all(r.reason for r in rejected)


def test_with_the_real_hub_the_services_leave_approved_rejected_and_failed_patterns(
    conn, db_url, q, monkeypatch
):
    """What the demo shows, in seconds: a key the router knows is enriched and decided by the bridge
    and broadcast; a name it does not know ends enrichment_failed with the router's reason."""
    icfg = replace(ICFG, pattern_approval="required")  # QUEUE_ASSETS_PATTERN_APPROVAL=required
    heartbeat(conn, "singularity-1")
    names = ["phoenix", "ecto", "axum", "tokio", "django", "fastapi"]
    _ingest(conn, [_pattern_message("singularity-1", names)])
    _query(conn, "framework", "unheard-of-1")
    conn.commit()
    cfg = EnrichmentConfig(max_per_hour=100, timeout_s=1, max_attempts=3)
    router = LlmRouter(q, random.Random(3), RouterRates(garbage=0, late=0, silent=0))
    bridge = HitlBridge(q, random.Random(4), reject=0.5)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run_enrichment(conn, cfg)
        drain(router.step)
        ingest_queue(conn, "hub_llm_results", icfg)
        drain(bridge.step)
        ingest_queue(conn, "hub_approval_responses", icfg)
        if count(conn, "hub.patterns", "status IN ('observed', 'enriching', 'enriched')") == 0:
            break
        time.sleep(0.5)
    decided = dict(
        conn.execute(
            "SELECT canonical_name, status FROM hub.patterns WHERE canonical_name <> 'unheard-of-1'"
        ).fetchall()
    )
    conn.commit()
    assert set(decided) == set(names) and set(decided.values()) == {"approved", "rejected"}
    status, error = conn.execute(
        "SELECT status, enrichment_error FROM hub.patterns WHERE canonical_name = 'unheard-of-1'"
    ).fetchone()
    assert status == "enrichment_failed" and "no knowledge of framework 'unheard-of-1'" in error
    learned = [m.message for m in inbox(db_url, "singularity-1") if m.message["type"] == "pattern_learned"]
    assert sorted((m["name"], m["status"]) for m in learned) == sorted(decided.items())


def test_bad_rates_are_refused_with_the_values_before_connecting(monkeypatch, capsys):
    from queue_assets import cli

    monkeypatch.setenv("SHARED_QUEUE_DB_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert cli.main(["simulate-services", "--garbage", "0.9", "--late", "0.2"]) != 0
    assert "garbage + late + silent = 1.15: must be at most 1" in capsys.readouterr().err
    assert cli.main(["simulate-services", "--reject", "1.5"]) != 0
    assert "--reject 1.5: must be between 0 and 1" in capsys.readouterr().err


def test_the_demo_runs_with_approval_required_unless_the_environment_says_otherwise():
    from queue_assets.cli.app import demo_environment

    assert demo_environment("required", {}) == {
        "QUEUE_ASSETS_PATTERN_APPROVAL": "required",
        "QUEUE_ASSETS_LLM_TIMEOUT_S": "20",
    }
    assert demo_environment("off", {"QUEUE_ASSETS_LLM_TIMEOUT_S": "300"}) == {
        "QUEUE_ASSETS_PATTERN_APPROVAL": "off"
    }
    assert demo_environment("required", {"QUEUE_ASSETS_PATTERN_APPROVAL": "off"}) == {
        "QUEUE_ASSETS_LLM_TIMEOUT_S": "20"
    }
