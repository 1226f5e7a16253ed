"""The one `dg.Definitions` of the code location: it only merges the domains' definitions."""

from __future__ import annotations

import dagster as dg

from .aggregation.defs import build_defs as aggregation_defs
from .demo import demo_lineage_sensor
from .distribution.defs import build_defs as distribution_defs
from .export.defs import build_defs as export_defs
from .git.resources import GitHubResource, TemplatesRepoResource
from .ingest.defs import build_defs as ingest_defs
from .operations.bootstrap_job import bootstrap_job
from .operations.defs import build_defs as operations_defs
from .patterns.defs import build_defs as patterns_defs
from .resources import SharedQueueResource
from .settings import Settings

# Settings are validated here so a bad value fails the code location's load with its name and
# reason; nothing here connects to a database or reads a secret's value.
_settings = Settings.from_env()

defs = dg.Definitions.merge(
    ingest_defs(_settings),
    aggregation_defs(),
    distribution_defs(),
    export_defs(),
    operations_defs(),
    patterns_defs(),
    dg.Definitions(
        jobs=[bootstrap_job], sensors=[demo_lineage_sensor], resources={"shared_queue": SharedQueueResource()}
    ),
    # Git: the templates_data repository (TEMPLATES_REPO_URL, default: the embedded remote) and the
    # pull-request provider (GITHUB_*); both read the environment when a run starts.
    dg.Definitions(resources={"templates_repo": TemplatesRepoResource(), "github": GitHubResource()}),
    # Every job runs its steps in the run's own process: a step subprocess imports the whole code
    # location again, seconds of start-up for well under a second of work (docs/benchmarks.md, Run
    # overhead). Applies to every job without an executor of its own, asset jobs and the implicit
    # asset job of automation-triggered and UI runs included. Asset checks keep their blocking
    # semantics: the executor changes where steps run, not their order or dependencies.
    dg.Definitions(executor=dg.in_process_executor),
)
