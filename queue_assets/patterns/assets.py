"""The `pattern_catalogue` asset (a cheap refresh: ranks, counts, top table) and the external
`pgmq/pattern_discovery` queue it feeds through hub_api's misses.

Ingest keeps `hub.patterns` current row by row as messages arrive (sql/010); this asset only makes
the catalogue visible in the UI: its counts as plotted metadata and the top patterns as a table.
"""

import dagster as dg

from ..db import one_row
from ..ingest.assets import QUEUE_GROUP, report_replies
from ..ingest.core import IngestConfig
from ..ingest.replies import ReplyWaiter
from ..queues import PATTERN_DISCOVERY
from ..resources import SharedQueueResource
from . import catalogue, enrichment, summaries
from .resources import LlmResource

PATTERNS_GROUP = "patterns"
TOP_SHOWN = 15


def top_table(rows: list[dict]) -> str:
    if not rows:
        return "_no patterns observed yet_"

    def cell(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3f}"
        if isinstance(v, list):
            v = ", ".join(v[:3])
        return str(v).replace("|", "\\|")[:60]

    cols = catalogue.LIST_COLUMNS
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "\n".join("| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in rows)


@dg.asset(
    name="pattern_catalogue",
    deps=[dg.AssetKey("pattern_messages"), dg.AssetKey("aggregated_patterns")],
    group_name=PATTERNS_GROUP,
    kinds={"postgres"},
    description=(
        "The pattern authority's catalogue (seed 003): hub.patterns, one row per (pattern_type, "
        "canonical name), every name sent in hub.pattern_aliases. Kept current by ingest in the "
        "transaction that stores the observations; instances query it through hub_api "
        "(docs/patterns.md). This refresh copies the hourly ranking's ranks and reports counts."
    ),
    metadata={"table": "hub.patterns", "aliases": "hub.pattern_aliases", "api": "hub_api.query_pattern"},
)
def pattern_catalogue(shared_queue: SharedQueueResource) -> dg.MaterializeResult:
    with shared_queue.connection() as conn:
        with conn.transaction():
            reranked = catalogue.refresh_ranks(conn)
        counts = catalogue.counts(conn)
        top = catalogue.top(conn, limit=TOP_SHOWN)
        hourly = summaries.query_counts(conn, hours=1)
    queries, misses = (hourly[0][1], hourly[0][2]) if hourly else (0, 0)
    return dg.MaterializeResult(
        metadata={
            "patterns": dg.MetadataValue.int(counts.patterns),
            "aliases": dg.MetadataValue.int(counts.aliases),
            "ranked": dg.MetadataValue.int(counts.ranked),
            "reranked": dg.MetadataValue.int(reranked),
            "max_instances": dg.MetadataValue.int(counts.instances_max),
            "discovery_requests_24h": dg.MetadataValue.int(counts.discovery_requests_24h),
            "queries_this_hour": dg.MetadataValue.int(queries),
            "misses_this_hour": dg.MetadataValue.int(misses),
            **{f"patterns_{t}": dg.MetadataValue.int(n) for t, n in counts.by_type.items()},
            "top_patterns": dg.MetadataValue.md(top_table(top)),
        }
    )


PATTERN_DISCOVERY_SPEC = dg.AssetSpec(
    key=dg.AssetKey(["pgmq", PATTERN_DISCOVERY]),
    deps=[dg.AssetKey("pattern_catalogue")],
    description="pgmq queue `pattern_discovery`: hub_api.query_pattern sends one message per unknown "
    "pattern key per hour (an instance asked for a name nobody sent); read by the enrichment.",
    group_name=QUEUE_GROUP,
    kinds={"postgres"},
    metadata={"pgmq_queue": PATTERN_DISCOVERY},
)


@dg.asset(
    name="pattern_enrichment",
    deps=[dg.AssetKey("pattern_catalogue"), dg.AssetKey(["pgmq", PATTERN_DISCOVERY])],
    group_name=PATTERNS_GROUP,
    kinds={"postgres", "python"},
    description=(
        "Enriches new pattern keys through the LLM router (issue 12): keys first seen in ingest and "
        "keys asked for on pgmq/pattern_discovery, most-seen first, within QUEUE_ASSETS_LLM_MAX_PER_HOUR, "
        "one request in flight per key; sends llm_request (reply_to hub_llm_results) in the transaction "
        "that records it, or (QUEUE_ASSETS_LLM_PROVIDER=openai) asks an OpenAI-compatible server and "
        "stores its answer; times out, retries with backoff, then marks enrichment_failed; a refused key, "
        "unknown model or unreachable server withdraws the run's requests and fails the run (docs/patterns.md)."
    ),
    metadata={
        "table": "hub.enrichment_requests",
        "sends_to": "pgmq/llm_requests",
        "reply_to": "hub_llm_results",
    },
)
def pattern_enrichment(
    context: dg.AssetExecutionContext, shared_queue: SharedQueueResource, llm: LlmResource
) -> dg.MaterializeResult:
    settings = shared_queue.settings
    cfg = enrichment.EnrichmentConfig.from_settings(settings)
    transport = llm.transport(cfg) if cfg.provider != "off" else None
    with shared_queue.connection() as conn:
        try:
            run = enrichment.run_enrichment(conn, cfg, transport=transport)
        except enrichment.ProviderUnusable as exc:
            # the deployment is wrong, not a pattern: one clear failure, and the sensor backs off
            raise dg.Failure(
                description=str(exc),
                metadata={
                    "error_kind": dg.MetadataValue.text(exc.error_kind or ""),
                    "withdrawn_requests": dg.MetadataValue.int(exc.withdrawn),
                    "answered_before": dg.MetadataValue.int(exc.answered),
                },
                allow_retries=False,
            ) from None
        if transport is not None and not transport.synchronous and run.sent:
            # the replies to what this run sent are taken here, not after a launch of their own run
            waiter = ReplyWaiter(
                shared_queue.url, IngestConfig.from_settings(settings), settings.llm_reply_wait_s
            )
            waiter.expect(run.sent)
            report_replies(context, waiter, shared_queue)
        states = dict(
            conn.execute("SELECT status, count(*) FROM hub.enrichment_requests GROUP BY status").fetchall()
        )
        (failed,) = one_row(
            conn.execute("SELECT count(*) FROM hub.patterns WHERE status = 'enrichment_failed'"),
            "the count of enrichment_failed patterns",
        )
    shown = LlmResource.describe(transport) if transport is not None else {"provider": "off"}
    return dg.MaterializeResult(
        metadata={
            **{k: dg.MetadataValue.text(v) for k, v in shown.items()},
            "requests_sent": dg.MetadataValue.int(len(run.sent)),
            "answered_now": dg.MetadataValue.int(run.answered),
            "failed_now": dg.MetadataValue.int(len(run.failed)),
            **({"failures_now": dg.MetadataValue.md(_failures(run.failed))} if run.failed else {}),
            "timed_out_now": dg.MetadataValue.int(run.timed_out),
            "gave_up_now": dg.MetadataValue.int(run.failed_for_good),
            "discoveries_taken": dg.MetadataValue.int(run.discoveries),
            "discoveries_dead_lettered": dg.MetadataValue.int(run.discoveries_dead_lettered),
            "budget_left_this_hour": dg.MetadataValue.int(run.budget_left),
            "in_flight": dg.MetadataValue.int(states.get("in_flight", 0)),
            "answered_total": dg.MetadataValue.int(states.get("answered", 0)),
            "enrichment_failed_patterns": dg.MetadataValue.int(failed),
        }
    )


def _failures(reasons: list[str]) -> str:
    rows = "\n".join("| " + r.replace("|", "\\|").replace("\n", " ")[:200] + " |" for r in reasons[:10])
    return "| why the attempt failed |\n|---|\n" + rows
