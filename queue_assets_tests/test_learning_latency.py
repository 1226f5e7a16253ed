"""The fleet learns in one run (issue 12's latency): pattern_messages' ingest sends the llm_request of
a new key in the transaction that stores it, and the run that sent a request takes its reply itself
(ingest/replies.py), so neither an enrichment run nor a reply-queue run has to be launched first."""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest

from queue_assets.ingest.core import IngestConfig, ingest_queue
from queue_assets.ingest.replies import ReplyWaiter
from queue_assets.patterns.enrichment import EnrichmentConfig, run_enrichment
from queue_assets_tests.helpers import count, queue_depth, send_many
from queue_assets_tests.test_enrichment import CFG, pattern, router
from queue_assets_tests.test_fanout import heartbeat, inbox
from queue_assets_tests.test_patterns import _pattern_message

ON_INGEST = IngestConfig(enrich_new_keys=CFG)


def ingest_patterns(conn, messages: list[str], cfg: IngestConfig = ON_INGEST):
    send_many(conn, "pattern_messages", messages)
    conn.commit()
    return ingest_queue(conn, "pattern_messages", cfg)


class RouterThread:
    """The simulated router (test_enrichment.router) answering every `every_s` on its own connection."""

    def __init__(self, db_url: str, *, delay_s: float = 0.0, every_s: float = 0.1, silent: bool = False):
        self.db_url, self.delay_s, self.every_s, self.silent = db_url, delay_s, every_s, silent
        self.stop = threading.Event()
        self.answered: list[dict] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.db_url) as c:
            time.sleep(self.delay_s)
            while not self.stop.is_set():
                answer = (lambda req: None) if self.silent else None
                self.answered += router(c, answer) if answer else router(c)
                time.sleep(self.every_s)

    def __enter__(self) -> RouterThread:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(10)


def test_ingest_sends_the_request_for_a_new_key_in_the_transaction_that_stores_it(conn):
    """Breaks if a new key waits for an enrichment run, or if a key already asked about is asked again."""
    result = ingest_patterns(conn, [_pattern_message("singularity-0", ["Phoenix"])])
    assert len(result.llm_requests) == 1
    assert queue_depth(conn, "llm_requests") == 1
    assert count(conn, "hub.enrichment_requests", "status = 'in_flight' AND canonical_name = 'phoenix'") == 1
    assert pattern(conn)[0] == "enriching"
    again = ingest_patterns(conn, [_pattern_message("singularity-1", ["phoenix-framework"])])
    assert again.stored == 1 and again.llm_requests == []
    assert queue_depth(conn, "llm_requests") == 1
    assert run_enrichment(conn, CFG).sent == []  # nothing left for the enrichment run


def test_without_enrich_new_keys_ingest_sends_nothing(conn):
    """Breaks if ingest sent requests when not configured to (provider openai/off, or core default)."""
    result = ingest_patterns(conn, [_pattern_message("singularity-0", ["Phoenix"])], IngestConfig())
    assert result.llm_requests == [] and queue_depth(conn, "llm_requests") == 0
    assert pattern(conn)[0] == "observed"


def test_ingest_spends_the_hourly_budget_most_seen_key_first(conn):
    """Breaks if ingest's sends ignore the cap, or jump a waiting key that more instances saw."""
    # a backlog: `ecto`, seen by three instances, waits unsent (ingested with nothing sending)
    ingest_patterns(conn, [_pattern_message(f"singularity-{i}", ["Ecto"]) for i in range(3)], IngestConfig())
    capped = IngestConfig(enrich_new_keys=EnrichmentConfig(max_per_hour=1, timeout_s=300, max_attempts=3))
    result = ingest_patterns(conn, [_pattern_message("singularity-9", ["Phoenix", "Plug"])], capped)
    assert len(result.llm_requests) == 1  # two new keys, one request: the budget
    (sent,) = conn.execute("SELECT canonical_name FROM hub.enrichment_requests").fetchone()
    assert sent == "ecto"  # the most-seen waiting key, not the batch's own
    more = ingest_patterns(conn, [_pattern_message("singularity-8", ["Oban"])], capped)
    assert more.llm_requests == [] and count(conn, "hub.enrichment_requests") == 1
    assert queue_depth(conn, "llm_requests") == 1


