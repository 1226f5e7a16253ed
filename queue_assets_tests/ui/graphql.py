"""A small client for the Dagster webserver's GraphQL API (`/graphql`), the same API the UI uses.

Only what the UI tests need: what the code location loaded, materializations with their numeric
metadata, asset-check executions, launching a job and following its run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import requests

LOCATION = "queue_assets"
REPOSITORY = "__repository__"  # the name Dagster gives the repository of a `dg.Definitions`
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


class GraphQLError(RuntimeError):
    """The API answered with errors, or with an error type where data was expected."""


@dataclass
class Loaded:
    """What the code location reports as loaded."""

    assets: set[tuple[str, ...]] = field(default_factory=set)
    materializable: set[tuple[str, ...]] = field(default_factory=set)
    checks: set[tuple[tuple[str, ...], str]] = field(default_factory=set)
    sensors: dict[str, str] = field(default_factory=dict)  # name -> status (RUNNING/STOPPED)
    schedules: dict[str, str] = field(default_factory=dict)
    jobs: set[str] = field(default_factory=set)
    job_assets: dict[str, set[tuple[str, ...]]] = field(default_factory=dict)
    parents: dict[tuple[str, ...], set[tuple[str, ...]]] = field(default_factory=dict)
    partitioned: set[tuple[str, ...]] = field(default_factory=set)


@dataclass(frozen=True)
class Materialization:
    run_id: str
    partition: str | None
    ints: dict[str, int]


_LOCATION_STATUS = """{ workspaceOrError { __typename ... on PythonError { message }
  ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message stack } } } } } }"""

_REPOSITORY = """query($sel: RepositorySelector!) { repositoryOrError(repositorySelector: $sel) {
  __typename ... on PythonError { message } ... on RepositoryNotFoundError { message }
  ... on Repository { jobs { name isAssetJob }
    sensors { name sensorState { status } } schedules { name scheduleState { status } }
    assetNodes { assetKey { path } isMaterializable isPartitioned jobNames dependencyKeys { path }
      assetChecksOrError { __typename ... on AssetChecks { checks { name } } } } } } }"""

_MATERIALIZATIONS = """query($key: AssetKeyInput!, $limit: Int!) { assetOrError(assetKey: $key) {
  __typename ... on Asset { assetMaterializations(limit: $limit) { runId partition
    metadataEntries { label __typename ... on IntMetadataEntry { intValue } } } } } }"""

_CHECK_EXECUTIONS = """query($key: AssetKeyInput!, $name: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $name, limit: 20) { runId status } }"""

_LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } } ... on Error { message } } }"""

