"""The daily export assets (KnowledgeExportWorker): `aggregated_learning` -> `learned_pattern_export`.

Both are partitioned by cycle: one daily partition per UTC date, keyed `YYYY-MM-DD`, whose window
starts at 01:00 UTC that day (the schedule's tick) and ends at 01:00 the next day. The partition
key is the cycle date in the branch name; a cycle's snapshot counts reports stored before its
window's end, so re-running today's cycle picks up what arrived since, while a backfill of an old
cycle sees only what the hub had by then.
"""

# No `from __future__ import annotations` here: Dagster reads the run-config class from the
# asset function's annotations at definition time.
from datetime import date, timedelta

import dagster as dg
from pydantic import Field

from ..fanout import publish
from ..git.resources import GitHubResource, TemplatesRepoResource
from ..resources import SharedQueueResource
from .checks import evaluate_learning_checks, learning_check_specs
from .core import ExportResult, run_export
from .learning import LearningSummary, aggregate_learning
from .render import md_text
from .resources import ExportSettingsResource
from .settings import EXPORT_FOLDER, ExportSettings, export_start_date

EXPORT_GROUP = "export"
# The first cycle is a setting (QUEUE_ASSETS_EXPORT_START_DATE, default 2026-11-01), read once here
# because Dagster fixes a partitions definition when the definitions load.
EXPORT_PARTITIONS = dg.DailyPartitionsDefinition(
    start_date=export_start_date().isoformat(),
    timezone="UTC",
    hour_offset=1,
    end_offset=1,
)
ANNOUNCED_CHECK = "learning_exported_announced"
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=26), warn_window=timedelta(hours=25)
)


class LearningConfig(dg.Config):
    max_growth_factor: float | None = Field(
        default=None,
        description="Override QUEUE_ASSETS_EXPORT_MAX_GROWTH for this run (e.g. after a real jump in learning); "
        "a number of at least 1.",
    )


