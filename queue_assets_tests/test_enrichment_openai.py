"""Provider `openai` (issue 12): enrichment through an OpenAI-compatible server with the official
client. The server is off-machine in production, so the test serves a stand-in on loopback
(`fake_openai`, POST /v1/chat/completions); PostgreSQL, pgmq, the prompt builder, the parsing, the
budget, the broadcast and the Dagster run are the real ones, shared with provider `queue`."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from datetime import timedelta

import dagster as dg
import psycopg
import pytest

from queue_assets import cli
from queue_assets.patterns import enrichment
from queue_assets.patterns.enrichment import EVIDENCE_CLOSE, EVIDENCE_OPEN, EnrichmentConfig, run_enrichment
from queue_assets.patterns.providers import SYNC_BATCH, OpenAISettings, OpenAITransport, ProviderUnusable
from queue_assets.settings import Settings, SettingsError
from queue_assets_tests.fake_openai import Call, FakeOpenAI, Reply, serve_fake_openai
from queue_assets_tests.helpers import count, queue_depth
from queue_assets_tests.test_enrichment import GOOD, HOSTILE, pattern
from queue_assets_tests.test_fanout import heartbeat, inbox
from queue_assets_tests.test_patterns import _ingest, _pattern_message, _query

KEY = "sk-qa-Zx81fQ2wLmN0pRt7"
CFG = EnrichmentConfig(provider="openai", max_per_hour=100, timeout_s=5, max_attempts=3)


def transport(fake: FakeOpenAI, timeout_s: float = 5) -> OpenAITransport:
    return OpenAITransport(
        OpenAISettings.from_env(
            {}, timeout_s=timeout_s, base_url=fake.url, model="qa-model", api_key=fake.api_key
        )
    )


def answering(content) -> FakeOpenAI:
    return FakeOpenAI(api_key=KEY, answer=lambda call: Reply(content=content))


def learned(db_url: str, instance: str) -> list[dict]:
    return [m.message for m in inbox(db_url, instance) if m.message["type"] == "pattern_learned"]


def provenance(conn, key="phoenix") -> tuple:
    row = conn.execute(
        "SELECT enrichment_provider, enrichment_model FROM hub.patterns WHERE canonical_name = %s", (key,)
    ).fetchone()
    conn.commit()
    return row


def test_a_valid_answer_is_stored_with_its_provenance_and_broadcast(conn, db_url):
    """Breaks if the answer is not parsed and stored through the shared path (provenance openai, the
    server's model), if the new version does not reach every inbox, or if the request is not
    recorded in hub.enrichment_requests like a queued one."""
    for i in range(2):
        heartbeat(conn, f"singularity-{i}")
    _ingest(
        conn, [_pattern_message("singularity-0", ["Phoenix"]), _pattern_message("singularity-1", ["phoenix"])]
    )
    with serve_fake_openai(answering(json.dumps(GOOD))) as fake:
        run = run_enrichment(conn, CFG, transport=transport(fake))
        assert run_enrichment(conn, CFG, transport=transport(fake)).sent == []  # enriched: never asked again
    assert len(run.sent) == 1 and run.answered == 1 and run.failed == []
    (call,) = fake.calls
    assert call.headers["authorization"] == f"Bearer {KEY}"
    assert call.body["model"] == "qa-model" and call.body["response_format"] == {"type": "json_object"}
    assert '"phoenix"' in call.prompt and call.prompt.count(EVIDENCE_OPEN) == 1
    status, version, doc, request_id, _ = pattern(conn)
    assert status == "enriched" and doc == GOOD and request_id == run.sent[0]
    assert provenance(conn) == ("openai", "stand-in-1")
    assert (
        count(
            conn, "hub.enrichment_requests", "status = 'answered' AND provider = 'openai' AND msg_id IS NULL"
        )
        == 1
    )
    assert queue_depth(conn, "llm_requests") == 0  # nothing went to the router
    for i in range(2):
        (msg,) = learned(db_url, f"singularity-{i}")
        assert (
            msg["status"] == "enriched"
            and msg["version"] == version
            and msg["description"] == GOOD["description"]
        )
    assert _query(conn, "framework", "Phoenix")["status"] == "enriched"


def test_the_request_is_recorded_in_flight_before_the_server_is_asked(conn, db_url):
    """Breaks if the call were made before the request is committed (a crash during the call would
    then leave no record, and the key could be asked twice at once), or if the timeout's clock
    started at the recording instead of the call (a request waiting its turn in a long run would
    look overdue to another run)."""
    _ingest(conn, [_pattern_message("singularity-0", ["Phoenix"])])
    (t,) = conn.execute("SELECT clock_timestamp()").fetchone()
    conn.commit()
    seen: list = []

    def answer(call: Call) -> Reply:
        with psycopg.connect(db_url) as other:
            seen.append(
                other.execute(
                    "SELECT status, provider, attempt FROM hub.enrichment_requests WHERE canonical_name = 'phoenix'"
                ).fetchall()
            )
            seen.append(
                other.execute("SELECT status FROM hub.patterns WHERE canonical_name = 'phoenix'").fetchone()
            )
            seen.append(other.execute("SELECT sent_at FROM hub.enrichment_requests").fetchone()[0])
        return Reply(content=json.dumps(GOOD))

    with serve_fake_openai(FakeOpenAI(api_key=KEY, answer=answer)) as fake:
        # recorded "ten minutes ago": the call itself starts now
        run_enrichment(conn, CFG, transport=transport(fake), now=t - timedelta(minutes=10))
    assert seen[:2] == [[("in_flight", "openai", 1)], ("enriching",)]
    assert seen[2] >= t
    assert pattern(conn)[0] == "enriched"


OVERSIZED = json.dumps(GOOD) + " " * 5000  # valid JSON; only the size rule refuses it


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (
            Reply(content="Sure! Here is the JSON you asked for: {"),
            "bad_result: result is text that is not JSON",
        ),
        (Reply(content=json.dumps({**GOOD, "evil": "obey me"})), "bad_result: result is no valid enrichment"),
        (
            Reply(content=json.dumps({**GOOD, "description": "x" * 2001})),
            "bad_result: result is no valid enrichment",
        ),
        (
            Reply(content=json.dumps({**GOOD, "related": ["r"] * 21})),
            "bad_result: result is no valid enrichment",
        ),
        (Reply(content=json.dumps(["not", "an", "object"])), "bad_result: result is no valid enrichment"),
        (Reply(content=None), "bad_result: result is no valid enrichment"),
        (Reply(content=OVERSIZED), "too_large: reply is"),
        (Reply(raw=b"<html>502 upstream down</html>"), "bad_response:"),
    ],
    ids=[
        "prose",
        "extra_field",
        "long_description",
        "too_many_items",
        "array",
        "no_content",
        "oversized",
        "html",
    ],
)
def test_an_answer_that_breaks_the_contract_is_a_failed_attempt_and_never_stored(conn, db_url, reply, reason):
    """Breaks if an answer that does not fit the length-limited model (or the size cap) is stored or
    broadcast, or if the failed attempt does not keep its reason."""
    heartbeat(conn, "singularity-0")
    _ingest(conn, [_pattern_message("singularity-0", ["Phoenix"])])
    cfg = EnrichmentConfig(provider="openai", timeout_s=5, max_reply_bytes=4096)
    with serve_fake_openai(FakeOpenAI(api_key=KEY, answer=lambda call: reply)) as fake:
        run = run_enrichment(conn, cfg, transport=transport(fake))
    assert len(fake.calls) == 1 and run.answered == 0
    (failure,) = run.failed
    assert failure.startswith(reason), failure
    status, _, doc, _, _ = pattern(conn)
    assert doc is None and status == "enriching"  # retried later, never stored
    (err,) = conn.execute("SELECT error FROM hub.enrichment_requests WHERE status = 'failed'").fetchone()
    conn.commit()
    assert err.startswith(reason)
    assert learned(db_url, "singularity-0") == []


def _run_until(conn, cfg, fake, *, calls: int, deadline_s: float) -> None:
    """Run the enrichment as the sensor would (every 0.1 s) until the stand-in saw `calls` calls."""
    end = time.monotonic() + deadline_s
    while len(fake.calls) < calls and time.monotonic() < end:
        run_enrichment(conn, cfg, transport=transport(fake, cfg.timeout_s))
        time.sleep(0.1)
    run_enrichment(conn, cfg, transport=transport(fake, cfg.timeout_s))  # gives up, if it should


def test_http_500_is_retried_with_backoff_then_enrichment_failed_with_the_reason(
    conn, db_url, monkeypatch, capsys
):
    """Breaks if a server error is not a failed attempt, if retries do not back off (1 s, then 2 s
    with a 1 s timeout), if the key is not given up after the attempts, or if status hides why."""
    _ingest(conn, [_pattern_message("singularity-0", ["Phoenix"])])
    cfg = EnrichmentConfig(provider="openai", timeout_s=1, max_attempts=3)
    fake = FakeOpenAI(
        api_key=KEY, answer=lambda call: Reply(status=500, raw=b'{"error": {"message": "overloaded"}}')
    )
    with serve_fake_openai(fake):
        _run_until(conn, cfg, fake, calls=3, deadline_s=20)
        time.sleep(4.5)  # past any further backoff: no fourth call
        run_enrichment(conn, cfg, transport=transport(fake, 1))
    assert len(fake.calls) == 3
    gaps = [b.at - a.at for a, b in zip(fake.calls, fake.calls[1:], strict=False)]
    assert gaps[0] >= 1.0 and gaps[1] >= 2.0, gaps
    status, _, doc, _, error = pattern(conn)
    assert status == "enrichment_failed" and doc is None
    assert error.startswith("gave up after 3 attempts; last: http_500:") and "overloaded" in error
    assert count(conn, "hub.enrichment_requests", "status = 'failed' AND provider = 'openai'") == 3
    assert _query(conn, "framework", "phoenix")["status"] == "enrichment_failed"
    conn.commit()
    monkeypatch.setenv("SHARED_QUEUE_DB_URL", db_url)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "enrichment_failed framework/phoenix: gave up after 3 attempts; last: http_500" in out


def test_a_server_slower_than_the_timeout_is_retried_then_enrichment_failed(conn):
    """Breaks if the client waits past QUEUE_ASSETS_LLM_TIMEOUT_S, retries on its own (max_retries
    must be 0: the budget counts attempts), or the timeout is not the recorded reason."""
    _ingest(conn, [_pattern_message("singularity-0", ["Phoenix"])])
    cfg = EnrichmentConfig(provider="openai", timeout_s=1, max_attempts=2)
    fake = FakeOpenAI(api_key=KEY, answer=lambda call: Reply(content=json.dumps(GOOD), delay_s=3))
    with serve_fake_openai(fake):
        started = time.monotonic()
        run = run_enrichment(conn, cfg, transport=transport(fake, 1))
        assert time.monotonic() - started < 2.5 and len(fake.calls) == 1  # one call, cut at 1 s
        assert run.failed and run.failed[0].startswith("timeout:")
        _run_until(conn, cfg, fake, calls=2, deadline_s=15)
    assert len(fake.calls) == 2
    status, _, doc, _, error = pattern(conn)
    assert status == "enrichment_failed" and doc is None
    assert (
        error.startswith("gave up after 2 attempts; last: timeout:") and "gave no answer within 1 s" in error
    )


def test_the_budget_caps_requests_and_the_backlog_goes_most_seen_first(conn):
    """Breaks if more requests are made than QUEUE_ASSETS_LLM_MAX_PER_HOUR allows across runs, if a
    run of the synchronous provider makes more than its batch, or if keys are not asked in order of
    how many instances saw them."""
    conn.execute(
        "INSERT INTO hub.patterns (pattern_type, canonical_name, display_name, first_seen, last_seen, instances)"
        " SELECT 'technology', 'k' || g, 'K' || g, now(), now(), (g * 7) % 11 FROM generate_series(1, 40) g"
    )
    instances = dict(conn.execute("SELECT canonical_name, instances FROM hub.patterns").fetchall())
    conn.commit()
    cfg = EnrichmentConfig(provider="openai", max_per_hour=13, timeout_s=5)
    with serve_fake_openai(answering(json.dumps(GOOD))) as fake:
        per_run = [len(run_enrichment(conn, cfg, transport=transport(fake)).sent) for _ in range(4)]
    assert per_run == [SYNC_BATCH, 13 - SYNC_BATCH, 0, 0]
    assert len(fake.calls) == 13 == count(conn, "hub.patterns", "status = 'enriched'")
    asked = [re.search(r'with the key "([^"]+)"', c.prompt).group(1) for c in fake.calls]
    seen = [instances[k] for k in asked]
    assert seen == sorted(seen, reverse=True) and seen[0] == max(instances.values())
    assert min(seen) >= sorted(instances.values(), reverse=True)[12]
    assert conn.execute("SELECT sent FROM hub.enrichment_budget").fetchone()[0] == 13
    conn.commit()


def test_the_prompt_the_server_receives_for_hostile_names_keeps_its_structure(conn):
    """Breaks if untrusted names, indicators or examples reach the server outside the one delimited
    evidence block, uncapped, or able to spell its closing delimiter; each stored result is the
    parsed answer, nothing else."""
    flat = [h.replace("\n", " ") for h in HOSTILE]
    result = _ingest(
        conn,
        [
            _pattern_message(
                "singularity-0",
                [h[:200] for h in flat],
                kind="code",
                indicators=flat[:5],
                examples=HOSTILE[5:],
            )
        ],
    )
    assert result.stored == 1, result.dlq_reasons
    cfg = EnrichmentConfig(provider="openai", max_per_hour=1000, timeout_s=5)
    with serve_fake_openai(answering(json.dumps(GOOD))) as fake:
        while run_enrichment(conn, cfg, transport=transport(fake)).sent:
            pass
    assert len(fake.calls) >= 10
    for call in fake.calls:
        prompt = call.prompt
        assert [m["role"] for m in call.body["messages"]] == ["user"]
        assert prompt.count(EVIDENCE_OPEN) == 1 and prompt.count(EVIDENCE_CLOSE) == 1
        head, rest = prompt.split(EVIDENCE_OPEN)
        block, tail = rest.split(EVIDENCE_CLOSE)
        assert head.startswith("You describe software patterns") and "Never follow instructions" in head
        assert tail.startswith("\nAnswer with one JSON object only")
        evidence = json.loads(block)
        assert all(
            len(s) <= enrichment.MAX_EVIDENCE_CHARS + 1
            for v in evidence.values()
            if isinstance(v, list)
            for s in v
        )
        outside = head.split("\n", 1)[1] + tail
        for h in HOSTILE:
            assert h[:20] not in outside
        assert len(prompt) < 8000
    stored = [r[0] for r in conn.execute("SELECT enrichment FROM hub.patterns WHERE pattern_type = 'code'")]
    conn.commit()
    assert len(stored) == len(fake.calls) and all(e == GOOD for e in stored)


def test_the_api_key_never_appears_in_logs_metadata_errors_or_status(
    conn, db_url, monkeypatch, caplog, capfd
):
    """A real `dagster` materialize with the key as a dg.EnvVar, against a server that echoes the key
    back in its error body. Breaks if the key reaches a log line, the event log, metadata, a stored
    error or `queue-assets status` (the stand-in's records prove it was really sent)."""
    from queue_assets.patterns.assets import pattern_enrichment
    from queue_assets.patterns.resources import LlmResource
    from queue_assets.resources import SharedQueueResource

    caplog.set_level(logging.DEBUG)
    _ingest(
        conn,
        [
            _pattern_message("singularity-0", ["Phoenix"]),
            _pattern_message("singularity-0", ["Ecto"], indicators=["x"]),
        ],
    )

    def answer(call: Call) -> Reply:
        if '"phoenix"' in call.prompt:
            return Reply(content=json.dumps(GOOD))
        return Reply(status=500, raw=json.dumps({"error": {"message": f"bad request from {KEY}"}}).encode())

    with serve_fake_openai(FakeOpenAI(api_key=KEY, answer=answer)) as fake:
        monkeypatch.setenv("QA_OPENAI_KEY", KEY)
        monkeypatch.setenv("QUEUE_ASSETS_LLM_PROVIDER", "openai")
        monkeypatch.setenv("QUEUE_ASSETS_LLM_MODEL", "qa-model")
        monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
        monkeypatch.setenv("QUEUE_ASSETS_LLM_TIMEOUT_S", "5")
        resources = {
            "shared_queue": SharedQueueResource(db_url=db_url),
            "llm": LlmResource(api_key=dg.EnvVar("QA_OPENAI_KEY")),
        }
        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize([pattern_enrichment], resources=resources, instance=instance)
    assert result.success
    assert len(fake.calls) == 2 and all(c.headers["authorization"] == f"Bearer {KEY}" for c in fake.calls)
    meta = result.asset_materializations_for_node("pattern_enrichment")[0].metadata
    assert meta["provider"].value == "openai" and meta["model"].value == "qa-model"
    assert meta["answered_now"].value == 1 and meta["failed_now"].value == 1
    assert "***" in meta["failures_now"].value  # the echoed key, masked
    assert pattern(conn)[0] == "enriched"
    (err,) = conn.execute("SELECT error FROM hub.enrichment_requests WHERE status = 'failed'").fetchone()
    conn.commit()
    assert "http_500" in err and "bad request from ***" in err
    monkeypatch.setenv("SHARED_QUEUE_DB_URL", db_url)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert cli.main(["status"]) == 0
    out, errout = capfd.readouterr()
    run = instance.get_run_by_id(result.run_id)
    haystacks = [dg.serialize_value(e) for e in instance.all_logs(result.run_id)]
    haystacks += [dg.serialize_value(run), json.dumps({k: str(v.value) for k, v in meta.items()})]
    haystacks += [
        json.dumps(
            conn.execute("SELECT array_agg(r) FROM hub.enrichment_requests r").fetchone()[0], default=str
        ),
        json.dumps(conn.execute("SELECT array_agg(p) FROM hub.patterns p").fetchone()[0], default=str),
        out,
        errout,
        caplog.text,
    ]
    conn.commit()
    assert any("bad request from ***" in h for h in haystacks)
    for text in haystacks:
        assert KEY not in text
        assert KEY[3:] not in text


def _keys(conn, n: int) -> dict[str, int]:
    """`n` waiting keys k1..kn, each seen by a different number of instances; {key: instances}."""
    conn.execute(
        "INSERT INTO hub.patterns (pattern_type, canonical_name, display_name, first_seen, last_seen, instances)"
        " SELECT 'technology', 'k' || g, 'K' || g, now(), now(), (g * 7) %% 17 + 1 FROM generate_series(1, %s) g",
        (n,),
    )
    instances = dict(conn.execute("SELECT canonical_name, instances FROM hub.patterns").fetchall())
    conn.commit()
    return instances


def _asked(calls: list[Call]) -> list[str]:
    return [re.search(r'with the key "([^"]+)"', c.prompt).group(1) for c in calls]


def _spent(conn) -> int:
    row = conn.execute("SELECT coalesce(sum(sent), 0) FROM hub.enrichment_budget").fetchone()
    conn.commit()
    return row[0]


def test_a_refused_key_withdraws_the_run_and_spends_nothing_then_the_keys_go_most_seen_first(conn):
    """Breaks if a 401 counts as a failed attempt of the pattern: if it leaves a request row, spends
    the budget, moves a key out of `observed` or (after more runs than max_attempts) marks it
    enrichment_failed; if the run keeps calling after the 401; if the error lacks the status, the
    server or the hint, or shows the key; or if, with the key accepted again, the keys are not
    enriched most-seen first."""
    instances = _keys(conn, 15)
    versions = dict(conn.execute("SELECT canonical_name, version FROM hub.patterns").fetchall())
    conn.commit()
    fake = FakeOpenAI(api_key="sk-the-right-one", answer=lambda call: Reply(content=json.dumps(GOOD)))
    with serve_fake_openai(fake):
        wrong = transport(FakeOpenAI(api_key=KEY, url=fake.url))
        for run_no in range(1, CFG.max_attempts + 2):
            with pytest.raises(ProviderUnusable) as refused:
                run_enrichment(conn, CFG, transport=wrong)
            assert len(fake.calls) == run_no  # the first call's 401 stopped the run's calls
            err = refused.value
            assert err.error_kind == "http_401" and err.withdrawn == SYNC_BATCH and err.answered == 0
            assert f"{fake.url} answered HTTP 401" in str(err) and "check OPENAI_API_KEY" in str(err)
            assert KEY not in str(err) and KEY[3:] not in str(err)
            assert count(conn, "hub.enrichment_requests") == 0
            assert _spent(conn) == 0
            assert count(conn, "hub.patterns", "status = 'observed'") == 15
        assert count(conn, "hub.patterns", "status = 'enrichment_failed'") == 0
        assert all(c.headers["authorization"] == f"Bearer {KEY}" for c in fake.calls)  # really refused
        # the same most-seen key was asked each time (it went back to the head of the line)
        assert len(set(_asked(fake.calls))) == 1

        fake.api_key = KEY  # the deployment is fixed
        refused_calls = len(fake.calls)
        sent = [len(run_enrichment(conn, CFG, transport=wrong).sent) for _ in range(3)]
    assert sent == [SYNC_BATCH, 15 - SYNC_BATCH, 0]
    asked = _asked(fake.calls[refused_calls:])
    assert sorted(asked) == sorted(instances)
    seen = [instances[k] for k in asked]
    assert seen == sorted(seen, reverse=True)
    assert count(conn, "hub.patterns", "status = 'enriched'") == 15
    assert count(conn, "hub.enrichment_requests", "attempt = 1 AND status = 'answered'") == 15
    assert _spent(conn) == 15
    after = dict(conn.execute("SELECT canonical_name, version FROM hub.patterns").fetchall())
    conn.commit()
    assert all(after[k] > versions[k] for k in versions)  # never a version seen twice with other content


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (403, "check OPENAI_API_KEY and QUEUE_ASSETS_LLM_MODEL"),
        (404, "check OPENAI_BASE_URL and QUEUE_ASSETS_LLM_MODEL"),
    ],
)
def test_a_deployment_error_mid_run_keeps_what_was_answered_and_a_retrys_earlier_attempts(conn, status, hint):
    """A server that answers, then refuses the model. Breaks if the answer before the refusal is
    lost, if the refused request or the ones after it stay recorded or spent, if a retried key
    loses its earlier failed attempt (it would get more attempts than QUEUE_ASSETS_LLM_MAX_ATTEMPTS)
    or goes back to `observed`, or if the keys are not retried once the server serves the model."""
    instances = _keys(conn, 4)
    order = sorted(instances, key=lambda k: -instances[k])
    cfg = EnrichmentConfig(provider="openai", timeout_s=1, max_attempts=3)
    mode = {"now": "overloaded"}

    def answer(call: Call) -> Reply:
        if mode["now"] == "overloaded":
            return Reply(status=500, raw=b'{"error": {"message": "overloaded"}}')
        if mode["now"] == "refusing" and len(fake.calls) > 5:
            return Reply(status=status, raw=b'{"error": {"message": "model_not_found"}}')
        return Reply(content=json.dumps(GOOD))

    fake = FakeOpenAI(api_key=KEY, answer=answer)
    with serve_fake_openai(fake):
        first = run_enrichment(conn, cfg, transport=transport(fake, 1))
        assert len(first.failed) == 4 and _spent(conn) == 4  # four failed attempts: real ones
        time.sleep(1.2)  # past the 1 s backoff: all four are due for attempt 2
        mode["now"] = "refusing"  # call 5 is answered, call 6 refused
        with pytest.raises(ProviderUnusable) as refused:
            run_enrichment(conn, cfg, transport=transport(fake, 1))
        assert len(fake.calls) == 6
        assert refused.value.withdrawn == 3 and refused.value.answered == 1
        assert f"HTTP {status}" in str(refused.value) and hint in str(refused.value)
        assert pattern(conn, order[0], "technology")[0] == "enriched"
        assert count(conn, "hub.enrichment_requests", "attempt = 2") == 1  # only the answered one
        assert count(conn, "hub.enrichment_requests", "attempt = 1 AND status = 'failed'") == 4
        assert count(conn, "hub.patterns", "status = 'enriching'") == 3
        assert _spent(conn) == 4 + 1

        mode["now"] = "serving"
        run = run_enrichment(conn, cfg, transport=transport(fake, 1))
    assert _asked(fake.calls[6:]) == order[1:] and run.answered == 3
    assert count(conn, "hub.enrichment_requests", "attempt = 2 AND status = 'answered'") == 4
    assert count(conn, "hub.patterns", "status = 'enriched'") == 4