def test_the_run_that_sent_a_request_takes_its_reply_and_the_fleet_learns(conn, db_url):
    """Breaks if the waiter does not ingest the reply (the pattern stays `enriching` until another
    run), or if the broadcast does not reach the inboxes."""
    for i in range(2):
        heartbeat(conn, f"singularity-{i}")
    result = ingest_patterns(conn, [_pattern_message("singularity-0", ["Phoenix"])])
    waiter = ReplyWaiter(db_url, ON_INGEST, wait_s=30)
    with RouterThread(db_url, delay_s=0.5):
        t = time.monotonic()
        waiter.expect(result.llm_requests)
        got = waiter.close()
        took = time.monotonic() - t
    assert got.stored == 1 and got.dead_lettered == 0 and waiter.errors == []
    assert took < 25, f"the waiter did not stop once its request was answered ({took:.1f}s)"
    assert pattern(conn)[0] == "enriched"
    for i in range(2):
        learned = [m for m in inbox(db_url, f"singularity-{i}") if m.message["type"] == "pattern_learned"]
        assert [m.message["status"] for m in learned] == ["enriched"]
    # the reply queue's own run finds nothing left: the reply was stored exactly once
    assert ingest_queue(conn, "hub_llm_results", IngestConfig()).read == 0
    assert count(conn, "hub.ingest_ledger", "queue = 'hub_llm_results'") == 1


def test_a_waiter_gives_up_after_its_wait_and_leaves_the_request_in_flight(conn, db_url):
    """Breaks if a silent router kept the run alive past QUEUE_ASSETS_LLM_REPLY_WAIT_S."""
    result = ingest_patterns(conn, [_pattern_message("singularity-0", ["Phoenix"])])
    waiter = ReplyWaiter(db_url, ON_INGEST, wait_s=1)
    with RouterThread(db_url, silent=True):
        t = time.monotonic()
        waiter.expect(result.llm_requests)
        got = waiter.close()
        took = time.monotonic() - t
    assert got.read == 0 and 0.9 < took < 10
    assert count(conn, "hub.enrichment_requests", "status = 'in_flight'") == 1


def test_a_waiter_with_no_wait_does_nothing(db_url):
    waiter = ReplyWaiter(db_url, ON_INGEST, wait_s=0)
    waiter.expect(["enrich-framework-x-1-abcd"])
    assert waiter.expected == 0 and waiter.close().read == 0


def test_expect_after_the_thread_stopped_starts_another(conn, db_url):
    """Breaks if a request sent after the waiter's thread decided to stop were never waited for."""
    first = ingest_patterns(conn, [_pattern_message("singularity-0", ["Phoenix"])])
    waiter = ReplyWaiter(db_url, ON_INGEST, wait_s=30)
    with RouterThread(db_url):
        waiter.expect(first.llm_requests)
        deadline = time.monotonic() + 20
        while pattern(conn)[0] != "enriched" and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # the thread has seen nothing in flight and stopped
        second = ingest_patterns(conn, [_pattern_message("singularity-0", ["Ecto"])])
        waiter.expect(second.llm_requests)
        got = waiter.close()
    assert got.stored == 2
    assert pattern(conn, "ecto")[0] == "enriched"


@pytest.mark.parametrize("queue_asset", ["pattern_messages"])
def test_a_dagster_ingest_run_enriches_a_new_key_without_other_runs(conn, db_url, queue_asset):
    """Breaks if the ingest asset does not send the request or does not take the reply in its run,
    or if the UI gets no materialization of enrichment_replies for it."""
    import dagster as dg

    from queue_assets.ingest.assets import INGEST_ASSETS
    from queue_assets.resources import SharedQueueResource

    heartbeat(conn, "singularity-0")
    send_many(conn, "pattern_messages", [_pattern_message("singularity-0", ["Phoenix"])])
    conn.commit()
    (asset,) = [a for a in INGEST_ASSETS if a.key == dg.AssetKey(queue_asset)]
    with RouterThread(db_url):
        result = dg.materialize([asset], resources={"shared_queue": SharedQueueResource(db_url=db_url)})
    assert result.success
    assert pattern(conn)[0] == "enriched"
    replies = result.asset_materializations_for_node(queue_asset)
    keys = {m.asset_key for m in replies}
    assert dg.AssetKey("enrichment_replies") in keys, keys
    (taken,) = [m for m in replies if m.asset_key == dg.AssetKey("enrichment_replies")]
    assert taken.metadata["stored"].value == 1
    learned = [m for m in inbox(db_url, "singularity-0") if m.message["type"] == "pattern_learned"]
    assert [m.message["status"] for m in learned] == ["enriched"]


