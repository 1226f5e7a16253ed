"""The ingest domain's Dagster definitions."""

import dagster as dg

from ..settings import Settings
from .assets import INGEST_ASSETS, QUEUE_SPECS
from .sensors import build_ingest_jobs_and_sensors


def build_defs(settings: Settings) -> dg.Definitions:
    jobs, sensors = build_ingest_jobs_and_sensors(settings)
    return dg.Definitions(assets=[*QUEUE_SPECS, *INGEST_ASSETS], jobs=jobs, sensors=sensors)
