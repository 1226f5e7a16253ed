"""Ingest assets: one per consumed queue, each draining its queue into `hub.*` tables.

The queues themselves are external `AssetSpec`s (`pgmq/<queue>`), so the UI draws queue → table lineage.
"""

import dagster as dg
from psycopg import sql

from ..db import one_row
from ..names import dlq_for
from ..queues import HUB_APPROVAL_RESPONSES, HUB_LLM_RESULTS, INGEST_ASSET_FOR, REPLY_INGEST_ASSET_FOR
from ..resources import SharedQueueResource
from .core import IngestConfig, IngestResult, ingest_queue
from .replies import ReplyWaiter

INGEST_GROUP = "ingest"
SUCCESSOR_OF_TAG = "queue_assets/successor_of"
"""Tag of a run the ingest sensor requested as the successor of the run it names."""
SUCCESSOR_TAKES_OVER_STATUSES = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.SUCCESS]
"""A successor in one of these is draining the queue (or drained it): its predecessor hands over."""
QUEUE_GROUP = "queues"

QUEUE_TABLES = {
    "pattern_messages": "hub.pattern_observations, hub.code_analyses",
    "learned_patterns": "hub.learned_artifacts",
    "instance_heartbeat": "hub.heartbeats, hub.instances",
    HUB_LLM_RESULTS: "hub.patterns (enrichment), hub.enrichment_requests, and a pattern_learned broadcast "
    "(or, with approval required, an approval_request)",
    HUB_APPROVAL_RESPONSES: "hub.pattern_approvals, hub.patterns (approved / rejected), and a pattern_learned "
    "broadcast",
}
# The reply queues: who answers on them, and the asset whose requests name them as `reply_to`.
REPLY_QUEUE_SOURCES = {
    HUB_LLM_RESULTS: ("the LLM router's replies to the hub's llm_requests", "pattern_enrichment"),
    HUB_APPROVAL_RESPONSES: (
        "the HITL bridge's decisions on the hub's approval_requests (QUEUE_ASSETS_PATTERN_APPROVAL=required)",
        "enrichment_replies",
    ),
}


def queue_spec(queue: str, description: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=dg.AssetKey(["pgmq", queue]),
        description=description,
        group_name=QUEUE_GROUP,
        kinds={"postgres"},
        metadata={"pgmq_queue": queue},
    )


QUEUE_SPECS = [
    queue_spec(q, f"pgmq queue `{q}`, written by the instances; drained by the `{a}` asset.")
    for q, a in INGEST_ASSET_FOR.items()
] + [
    queue_spec(
        q, f"pgmq queue `{q}`: {REPLY_QUEUE_SOURCES[q][0]} (`reply_to`); drained by the `{a}` asset."
    ).replace_attributes(deps=[dg.AssetKey(REPLY_QUEUE_SOURCES[q][1])])
    for q, a in REPLY_INGEST_ASSET_FOR.items()
]


def ingest_metadata(result: IngestResult, dlq_depth: int, lag_s: float) -> dict:
    top = result.per_instance.most_common(20)
    table = "| instance | stored |\n|---|---|\n" + "\n".join(f"| `{i}` | {n} |" for i, n in top)
    reasons = "| reason | messages |\n|---|---|\n" + "\n".join(
        f"| {k} | {n} |" for k, n in result.dlq_reasons.most_common()
    )
    return {
        "read": dg.MetadataValue.int(result.read),
        "stored": dg.MetadataValue.int(result.stored),
        "duplicates": dg.MetadataValue.int(result.duplicates),
        "ledger_conflicts": dg.MetadataValue.int(result.ledger_conflicts),
        "dead_lettered": dg.MetadataValue.int(result.dead_lettered),
        "batches": dg.MetadataValue.int(result.batches),
        "lag_seconds": dg.MetadataValue.float(round(lag_s, 3)),
        "rate_msgs_per_s": dg.MetadataValue.float(round(result.rate, 1)),
        "elapsed_seconds": dg.MetadataValue.float(round(result.elapsed_s, 3)),
        "instances": dg.MetadataValue.int(len(result.per_instance)),
        "dlq_depth": dg.MetadataValue.int(dlq_depth),
        "stopped_by": dg.MetadataValue.text(result.stopped_by),
        "per_instance": dg.MetadataValue.md(table if top else "_no messages stored_"),
        "dead_letter_reasons": dg.MetadataValue.md(reasons if result.dlq_reasons else "_none_"),
    }