def test_a_dagster_enrichment_run_takes_the_replies_to_what_it_sent(conn, db_url):
    """The cache-miss path: a discovery is sent by the enrichment run, whose reply it then takes."""
    import dagster as dg

    from queue_assets.patterns.assets import pattern_enrichment
    from queue_assets.patterns.resources import LlmResource
    from queue_assets.resources import SharedQueueResource

    heartbeat(conn, "singularity-0")
    miss = conn.execute("SELECT hub_api.query_pattern('framework', 'Phoenix')").fetchone()[0]
    conn.commit()
    assert miss["status"] == "unknown"
    resources = {"shared_queue": SharedQueueResource(db_url=db_url), "llm": LlmResource()}
    with RouterThread(db_url):
        result = dg.materialize([pattern_enrichment], resources=resources)
    assert result.success
    assert pattern(conn)[0] == "enriched"
    learned = [m for m in inbox(db_url, "singularity-0") if m.message["type"] == "pattern_learned"]
    assert len(learned) == 1 and learned[0].message["answers"] == [str(miss["discovery_request_id"])]


def test_an_ingest_run_waiting_for_replies_goes_on_draining_its_own_queue(conn, db_url, monkeypatch):
    """Breaks if the wait for replies stopped the run from reading pattern_messages (a message sent
    meanwhile would then wait for another run's launch), or if the wait outlived its limit."""
    import dagster as dg

    from queue_assets.ingest.assets import INGEST_ASSETS
    from queue_assets.resources import SharedQueueResource

    monkeypatch.setenv("QUEUE_ASSETS_RUN_LINGER_S", "0")  # without the wait, the run ends when dry
    monkeypatch.setenv("QUEUE_ASSETS_LLM_REPLY_WAIT_S", "6")
    send_many(conn, "pattern_messages", [_pattern_message("singularity-0", ["Phoenix"])])
    conn.commit()
    (asset,) = [a for a in INGEST_ASSETS if a.key == dg.AssetKey("pattern_messages")]

    def later() -> None:
        time.sleep(2.5)
        with psycopg.connect(db_url) as c:
            send_many(c, "pattern_messages", [_pattern_message("singularity-1", ["Ecto"])])

    sender = threading.Thread(target=later)
    with RouterThread(db_url, silent=True):
        sender.start()
        t = time.monotonic()
        result = dg.materialize([asset], resources={"shared_queue": SharedQueueResource(db_url=db_url)})
        took = time.monotonic() - t
    sender.join()
    meta = result.asset_materializations_for_node("pattern_messages")[-1].metadata
    assert meta["stored"].value == 2, "the message sent during the wait was left for another run"
    assert took < 30
    assert queue_depth(conn, "pattern_messages") == 0
    assert count(conn, "hub.enrichment_requests", "status = 'in_flight'") == 2


def _code_analysis(instance: str) -> str:
    return json.dumps(
        {
            "type": "code_analysis",
            "instance_id": instance,
            "timestamp": "2025-10-25T12:00:00.000000Z",
            "analysis": {"files": 12, "dead_code": 1},
        }
    )


def test_a_batch_without_pattern_detections_is_stored_on_a_fresh_session(db_url):
    """The CI soak dead-lettered a valid message: a run whose first batch held only code_analysis
    messages asked for the new keys of a catalogue update that never ran in its session (the scratch
    table did not exist). Breaks if such a batch is refused or dead-lettered."""
    with psycopg.connect(db_url) as conn:
        send_many(
            conn, "pattern_messages", [_code_analysis("singularity-0"), _code_analysis("singularity-1")]
        )
        result = ingest_queue(conn, "pattern_messages", ON_INGEST)
        assert (result.stored, result.dead_lettered) == (2, 0), result.dlq_reasons
        assert result.llm_requests == []


def test_a_batch_without_pattern_detections_does_not_resend_the_previous_batchs_keys(db_url):
    """The scratch table still holds the previous batch's names: a code_analysis-only batch must
    not take them for its own new keys (they were handled when that batch was stored)."""
    capped = IngestConfig(enrich_new_keys=EnrichmentConfig(max_per_hour=1, timeout_s=300, max_attempts=3))
    with psycopg.connect(db_url) as conn:
        first = ingest_patterns(conn, [_pattern_message("singularity-0", ["Phoenix", "Ecto"])], capped)
        assert len(first.llm_requests) == 1  # the budget allowed one of the two new keys
        conn.execute("UPDATE hub.enrichment_budget SET sent = 0")
        conn.commit()
        send_many(conn, "pattern_messages", [_code_analysis("singularity-0")])
        again = ingest_queue(conn, "pattern_messages", capped)
        assert (again.stored, again.dead_lettered) == (1, 0), again.dlq_reasons
        assert again.llm_requests == []  # the waiting key is the enrichment run's, in its order