_RUN = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { runId jobName status } } }"""

_RUNS = """query($filter: RunsFilter) { runsOrError(filter: $filter, limit: 200) {
  ... on Runs { results { runId jobName status } } } }"""

_RUN_ERRORS = """query($id: ID!) { logsForRun(runId: $id, limit: 5000) { __typename
  ... on EventConnection { events { __typename
    ... on ExecutionStepFailureEvent { stepKey error { message } }
    ... on RunFailureEvent { message } ... on EngineEvent { message error { message } } } } } }"""


class DagsterGraphQL:
    def __init__(self, url: str, timeout_s: float = 60):
        self.url = url
        self.timeout_s = timeout_s

    def query(self, text: str, variables: dict | None = None) -> dict:
        r = requests.post(
            self.url, json={"query": text, "variables": variables or {}}, timeout=self.timeout_s
        )
        r.raise_for_status()
        body = r.json()
        if body.get("errors"):
            raise GraphQLError("; ".join(e.get("message", str(e)) for e in body["errors"]))
        return body["data"]

    # -- the code location -------------------------------------------------------------------

    def location_status(self) -> tuple[str, str | None]:
        """(loadStatus, load error message or None) of the `queue_assets` code location."""
        ws = self.query(_LOCATION_STATUS)["workspaceOrError"]
        if ws["__typename"] != "Workspace":
            raise GraphQLError(f"workspace: {ws.get('message')}")
        for entry in ws["locationEntries"]:
            if entry["name"] == LOCATION:
                loc = entry["locationOrLoadError"] or {}
                error = loc.get("message") if loc.get("__typename") == "PythonError" else None
                return entry["loadStatus"], error
        raise GraphQLError(f"code location {LOCATION!r} is not in the workspace")

    def wait_for_location(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            status, error = self.location_status()
            if error:
                raise GraphQLError(f"code location {LOCATION!r} failed to load: {error}")
            if status == "LOADED":
                return
            if time.monotonic() > deadline:
                raise GraphQLError(f"code location {LOCATION!r} still {status} after {timeout_s:.0f}s")
            time.sleep(1)

    def loaded(self) -> Loaded:
        sel = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
        repo = self.query(_REPOSITORY, {"sel": sel})["repositoryOrError"]
        if repo["__typename"] != "Repository":
            raise GraphQLError(f"repository of {LOCATION!r}: {repo['__typename']}: {repo.get('message')}")
        out = Loaded(
            sensors={s["name"]: s["sensorState"]["status"] for s in repo["sensors"]},
            schedules={s["name"]: s["scheduleState"]["status"] for s in repo["schedules"]},
            jobs={j["name"] for j in repo["jobs"]},
        )
        for node in repo["assetNodes"]:
            key = tuple(node["assetKey"]["path"])
            out.assets.add(key)
            out.parents[key] = {tuple(d["path"]) for d in node["dependencyKeys"]}
            if node["isMaterializable"]:
                out.materializable.add(key)
            if node["isPartitioned"]:
                out.partitioned.add(key)
            for job in node["jobNames"]:
                out.job_assets.setdefault(job, set()).add(key)
            checks = node["assetChecksOrError"]
            if checks["__typename"] != "AssetChecks":
                raise GraphQLError(f"checks of {'/'.join(key)}: {checks['__typename']}")
            out.checks |= {(key, c["name"]) for c in checks["checks"]}
        return out

    # -- events ------------------------------------------------------------------------------

    def materializations(self, key: tuple[str, ...], limit: int = 1000) -> list[Materialization]:
        asset = self.query(_MATERIALIZATIONS, {"key": {"path": list(key)}, "limit": limit})["assetOrError"]
        if asset["__typename"] != "Asset":
            return []  # AssetNotFoundError: never materialized
        return [
            Materialization(
                m["runId"],
                m["partition"],
                {
                    e["label"]: e["intValue"]
                    for e in m["metadataEntries"]
                    if e["__typename"] == "IntMetadataEntry"
                },
            )
            for m in asset["assetMaterializations"]
        ]

    def check_executions(self, key: tuple[str, ...], name: str) -> list[dict]:
        """[{runId, status}] newest first; status is SUCCEEDED, FAILED, IN_PROGRESS, SKIPPED or EXECUTION_FAILED."""
        return self.query(_CHECK_EXECUTIONS, {"key": {"path": list(key)}, "name": name})[
            "assetCheckExecutions"
        ]

    # -- runs --------------------------------------------------------------------------------

    def launch(self, job: str, tags: dict[str, str] | None = None, run_config: dict | None = None) -> str:
        params = {
            "selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": job},
            "runConfigData": run_config or {},
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
        }
        res = self.query(_LAUNCH, {"params": params})["launchRun"]
        if res["__typename"] != "LaunchRunSuccess":
            detail = res.get("message") or "; ".join(e["message"] for e in res.get("errors", []))
            raise GraphQLError(f"launching {job}: {res['__typename']}: {detail}")
        return res["run"]["runId"]

    def run_status(self, run_id: str) -> str:
        run = self.query(_RUN, {"id": run_id})["runOrError"]
        if run["__typename"] != "Run":
            raise GraphQLError(f"run {run_id}: {run['__typename']}")
        return run["status"]

    def runs(self, statuses: list[str] | None = None) -> list[dict]:
        flt = {"statuses": statuses} if statuses else None
        return self.query(_RUNS, {"filter": flt})["runsOrError"]["results"]

    def run_errors(self, run_id: str) -> list[str]:
        """The error messages of a run's failed steps (and of the run itself), for assertion messages."""
        logs = self.query(_RUN_ERRORS, {"id": run_id})["logsForRun"]
        out = []
        for e in logs.get("events", []):
            if e["__typename"] == "ExecutionStepFailureEvent":
                out.append(f"{e['stepKey']}: {(e.get('error') or {}).get('message', '').strip()}")
            elif e["__typename"] == "RunFailureEvent":
                out.append(e.get("message") or "run failed")
            elif e["__typename"] == "EngineEvent" and e.get("error"):
                out.append(f"{e.get('message')}: {e['error'].get('message', '').strip()}")
        return out

    def wait_for_runs(self, run_ids: list[str], timeout_s: float) -> dict[str, str]:
        """Poll every second until every run finished or the deadline; returns run_id -> status."""
        deadline = time.monotonic() + timeout_s
        status: dict[str, str] = {}
        while True:
            for rid in run_ids:
                if status.get(rid) not in FINISHED:
                    status[rid] = self.run_status(rid)
            if all(s in FINISHED for s in status.values()) or time.monotonic() > deadline:
                return status
            time.sleep(1)
