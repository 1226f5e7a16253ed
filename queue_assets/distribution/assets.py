"""Distribution assets: `pattern_distribution` and `template_updates`, plus the external assets
they write to (the `templates_data` repository, the `template_updates` queue, the instances'
inboxes) so the UI draws the whole lineage.
"""

# No `from __future__ import annotations`: Dagster resolves the run config class from the
# function's annotation at definition time.
from datetime import timedelta

import dagster as dg

from ..aggregation.assets import aggregated_patterns
from ..git.repo import GitAuth, split_credentials
from ..git.resources import GitHubResource, TemplatesRepoResource
from ..redact import redact
from ..resources import SharedQueueResource
from ..retries import retry_policy
from . import patterns, templates
from .patterns import DistributionRefused, PatternDistribution, distribute_patterns
from .templates import TemplateDistribution, distribute_templates

DISTRIBUTION_GROUP = "distribution"
HOURLY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=2), warn_window=timedelta(minutes=75)
)
FOUR_HOURLY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=9), warn_window=timedelta(hours=5)
)

# "Hourly, after aggregation": run once each time aggregated_patterns is materialized, and only
# when its blocking checks passed, so a bad ranking never reaches Git or the instances.
PATTERN_SYNC_CONDITION = (
    dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("after each aggregation whose blocking checks passed")

TEMPLATES_REPO_KEY = dg.AssetKey(["git", "templates_data"])


def public_git_url(remote: str) -> str:
    """The remote as instances and people see it: credentials removed (not merely masked)."""
    return redact(split_credentials(remote)[0])


def git_auth(github: GitHubResource, remote: str) -> GitAuth | None:
    settings = github.github_settings()
    return settings.git_auth_for(remote) if settings else None


class PatternDistributionConfig(dg.Config):
    max_patterns: int = patterns.MESSAGE_MAX_PATTERNS
    """At most this many top patterns go into the message (fewer if the 1 MiB limit is reached)."""


def _sync_metadata(sync) -> dict:
    if sync is None:
        return {}
    return {
        "active_instances": dg.MetadataValue.int(len(sync.active)),
        "stale_instances": dg.MetadataValue.int(len(sync.stale)),
        "inboxes_created": dg.MetadataValue.int(len(sync.created)),
        "inboxes_bound": dg.MetadataValue.int(len(sync.bound)),
        "inboxes_unbound": dg.MetadataValue.int(len(sync.unbound)),
    }


def pattern_metadata(r: PatternDistribution, url: str) -> dict:
    table = (
        "| | |\n|---|---|\n"
        f"| aggregation run | {r.aggregation_run_id if r.aggregation_run_id is not None else '—'} |\n"
        f"| patterns | {r.patterns} ({r.sent_patterns} in the message"
        f"{', cut to fit' if r.truncated else ''}) |\n"
        f"| Git | {'new commit' if r.committed else 'unchanged, no commit'} `{(r.commit or '')[:12]}` |\n"
        f"| inboxes | {r.copies} copies |\n"
    )
    return {
        "patterns": dg.MetadataValue.int(r.patterns),
        "patterns_sent": dg.MetadataValue.int(r.sent_patterns),
        "message_truncated": dg.MetadataValue.bool(r.truncated),
        "committed": dg.MetadataValue.bool(r.committed),
        "commit": dg.MetadataValue.text(r.commit or ""),
        "push_attempts": dg.MetadataValue.int(r.push_attempts),
        "inbox_copies": dg.MetadataValue.int(r.copies),
        "remote": dg.MetadataValue.text(url),
        **_sync_metadata(r.sync),
        "summary": dg.MetadataValue.md(table),
    }


@dg.asset(
    name="pattern_distribution",
    deps=[aggregated_patterns],
    group_name=DISTRIBUTION_GROUP,
    kinds={"git", "postgres"},
    automation_condition=PATTERN_SYNC_CONDITION,
    # On the asset, not a job: the automation sensor's runs use no job of ours.
    retry_policy=retry_policy("pattern_distribution"),
    freshness_policy=HOURLY_FRESHNESS,
    description=(
        "PatternSyncWorker: after each aggregation whose blocking checks passed, commits the ranking to "
        "the templates_data repository (patterns/aggregated_patterns.json + README.md on main) only when "
        "its content changed, and fans an `aggregated_patterns` message out to every active instance "
        "(pgmq.send_topic, one copy per inbox). Recorded in hub.distributions."
    ),
)
def pattern_distribution(
    context: dg.AssetExecutionContext,
    config: PatternDistributionConfig,
    shared_queue: SharedQueueResource,
    templates_repo: TemplatesRepoResource,
    github: GitHubResource,
) -> dg.MaterializeResult:
    remote = templates_repo.remote_url()
    url = public_git_url(remote)
    auth = git_auth(github, remote)
    with shared_queue.connection() as conn:
        try:
            result = distribute_patterns(
                conn,
                lambda: templates_repo.work_copy("patterns", auth),
                git_url=url,
                stale_after_s=shared_queue.settings.stale_after_s,
                dagster_run_id=context.run.run_id,
                max_patterns=config.max_patterns,
            )
        except DistributionRefused as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
    if result.patterns == 0:
        context.log.info(
            "the ranking is empty (no aggregation run yet, or no observations): nothing distributed"
        )
    else:
        context.log.info(
            f"{result.patterns} patterns: {'committed ' + (result.commit or '')[:12] if result.committed else 'Git unchanged'}; "
            f"aggregated_patterns sent to {result.copies} inboxes"
        )
    return dg.MaterializeResult(metadata=pattern_metadata(result, url))


def template_metadata(r: TemplateDistribution, url: str) -> dict:
    shown = "\n".join(f"- `{f}`" for f in r.files[:20]) + (
        f"\n- … {len(r.files) - 20} more" if len(r.files) > 20 else ""
    )
    return {
        "outcome": dg.MetadataValue.text(r.outcome),
        "published": dg.MetadataValue.bool(r.published),
        "commit": dg.MetadataValue.text(r.commit or ""),
        "previous_commit": dg.MetadataValue.text(r.previous_commit or ""),
        "files_changed": dg.MetadataValue.int(len(r.files)),
        "files_sent": dg.MetadataValue.int(r.files_sent),
        "full_tree": dg.MetadataValue.bool(r.full_tree),
        "inbox_copies": dg.MetadataValue.int(r.copies),
        "template_updates_msg_id": dg.MetadataValue.int(r.queue_msg_id or 0),
        "remote": dg.MetadataValue.text(url),
        **_sync_metadata(r.sync),
        "files": dg.MetadataValue.md(shown if r.files else "_no template changes_"),
    }


@dg.asset(
    name="template_updates",
    deps=[TEMPLATES_REPO_KEY],
    group_name=DISTRIBUTION_GROUP,
    kinds={"git", "postgres"},
    freshness_policy=FOUR_HOURLY_FRESHNESS,
    description=(
        "TemplateDistributionWorker: every 4 hours, publishes `templates_updated` (credential-free git URL, "
        "commit, files changed on main since the last distributed commit, patterns/ excluded) to every "
        "active instance's inbox and to the `template_updates` queue; publishes nothing when nothing "
        "changed. The last distributed commit is kept in hub.distribution_state."
    ),
)
def template_updates(
    context: dg.AssetExecutionContext,
    shared_queue: SharedQueueResource,
    templates_repo: TemplatesRepoResource,
    github: GitHubResource,
) -> dg.MaterializeResult:
    remote = templates_repo.remote_url()
    url = public_git_url(remote)
    auth = git_auth(github, remote)
    with shared_queue.connection() as conn:
        result = distribute_templates(
            conn,
            lambda: templates_repo.work_copy("templates", auth),
            git_url=url,
            stale_after_s=shared_queue.settings.stale_after_s,
            dagster_run_id=context.run.run_id,
        )
    context.log.info(
        f"template_updates: {result.outcome}; {len(result.files)} files changed since "
        f"{(result.previous_commit or 'the beginning')[:12]}; {result.copies} inbox copies"
    )
    return dg.MaterializeResult(metadata=template_metadata(result, url))


TEMPLATES_REPO_SPEC = dg.AssetSpec(
    key=TEMPLATES_REPO_KEY,
    deps=[pattern_distribution],
    group_name=DISTRIBUTION_GROUP,
    kinds={"git"},
    description="The templates_data Git repository (TEMPLATES_REPO_URL; default: the embedded bare remote "
    "that `queue-assets init` creates). Its main branch holds the templates and, under patterns/, the "
    "ranking that pattern_distribution commits.",
)

TEMPLATE_UPDATES_QUEUE_SPEC = dg.AssetSpec(
    key=dg.AssetKey(["pgmq", templates.TEMPLATE_UPDATES]),
    deps=[template_updates],
    group_name=DISTRIBUTION_GROUP,
    kinds={"postgres"},
    description="pgmq queue `template_updates`: every `templates_updated` message, for a legacy single "
    "consumer and as an audit trail.",
    metadata={"pgmq_queue": templates.TEMPLATE_UPDATES},
)

INSTANCE_INBOXES_SPEC = dg.AssetSpec(
    key=dg.AssetKey(["pgmq", "instance_inboxes"]),
    # Everything that sends to every inbox with one pgmq.send_topic: the hourly ranking and template
    # updates, the `pattern_learned` broadcast of an enriched pattern (sent as its reply is ingested)
    # and of a person's decision on it, and the export's `learning_exported` announcement. By key:
    # those assets live in other domains.
    deps=[
        pattern_distribution,
        template_updates,
        dg.AssetKey("enrichment_replies"),
        dg.AssetKey("approval_decisions"),
        dg.AssetKey("learned_pattern_export"),
    ],
    group_name=DISTRIBUTION_GROUP,
    kinds={"postgres"},
    description="The `inbox_<instance>` pgmq queues, bound to the hub's topics (`hub.#`) while the "
    "instance is active; states in hub.instance_inboxes. Fed by the hourly distribution, the "
    "`pattern_learned` broadcast of each new visible pattern version and the export's announcement.",
)

DISTRIBUTION_ASSETS = [pattern_distribution, template_updates]
DISTRIBUTION_SPECS = [TEMPLATES_REPO_SPEC, TEMPLATE_UPDATES_QUEUE_SPEC, INSTANCE_INBOXES_SPEC]