def test_an_unreachable_server_withdraws_the_run_like_a_refused_key(conn):
    """Breaks if a server nobody listens on (a wrong OPENAI_BASE_URL port) spends the budget or
    counts an attempt against the pattern, or if the error does not say it could not be reached."""
    _ingest(conn, [_pattern_message("singularity-0", ["Phoenix"])])
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gone = transport(FakeOpenAI(api_key=KEY, url=f"http://127.0.0.1:{port}/v1"))
    for _ in range(CFG.max_attempts + 1):
        with pytest.raises(ProviderUnusable) as unreachable:
            run_enrichment(conn, CFG, transport=gone)
        assert unreachable.value.error_kind == "unreachable" and unreachable.value.withdrawn == 1
    assert f"http://127.0.0.1:{port}/v1 could not be reached" in str(unreachable.value)
    assert count(conn, "hub.enrichment_requests") == 0 and _spent(conn) == 0
    assert pattern(conn)[0] == "observed"


def _enrichment_job_run(instance, db_url) -> dg.ExecuteInProcessResult:
    from queue_assets.definitions import defs
    from queue_assets.patterns.resources import LlmResource
    from queue_assets.resources import SharedQueueResource

    return defs.resolve_job_def("pattern_enrichment_job").execute_in_process(
        instance=instance,
        resources={
            "shared_queue": SharedQueueResource(db_url=db_url),
            "llm": LlmResource(api_key=dg.EnvVar("QA_OPENAI_KEY")),
        },
        raise_on_error=False,
    )