def _cycle(context: dg.AssetExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


def learning_metadata(s: LearningSummary, settings: ExportSettings) -> dict:
    rows = "\n".join(
        f"| {md_text(r.artifact_id, 50)} | {md_text(r.name, 40)} | {r.total_usage} | {r.success_rate:.3f} | "
        f"{r.instance_count} |"
        for r in s.top
    )
    table = "| artifact | name | usage | success rate | instances |\n|---|---|---:|---:|---:|\n" + rows
    return {
        "cycle": dg.MetadataValue.text(s.cycle.isoformat()),
        "artifacts": dg.MetadataValue.int(s.artifacts),
        "selected": dg.MetadataValue.int(s.selected),
        "selected_usage": dg.MetadataValue.int(s.selected_usage),
        "reports": dg.MetadataValue.int(s.reports),
        "instances": dg.MetadataValue.int(s.instances),
        "selected_instances": dg.MetadataValue.int(s.selected_instances),
        "pruned_snapshot_rows": dg.MetadataValue.int(s.pruned_rows),
        "cutoff": dg.MetadataValue.text(s.cutoff.isoformat()),
        "thresholds": dg.MetadataValue.text(
            f"usage >= {settings.min_usage}, success rate >= {settings.min_success_rate:g}, "
            f"instances >= {settings.min_instances}"
        ),
        "top_artifacts": dg.MetadataValue.md(table if s.top else "_no artifact passed the thresholds_"),
    }


@dg.asset(
    name="aggregated_learning",
    group_name=EXPORT_GROUP,
    partitions_def=EXPORT_PARTITIONS,
    deps=[dg.AssetKey("learned_patterns")],
    kinds={"postgres", "python"},
    check_specs=learning_check_specs("aggregated_learning"),
    freshness_policy=DAILY_FRESHNESS,
    metadata={"table": "hub.aggregated_learning"},
    description=(
        "Learned artifacts combined across instances per artifact id, in PostgreSQL: total usage, "
        "usage-weighted success rate, contributing instances, first/last seen. One snapshot per daily "
        "cycle in hub.aggregated_learning; artifacts above the QUEUE_ASSETS_EXPORT_MIN_* thresholds "
        "are selected for the export. Blocking checks guard the export."
    ),
)
def aggregated_learning(
    context: dg.AssetExecutionContext,
    config: LearningConfig,
    shared_queue: SharedQueueResource,
    export_settings: ExportSettingsResource,
):
    settings = export_settings.settings()
    factor = settings.max_growth_factor if config.max_growth_factor is None else config.max_growth_factor
    if not factor >= 1.0:
        raise dg.Failure(
            f"config max_growth_factor={config.max_growth_factor!r}: must be a number of at least 1",
            allow_retries=False,
        )
    cycle = _cycle(context)
    cutoff = context.partition_time_window.end
    with shared_queue.connection(autocommit=True) as conn:
        summary = aggregate_learning(
            conn, cycle, cutoff, settings, keep_days=shared_queue.settings.retention_days
        )
        checks = evaluate_learning_checks(conn, cycle, summary.selected, factor)
    context.log.info(
        f"cycle {cycle}: {summary.artifacts} artifacts combined from {summary.reports} reports, "
        f"{summary.selected} selected for the export"
    )
    yield dg.MaterializeResult(metadata=learning_metadata(summary, settings))
    yield from checks


def export_metadata(r: ExportResult, provider_name: str | None) -> dict:
    if provider_name is None:
        mode = "branch only: no pull-request provider configured (set GITHUB_REPOSITORY and GITHUB_TOKEN)"
    else:
        mode = f"pull request via {provider_name}"
    if r.status == "no_diff":
        announced = "not sent: the base branch already holds this export"
    elif r.notify_error is not None:
        announced = f"FAILED (re-run this cycle to send it; the branch and PR are safe): {md_text(r.notify_error, 300)}"
    elif r.notified is None:
        announced = "not sent: this commit and PR were announced before"
    else:
        announced = f"sent to {r.notified} instance inboxes"
    table = (
        "| | |\n|---|---|\n"
        f"| branch | `{r.branch}` |\n| commit | `{(r.commit_sha or '')[:12]}` |\n"
        f"| status | {r.status} |\n| pull request | {r.pr_url or '—'} ({r.pr_action or 'none'}) |\n"
        f"| artifacts | {r.artifacts} |\n| remote | {md_text(r.remote_url, 120)} |\n"
        f"| learning_exported | {announced} |\n"
    )
    meta = {
        "artifacts_count": dg.MetadataValue.int(r.artifacts),
        "files_written": dg.MetadataValue.int(r.files_written),
        "files_changed_vs_base": dg.MetadataValue.int(len(r.changed_files)),
        "branch": dg.MetadataValue.text(r.branch),
        "base_branch": dg.MetadataValue.text(r.base_branch),
        "commit_sha": dg.MetadataValue.text(r.commit_sha or ""),
        "new_commit": dg.MetadataValue.bool(r.committed),
        "pushed": dg.MetadataValue.bool(r.pushed),
        "status": dg.MetadataValue.text(r.status),
        "export_mode": dg.MetadataValue.text(mode),
        "pr_action": dg.MetadataValue.text(r.pr_action or "none"),
        "remote": dg.MetadataValue.text(r.remote_url),
        "instances_notified": dg.MetadataValue.int(r.notified or 0),
        "learning_exported": dg.MetadataValue.text(announced),
        "export_folder": dg.MetadataValue.text(EXPORT_FOLDER),
        "summary": dg.MetadataValue.md(table),
    }
    if r.pr_url:
        meta["pr_url"] = dg.MetadataValue.url(r.pr_url)
    return meta


@dg.asset(
    name="learned_pattern_export",
    group_name=EXPORT_GROUP,
    partitions_def=EXPORT_PARTITIONS,
    deps=[aggregated_learning],
    kinds={"git", "github", "python"},
    freshness_policy=DAILY_FRESHNESS,
    check_specs=[
        dg.AssetCheckSpec(
            ANNOUNCED_CHECK,
            asset="learned_pattern_export",
            description="`learning_exported` reached the instances' inboxes (a failure here never fails the "
            "export: the branch and PR are made; re-run the cycle to send the announcement).",
        )
    ],
    description=(
        "The cycle's selected artifacts and a markdown summary, written to the one branch "
        "feature/learned-patterns-YYYYMMDD of the templates repository (updated in place on re-run, "
        "no commit when nothing changed), pushed with the result checked, a pull request opened or "
        "updated through GitHub when configured, recorded in hub.exports, and announced to every "
        "active instance as `learning_exported`."
    ),
)
def learned_pattern_export(
    context: dg.AssetExecutionContext,
    shared_queue: SharedQueueResource,
    templates_repo: TemplatesRepoResource,
    github: GitHubResource,
    export_settings: ExportSettingsResource,
) -> dg.MaterializeResult:
    settings = export_settings.settings()
    provider = github.provider()
    remote = templates_repo.remote_url()
    auth = provider.settings.git_auth_for(remote) if provider else None
    with shared_queue.connection(autocommit=True) as conn:
        result = run_export(
            conn,
            cycle=_cycle(context),
            cutoff=context.partition_time_window.end,
            settings=settings,
            work_copy=lambda: templates_repo.work_copy("export", auth),
            remote_url=remote,
            provider=provider,
            publish=publish,
            run_id=context.run.run_id,
            log=context.log.info,
            stale_after_s=shared_queue.settings.stale_after_s,
        )
    if result.notify_error is not None:
        context.log.warning(f"learning_exported not announced: {result.notify_error}")
    return dg.MaterializeResult(
        metadata=export_metadata(result, provider.name if provider else None),
        check_results=[
            dg.AssetCheckResult(
                check_name=ANNOUNCED_CHECK,
                passed=result.notify_error is None,
                severity=dg.AssetCheckSeverity.WARN,
                description=result.notify_error or "learning_exported sent, or nothing new to announce",
            )
        ],
    )
