"""The one `dg.Definitions` of the code location: it only merges the domains' definitions."""

from __future__ import annotations

import dagster as dg

from .ingest.defs import build_defs as ingest_defs
from .operations.bootstrap_job import bootstrap_job
from .resources import SharedQueueResource
from .settings import Settings

# Settings are validated here so a bad value fails the code location's load with its name and
# reason; nothing here connects to a database or reads a secret's value.
_settings = Settings.from_env()

defs = dg.Definitions.merge(
    ingest_defs(_settings),
    dg.Definitions(jobs=[bootstrap_job], resources={"shared_queue": SharedQueueResource()}),
)