def test_a_refused_key_fails_the_run_with_one_clear_error_and_the_sensor_backs_off(conn, db_url, monkeypatch):
    """The real pattern_enrichment_job and pattern_enrichment_sensor on one instance. Breaks if a
    refused key does not fail the run, if its error lacks the server, the status or the hint, if the
    key shows anywhere in the run's events, if the sensor requests the next run at once (a failing
    run every 5 s), if it never asks again, or if a successful run leaves it backing off."""
    from queue_assets.patterns.defs import build_enrichment_sensor
    from queue_assets.patterns.resources import LlmResource
    from queue_assets.resources import SharedQueueResource

    _ingest(conn, [_pattern_message("singularity-0", ["Phoenix"])])
    fake = FakeOpenAI(api_key="sk-the-right-one", answer=lambda call: Reply(content=json.dumps(GOOD)))
    with serve_fake_openai(fake):
        for name, value in {
            "QA_OPENAI_KEY": KEY,
            "QUEUE_ASSETS_LLM_PROVIDER": "openai",
            "QUEUE_ASSETS_LLM_MODEL": "qa-model",
            "OPENAI_BASE_URL": fake.url,
            "QUEUE_ASSETS_LLM_TIMEOUT_S": "5",
            "QUEUE_ASSETS_INGEST_BACKOFF_BASE_S": "60",
            "QUEUE_ASSETS_INGEST_BACKOFF_CAP_S": "300",
        }.items():
            monkeypatch.setenv(name, value)
        instance = dg.DagsterInstance.ephemeral()
        resources = {"shared_queue": SharedQueueResource(db_url=db_url), "llm": LlmResource()}

        def tick(later_s: float = 0.0):
            sensor = build_enrichment_sensor(clock=lambda: time.time() + later_s)
            return sensor(dg.build_sensor_context(instance=instance, resources=resources))

        assert isinstance(tick(), dg.RunRequest)  # a key waits, no failed run yet
        failed = _enrichment_job_run(instance, db_url)
        assert not failed.success and len(fake.calls) == 1
        failure = failed.failure_data_for_node("pattern_enrichment")
        message = failure.user_failure_data.description
        assert message.startswith("QUEUE_ASSETS_LLM_PROVIDER=openai is unusable: ")
        assert f"{fake.url} answered HTTP 401 (the server refused the key: check OPENAI_API_KEY)" in message
        assert failure.user_failure_data.metadata["withdrawn_requests"].value == 1
        events = [dg.serialize_value(e) for e in instance.all_logs(failed.run_id)]
        assert any("answered HTTP 401" in e for e in events)
        assert not any(KEY in e or KEY[3:] in e for e in events)
        assert pattern(conn)[0] == "observed" and count(conn, "hub.enrichment_requests") == 0

        skip = tick()
        assert isinstance(skip, dg.SkipReason)
        assert f"the last 1 enrichment run failed (newest {failed.run_id[:8]}" in skip.skip_message
        assert "backing off 60s (doubling per failure, cap 300s): next attempt at " in skip.skip_message
        assert not _enrichment_job_run(instance, db_url).success
        skip = tick(later_s=61)
        assert isinstance(skip, dg.SkipReason) and "the last 2 enrichment runs failed" in skip.skip_message
        assert "backing off 120s" in skip.skip_message
        assert isinstance(tick(later_s=121), dg.RunRequest)  # the delay has passed: try again

        fake.api_key = KEY  # the deployment is fixed
        assert _enrichment_job_run(instance, db_url).success
        assert pattern(conn)[0] == "enriched"
        _ingest(conn, [_pattern_message("singularity-0", ["Ecto"], indicators=["x"])])
        assert isinstance(tick(), dg.RunRequest)  # a success ends the backoff at once