def report_replies(context, waiter: ReplyWaiter, shared_queue: SharedQueueResource) -> None:
    """Wait for `waiter` and, when it ingested replies, record them as a materialization of the
    reply queue's asset (the UI shows them where the reply queue's own runs show theirs)."""
    if waiter.expected:
        context.log.info(
            f"waiting up to {waiter.wait_s:g}s for the replies to {waiter.expected} llm_request(s)"
        )
    got = waiter.close()
    for error in waiter.errors:
        context.log.warning(
            f"taking the replies in this run failed (hub_llm_results' own run takes them): {error}"
        )
    if got.read:
        with shared_queue.connection() as conn:
            dlq_depth, now = one_row(
                conn.execute(
                    sql.SQL("SELECT count(*), clock_timestamp() FROM pgmq.{}").format(
                        sql.Identifier("q_" + dlq_for(HUB_LLM_RESULTS))
                    )
                ),
                "the reply queue's dead-letter depth",
            )
        lag = (now - got.oldest_enqueued_at).total_seconds() if got.oldest_enqueued_at else 0.0
        context.log_event(
            dg.AssetMaterialization(
                asset_key=dg.AssetKey(REPLY_INGEST_ASSET_FOR[HUB_LLM_RESULTS]),
                description=f"replies taken by the run that sent their requests ({context.asset_key.to_user_string()})",
                metadata={
                    **ingest_metadata(got, dlq_depth, lag),
                    "taken_by": dg.MetadataValue.text(context.run.run_id),
                },
            )
        )
        context.log.info(f"{HUB_LLM_RESULTS}: {got.read} replies read, {got.stored} stored in this run")


def build_ingest_asset(queue: str, name: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        deps=[dg.AssetKey(["pgmq", queue])],
        group_name=INGEST_GROUP,
        kinds={"postgres", "python"},
        description=(
            f"Drains pgmq queue `{queue}` into {QUEUE_TABLES[queue]}, exactly once in effect: "
            f"read a batch, validate, then store rows + dead-letter + archive in one transaction. "
            f"Invalid messages go to `{dlq_for(queue)}` with the reason."
        ),
        metadata={"source_queue": queue, "dead_letter_queue": dlq_for(queue)},
    )
    def _ingest(context: dg.AssetExecutionContext, shared_queue: SharedQueueResource) -> dg.MaterializeResult:
        cfg = IngestConfig.from_settings(shared_queue.settings)

        def progress(r: IngestResult) -> None:
            if r.batches % 20 == 0:
                context.log.info(
                    f"{queue}: {r.read} read, {r.stored} stored, {r.duplicates} duplicates, "
                    f"{r.dead_lettered} dead-lettered"
                )

        def successor_pending() -> bool:
            # The sensor requested this run's successor (tag queue_assets/successor_of) and none has
            # started: keep draining past the cap, so the queue never waits for a launch. A successor
            # whose launch failed (on an overloaded machine the code server's StartRun times out)
            # counts as not started: the sensor requests another one, and this run drains meanwhile.
            successors = context.instance.get_run_records(
                filters=dg.RunsFilter(tags={SUCCESSOR_OF_TAG: context.run.run_id}), limit=10
            )
            return bool(successors) and not any(
                r.dagster_run.status in SUCCESSOR_TAKES_OVER_STATUSES for r in successors
            )

        # pattern_messages may send llm_requests for new keys (cfg.enrich_new_keys): their replies
        # are taken in this run, not after a launch of hub_llm_results' own (ingest/replies.py).
        waiter = (
            ReplyWaiter(shared_queue.url, cfg, shared_queue.settings.llm_reply_wait_s)
            if cfg.enrich_new_keys is not None and queue == "pattern_messages"
            else None
        )

        def on_batch(r: IngestResult) -> None:
            if waiter is not None and len(r.llm_requests) > waiter.expected:
                waiter.expect(r.llm_requests)
            progress(r)

        with shared_queue.connection() as conn:
            try:
                result = ingest_queue(
                    conn,
                    queue,
                    cfg,
                    on_batch=on_batch,
                    prefetch_url=shared_queue.url,
                    successor_pending=successor_pending,
                    # while the replies are awaited the run goes on draining its own queue too
                    wait_while=(lambda: waiter.waiting) if waiter is not None else None,
                )
            finally:
                if waiter is not None:
                    # at its cap the run hands over to its successor: the replies still awaited
                    # are left to hub_llm_results' own run, so this run frees its slot at once
                    waiter.stop()
                    report_replies(context, waiter, shared_queue)
            dlq_depth, now = one_row(
                conn.execute(
                    sql.SQL("SELECT count(*), clock_timestamp() FROM pgmq.{}").format(
                        sql.Identifier("q_" + dlq_for(queue))
                    )
                ),
                f"the depth of {dlq_for(queue)}",
            )
        lag = (now - result.oldest_enqueued_at).total_seconds() if result.oldest_enqueued_at else 0.0
        context.log.info(
            f"{queue}: done ({result.stopped_by}): {result.read} read, {result.stored} stored, "
            f"{result.duplicates} duplicates, {result.dead_lettered} dead-lettered in {result.elapsed_s:.2f}s"
        )
        return dg.MaterializeResult(metadata=ingest_metadata(result, dlq_depth, lag))

    return _ingest


INGEST_ASSETS = [build_ingest_asset(q, a) for q, a in {**INGEST_ASSET_FOR, **REPLY_INGEST_ASSET_FOR}.items()]
