"""The one `dg.Definitions` of the code location: it only merges the domains' definitions.

The environment is read here, once, when the code location loads: the hub's settings
(`code_location_settings`) and the export's are validated (a bad value fails the load with its name
and reason) and passed down to the domains and the resources. Secrets stay in the environment: the
resources name them (`dg.EnvVar`) and the run's process resolves them, so the UI shows the
configuration and never a secret. Nothing here connects to a database.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from .aggregation.defs import build_defs as aggregation_defs
from .demo import demo_lineage_sensor
from .distribution.defs import build_defs as distribution_defs
from .export.defs import build_defs as export_defs
from .export.settings import ExportSettings
from .git.resources import git_resources
from .ingest.defs import build_defs as ingest_defs
from .operations.defs import build_defs as operations_defs
from .patterns.defs import build_defs as patterns_defs
from .resources import SharedQueueResource
from .settings import Settings, code_location_settings


def build_definitions(settings: Settings, env: Mapping[str, str]) -> dg.Definitions:
    """The code location's definitions for `settings`; `env` (the environment they were read from)
    supplies the export's settings and which Git secrets are set."""
    return dg.Definitions.merge(
        ingest_defs(settings),
        aggregation_defs(),
        distribution_defs(),
        export_defs(ExportSettings.from_env(env)),
        operations_defs(),
        patterns_defs(),
        dg.Definitions(
            sensors=[demo_lineage_sensor(settings.demo)],
            resources={
                "shared_queue": SharedQueueResource.from_settings(settings),
                # Shared by distribution and export: the templates_data repository and the
                # pull-request provider.
                **git_resources(settings, env),
            },
        ),
        # Every job runs its steps in the run's own process: a step subprocess imports the whole code
        # location again, seconds of start-up for well under a second of work (docs/benchmarks.md, Run
        # overhead). Applies to every job without an executor of its own, asset jobs and the implicit
        # asset job of automation-triggered and UI runs included. Asset checks keep their blocking
        # semantics: the executor changes where steps run, not their order or dependencies.
        dg.Definitions(executor=dg.in_process_executor),
    )


defs = build_definitions(code_location_settings(), os.environ)