def test_openai_settings_refuse_bad_values_naming_the_variable_and_never_the_key():
    """Breaks if a missing model or a bad base URL is accepted, or if an error shows the key."""
    with pytest.raises(SettingsError) as missing:
        OpenAISettings.from_env({"OPENAI_API_KEY": KEY})
    assert "QUEUE_ASSETS_LLM_MODEL is not set" in str(missing.value)
    env = {
        "QUEUE_ASSETS_LLM_MODEL": "m",
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": f"https://u:{KEY}@llm.example/v1",
    }
    with pytest.raises(SettingsError) as creds:
        OpenAISettings.from_env(env)
    assert "OPENAI_BASE_URL" in str(creds.value) and "must not hold credentials" in str(creds.value)
    assert KEY not in str(creds.value)
    with pytest.raises(SettingsError) as scheme:
        OpenAISettings.from_env({"QUEUE_ASSETS_LLM_MODEL": "m", "OPENAI_BASE_URL": "ftp://llm.example"})
    assert "expected an http(s) URL" in str(scheme.value)
    with pytest.raises(SettingsError) as spaced:
        OpenAISettings.from_env({"QUEUE_ASSETS_LLM_MODEL": "m", "OPENAI_API_KEY": "sk-abc def-123"})
    assert "OPENAI_API_KEY" in str(spaced.value) and "abc def" not in str(spaced.value)
    ok = OpenAISettings.from_env(
        {"QUEUE_ASSETS_LLM_MODEL": "llama3.1", "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1/"}
    )
    assert ok.base_url == "http://127.0.0.1:11434/v1" and KEY not in repr(ok)
    assert Settings.from_env({"QUEUE_ASSETS_LLM_PROVIDER": "OpenAI"}).llm_provider == "openai"
    with pytest.raises(SettingsError, match="QUEUE_ASSETS_LLM_PROVIDER='router'"):
        Settings.from_env({"QUEUE_ASSETS_LLM_PROVIDER": "router"})


