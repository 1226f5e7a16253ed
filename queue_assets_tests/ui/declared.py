"""What `queue_assets.definitions.defs` declares, enumerated through Dagster's public API.

The UI tests compare this with what the webserver reports, so they cover every asset, check,
sensor, schedule and job the project has when the test runs, including ones added later.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

AssetPath = tuple[str, ...]


@dataclass(frozen=True)
class Declared:
    assets: frozenset[AssetPath]
    materializable: frozenset[AssetPath]
    partitioned: frozenset[AssetPath]
    checks: frozenset[tuple[AssetPath, str]]
    sensors: frozenset[str]
    schedules: frozenset[str]
    jobs: frozenset[str]
    """Named jobs (Dagster's implicit `__ASSET_JOB` excluded)."""
    sensor_jobs: frozenset[str]
    """Jobs a sensor that starts RUNNING launches by itself (the ingest jobs)."""
    partition_for_job: dict[str, str]
    """Partitioned jobs -> the partition a test run should use (the newest one)."""
    in_process_capable: frozenset[str]
    """Jobs on Dagster's default executor, which a launch can switch to in-process."""
    groups: dict[AssetPath, str]
    sensor_status: dict[str, str]
    """Sensor/schedule name -> the status it starts with (`RUNNING` or `STOPPED`)."""
    schedule_status: dict[str, str]
    sensor_jobs_of: dict[str, frozenset[str]]
    """Sensor name -> the named jobs it targets (empty for an automation-condition sensor)."""
    schedule_job: dict[str, str]
    schedule_cron: dict[str, str]

    @classmethod
    def from_defs(cls, defs: dg.Definitions) -> Declared:
        assets, materializable, partitioned, checks, groups = set(), set(), set(), set(), {}
        for spec in defs.resolve_all_asset_specs():
            key = tuple(spec.key.path)
            assets.add(key)
            groups[key] = spec.group_name or "default"
            if spec.partitions_def is not None:
                partitioned.add(key)
            assets_def = defs.resolve_assets_def(spec.key)
            if assets_def.is_materializable:
                materializable.add(key)
            checks |= {(tuple(c.asset_key.path), c.name) for c in assets_def.check_keys}
        for checks_def in defs.asset_checks or []:
            checks |= {(tuple(c.asset_key.path), c.name) for c in checks_def.check_keys}

        jobs = {j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")}
        partition_for_job, in_process_capable = {}, set()
        for name in jobs:
            job = defs.resolve_job_def(name)
            if job.partitions_def is not None:
                partition_for_job[name] = job.partitions_def.get_last_partition_key()
            if job.executor_def.name == "multi_or_in_process_executor":
                in_process_capable.add(name)
        sensors = [defs.resolve_sensor_def(s.name) for s in defs.sensors or []]
        sensor_jobs = {
            t.job_name
            for s in sensors
            if s.default_status == dg.DefaultSensorStatus.RUNNING
            for t in s.targets
            if t.job_name in jobs
        }
        schedules = list(defs.schedules or [])
        return cls(
            assets=frozenset(assets),
            materializable=frozenset(materializable),
            partitioned=frozenset(partitioned),
            checks=frozenset(checks),
            sensors=frozenset(s.name for s in sensors),
            schedules=frozenset(s.name for s in schedules),
            jobs=frozenset(jobs),
            sensor_jobs=frozenset(sensor_jobs),
            partition_for_job=partition_for_job,
            in_process_capable=frozenset(in_process_capable),
            groups=groups,
            sensor_status={s.name: s.default_status.value for s in sensors},
            schedule_status={s.name: s.default_status.value for s in schedules},
            sensor_jobs_of={
                s.name: frozenset(t.job_name for t in s.targets if t.job_name in jobs) for s in sensors
            },
            schedule_job={s.name: s.job_name for s in schedules},
            schedule_cron={s.name: str(s.cron_schedule) for s in schedules},
        )


def label(key: AssetPath) -> str:
    """An asset key as the UI writes it: `pgmq/pattern_messages`."""
    return "/".join(key)
