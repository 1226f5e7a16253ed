"""The pattern authority's Dagster definitions: the catalogue asset, its refresh schedule, the queue,
the enrichment job and its sensor (which backs off after failed runs, `sensor_backoff`)."""

import time
from collections.abc import Callable

import dagster as dg

from ..ingest.sensors import ACTIVE_STATUSES
from ..resources import SharedQueueResource
from ..sensor_backoff import run_backoff
from ..settings import SettingsError
from .assets import PATTERN_DISCOVERY_SPEC, pattern_catalogue, pattern_enrichment
from .enrichment import EnrichmentConfig, pending_work
from .resources import LlmResource

pattern_catalogue_job = dg.define_asset_job(
    name="pattern_catalogue_job",
    selection=[pattern_catalogue],
    description="Refresh the pattern catalogue's ranks and report its counts (cheap: no scan of observations).",
)

pattern_catalogue_schedule = dg.ScheduleDefinition(
    name="pattern_catalogue_schedule",
    job=pattern_catalogue_job,
    cron_schedule="5,20,35,50 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 15 minutes, from minute 5 (after the hourly aggregation at minute 0), UTC.",
)

pattern_enrichment_job = dg.define_asset_job(
    name="pattern_enrichment_job",
    selection=[pattern_enrichment],
    description="Send llm_requests for the keys to enrich, expire and retry requests (docs/patterns.md).",
)


def build_enrichment_sensor(clock: Callable[[], float] = time.time) -> dg.SensorDefinition:
    """The enrichment sensor; `clock` is the time the backoff is measured against (tests move it)."""

    @dg.sensor(
        name="pattern_enrichment_sensor",
        job=pattern_enrichment_job,
        minimum_interval_seconds=5,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests a pattern_enrichment run when keys wait for enrichment, a request timed out, "
        "or pattern_discovery holds a message; at most one run at a time, and after failed runs only "
        "once their backoff has passed.",
    )
    def pattern_enrichment_sensor(
        context: dg.SensorEvaluationContext, shared_queue: SharedQueueResource, llm: LlmResource
    ):
        settings = shared_queue.settings
        cfg = EnrichmentConfig.from_settings(settings)
        if cfg.provider == "off":
            return dg.SkipReason("QUEUE_ASSETS_LLM_PROVIDER=off: enrichment is switched off")
        try:
            llm.check(cfg)
        except SettingsError as exc:  # a run would only fail the same way, every 5 s
            return dg.SkipReason(f"QUEUE_ASSETS_LLM_PROVIDER={cfg.provider} is not usable: {exc}")
        active = context.instance.get_run_records(
            filters=dg.RunsFilter(job_name=pattern_enrichment_job.name, statuses=ACTIVE_STATUSES), limit=1
        )
        if active:
            return dg.SkipReason(f"enrichment run {active[0].dagster_run.run_id[:8]} is active")
        with shared_queue.connection(autocommit=True) as conn:
            if not pending_work(conn, cfg):
                return dg.SkipReason("no key waits for enrichment and no request timed out")
        # A run that fails every time (a refused OPENAI_API_KEY, no such model) must not be
        # requested again every 5 s: wait as the ingest sensors do after failed runs.
        backoff = run_backoff(
            context.instance,
            pattern_enrichment_job.name,
            settings.ingest_backoff_base_s,
            settings.ingest_backoff_cap_s,
            kind="enrichment",
        )
        if backoff is not None and clock() < backoff.next_attempt_at:
            return dg.SkipReason(backoff.reason())
        return dg.RunRequest()

    return pattern_enrichment_sensor


pattern_enrichment_sensor = build_enrichment_sensor()


def build_defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[pattern_catalogue, pattern_enrichment, PATTERN_DISCOVERY_SPEC],
        jobs=[pattern_catalogue_job, pattern_enrichment_job],
        schedules=[pattern_catalogue_schedule],
        sensors=[pattern_enrichment_sensor],
        # the enrichment's transport; unset fields read the environment when a run starts
        resources={"llm": LlmResource()},
    )