def test_the_sensor_sees_waiting_keys_for_the_openai_provider_and_skips_when_it_is_unusable(
    conn, db_url, monkeypatch
):
    """Breaks if the sensor (shared with `queue`) skips keys waiting for the synchronous provider, or
    launches runs (each failing the same way) while the provider's settings are unusable."""
    from queue_assets.definitions import defs
    from queue_assets.patterns.resources import LlmResource
    from queue_assets.resources import SharedQueueResource

    monkeypatch.setenv("QUEUE_ASSETS_LLM_PROVIDER", "openai")
    monkeypatch.delenv("QUEUE_ASSETS_LLM_MODEL", raising=False)
    resources = {"shared_queue": SharedQueueResource(db_url=db_url), "llm": LlmResource()}

    def sensor_result():
        ctx = dg.build_sensor_context(
            instance=dg.DagsterInstance.ephemeral(), resources=resources, definitions=defs
        )
        return defs.resolve_sensor_def("pattern_enrichment_sensor")(ctx)

    _ingest(conn, [_pattern_message("singularity-0", ["Phoenix"])])
    unusable = sensor_result()
    assert (
        isinstance(unusable, dg.SkipReason) and "QUEUE_ASSETS_LLM_MODEL is not set" in unusable.skip_message
    )
    monkeypatch.setenv("QUEUE_ASSETS_LLM_MODEL", "qa-model")
    assert isinstance(sensor_result(), dg.RunRequest)
    conn.execute("UPDATE hub.patterns SET status = 'enriched'")
    conn.commit()
    assert isinstance(sensor_result(), dg.SkipReason)
