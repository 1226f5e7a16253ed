"""The code location loads: every job, schedule and sensor resolves, and the lineage starts at the queues.

As dagster's `examples/project_fully_featured` does: load `queue_assets.definitions.defs` and resolve
every job, the job of every schedule and every job a sensor targets. A target that names a job the
definitions do not hold, an asset selection that selects nothing, or two definitions under one name
fail here instead of when the daemon first ticks. Nothing connects to a database.
"""

from __future__ import annotations

import dagster as dg
import pytest

from queue_assets.definitions import defs
from queue_assets.queues import CONSUMED_QUEUES, INGEST_ASSET_FOR, TEMPLATE_UPDATES

# The queues the lineage draws as external assets: the three the hub consumes (upstream of ingest),
# the two it writes to (downstream of distribution), and the pattern authority's discovery queue.
EXPECTED_QUEUE_SPECS = {f"pgmq/{q}" for q in CONSUMED_QUEUES} | {
    f"pgmq/{TEMPLATE_UPDATES}",
    "pgmq/instance_inboxes",
    "pgmq/pattern_discovery",
    "pgmq/hub_llm_results",
    "pgmq/hub_approval_responses",
}


def _targets(sensor: dg.SensorDefinition) -> list[str]:
    return [job.name for job in sensor.jobs] if sensor.has_jobs else []


def test_the_definitions_are_loadable():
    dg.Definitions.validate_loadable(defs)


def test_every_job_resolves():
    names = {job.name for job in defs.resolve_all_job_defs()}
    for expected in (
        "pattern_aggregation_job",
        "pattern_sync_job",
        "knowledge_export_job",
        "template_distribution_job",
        "queue_statistics_job",
        "retention_job",
        "bootstrap_job",
        "dlq_redrive_job",
        *(f"ingest_{q}_job" for q in CONSUMED_QUEUES),
    ):
        assert expected in names


@pytest.mark.parametrize("schedule", list(defs.schedules or []), ids=lambda s: s.name)
def test_every_schedule_targets_a_job_that_resolves(schedule):
    job = defs.resolve_job_def(schedule.job_name)
    assert job.name == schedule.job_name


@pytest.mark.parametrize("sensor", list(defs.sensors or []), ids=lambda s: s.name)
def test_every_sensor_targets_jobs_that_resolve(sensor):
    if isinstance(sensor, dg.AutomationConditionSensorDefinition):
        # It targets assets, not jobs: its selection must select some.
        assert sensor.asset_selection.resolve(defs.resolve_asset_graph()), (
            f"sensor {sensor.name} selects no asset"
        )
        return
    targets = _targets(sensor)
    assert targets, f"sensor {sensor.name} targets no job"
    for name in targets:
        assert defs.resolve_job_def(name).name == name


def test_the_ingest_sensors_target_their_queues_ingest_job():
    sensors = {s.name: s for s in defs.sensors or []}
    for queue in CONSUMED_QUEUES:
        assert _targets(sensors[f"{queue}_sensor"]) == [f"ingest_{queue}_job"]


def test_the_queues_are_external_assets_upstream_of_ingest_and_downstream_of_distribution():
    graph = defs.resolve_asset_graph()
    queue_keys = {k.to_user_string() for k in graph.get_all_asset_keys() if k.path[0] == "pgmq"}
    assert queue_keys == EXPECTED_QUEUE_SPECS
    for key in EXPECTED_QUEUE_SPECS:
        node = graph.get(dg.AssetKey.from_user_string(key))
        assert node.is_external and not node.is_materializable, key
    for queue, asset in INGEST_ASSET_FOR.items():
        assert dg.AssetKey(["pgmq", queue]) in graph.get(dg.AssetKey(asset)).parent_keys
    assert dg.AssetKey("template_updates") in graph.get(dg.AssetKey(["pgmq", TEMPLATE_UPDATES])).parent_keys


def test_the_lineage_runs_from_ingest_through_the_catalogue_and_enrichment_to_the_broadcast():
    """Issue 12: ingest → catalogue → enrichment → broadcast is one path in the asset graph. Breaks
    when the inboxes lose the broadcast's producer (the reply ingest) as an upstream."""
    graph = defs.resolve_asset_graph()
    path = [
        "pgmq/pattern_messages",
        "pattern_messages",
        "pattern_catalogue",
        "pattern_enrichment",
        "pgmq/hub_llm_results",
        "enrichment_replies",
        "pgmq/instance_inboxes",
    ]
    for parent, child in zip(path, path[1:], strict=False):
        assert (
            dg.AssetKey.from_user_string(parent) in graph.get(dg.AssetKey.from_user_string(child)).parent_keys
        ), f"{parent} -> {child}"


def _domain_defs() -> dict[str, dg.Definitions]:
    from queue_assets.aggregation.defs import build_defs as aggregation
    from queue_assets.distribution.defs import build_defs as distribution
    from queue_assets.export.defs import build_defs as export
    from queue_assets.export.settings import ExportSettings
    from queue_assets.ingest.defs import build_defs as ingest
    from queue_assets.operations.defs import build_defs as operations
    from queue_assets.patterns.defs import build_defs as patterns
    from queue_assets.settings import Settings

    return {
        "ingest": ingest(Settings.from_env({})),
        "aggregation": aggregation(),
        "distribution": distribution(),
        "export": export(ExportSettings()),
        "operations": operations(),
        "patterns": patterns(),
    }


def test_each_domain_registers_its_own_jobs_and_schedules():
    """`definitions.py` adds no job or schedule of its own (only the demo's sensor and the shared
    resources). Breaks when a job is registered there, as `bootstrap_job` was."""
    domains = _domain_defs()
    jobs = {j.name for d in domains.values() for j in d.jobs or []}
    schedules = {s.name for d in domains.values() for s in d.schedules or []}
    sensors = {s.name for d in domains.values() for s in d.sensors or []}
    assert {j.name for j in defs.jobs or []} == jobs
    assert {s.name for s in defs.schedules or []} == schedules
    assert {s.name for s in defs.sensors or []} == sensors | {"demo_lineage_sensor"}
    operations = domains["operations"]
    assert {"bootstrap_job", "queue_statistics_job"} <= {j.name for j in operations.jobs or []}
    assert "queue_statistics_schedule" in {s.name for s in operations.schedules or []}
    assert "export_settings" in (domains["export"].resources or {})


def test_the_statistics_asset_module_defines_no_job_or_schedule():
    """The asset and its checks in `operations/assets.py`; its job and schedule in `operations/schedules.py`."""
    from queue_assets.operations import assets
    from queue_assets.operations.schedules import statistics_job

    asset_job = type(statistics_job)  # what dg.define_asset_job returns (its class is not exported)
    scheduling = [
        name
        for name, value in vars(assets).items()
        if isinstance(value, dg.ScheduleDefinition | dg.JobDefinition | asset_job)
    ]
    assert scheduling == []
