"""What the soak reads from (and asks of) the running hub, through the webserver's GraphQL API.

Runs launched, their timestamps, sensor ticks, daemon health, which jobs the code location has,
and launching a run (which the daemon's queued run coordinator then starts), exactly as a person
or another tool would through the UI's API.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests

LOCATION = "queue_assets"
REPOSITORY = "__repository__"
_SELECTOR = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    job: str
    status: str
    created: float
    started: float | None
    ended: float | None
    tags: dict[str, str]


@dataclass(frozen=True)
class Tick:
    timestamp: float
    status: str
    run_ids: tuple[str, ...]
    skip_reason: str | None


class HubGraphQL:
    def __init__(self, base_url: str, timeout_s: float = 30.0):
        self.url = base_url.rstrip("/") + "/graphql"
        self.timeout_s = timeout_s

    def query(self, text: str, variables: dict | None = None, attempts: int = 3) -> dict:
        """POST a GraphQL document. A 5xx is retried (twice, 1 s apart): after PostgreSQL restarts,
        the webserver's first request fails once on a stale pooled connection of Dagster's storage
        (`psycopg2.OperationalError: server closed the connection unexpectedly`), the next succeeds."""
        for attempt in range(1, attempts + 1):
            r = requests.post(
                self.url, json={"query": text, "variables": variables or {}}, timeout=self.timeout_s
            )
            if r.status_code < 500 or attempt == attempts:
                break
            time.sleep(1)
        r.raise_for_status()
        body = r.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL error: {str(body['errors'])[:500]}")
        return body["data"]

    # --- health ---------------------------------------------------------------------------------

    def location_loaded(self) -> bool:
        data = self.query(
            "{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus"
            " locationOrLoadError { __typename ... on PythonError { message } } } } } }"
        )
        for entry in data["workspaceOrError"].get("locationEntries", []):
            if entry["name"] != LOCATION:
                continue
            loc = entry["locationOrLoadError"] or {}
            if loc.get("__typename") == "PythonError":
                raise RuntimeError(f"the code location failed to load: {loc.get('message', '')[:1000]}")
            return entry["loadStatus"] == "LOADED" and loc.get("__typename") == "RepositoryLocation"
        return False

    def daemon_statuses(self) -> dict[str, bool]:
        data = self.query(
            "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"
        )
        return {
            d["daemonType"]: bool(d["healthy"])
            for d in data["instance"]["daemonHealth"]["allDaemonStatuses"]
            if d["required"]
        }

    def daemons_healthy(self, types: tuple[str, ...]) -> bool:
        statuses = self.daemon_statuses()
        return all(statuses.get(t) for t in types)

    # --- definitions ------------------------------------------------------------------------------

    def repository(self) -> dict:
        data = self.query(
            "query($s: RepositorySelector!) { repositoryOrError(repositorySelector: $s) { __typename"
            " ... on Repository { jobs { name } sensors { name sensorState { status } }"
            " schedules { name scheduleState { status } } assetNodes { assetKey { path } jobNames } } } }",
            {"s": _SELECTOR},
        )
        repo = data["repositoryOrError"]
        if repo["__typename"] != "Repository":
            raise RuntimeError(f"repository not found: {repo}")
        return repo

    def job_names(self) -> set[str]:
        return {j["name"] for j in self.repository()["jobs"]}

    def asset_jobs(self) -> dict[str, list[str]]:
        """asset key ('a/b') -> the jobs that materialize it."""
        return {"/".join(n["assetKey"]["path"]): n["jobNames"] for n in self.repository()["assetNodes"]}

    # --- runs -----------------------------------------------------------------------------------

    def runs(
        self, *, created_after: float | None = None, job: str | None = None, limit: int = 5000
    ) -> list[RunInfo]:
        flt: dict = {}
        if created_after is not None:
            flt["createdAfter"] = created_after
        if job:
            flt["pipelineName"] = job
        data = self.query(
            "query($f: RunsFilter, $n: Int) { runsOrError(filter: $f, limit: $n) { __typename"
            " ... on Runs { results { runId jobName status creationTime startTime endTime"
            " tags { key value } } } } }",
            {"f": flt, "n": limit},
        )
        out = []
        for r in data["runsOrError"].get("results", []):
            out.append(
                RunInfo(
                    r["runId"],
                    r["jobName"],
                    r["status"],
                    r["creationTime"],
                    r["startTime"],
                    r["endTime"],
                    {t["key"]: t["value"] for t in r["tags"]},
                )
            )
        return out

    def run(self, run_id: str) -> RunInfo:
        runs = self.query(
            "query($id: [String]) { runsOrError(filter: {runIds: $id}) { ... on Runs { results { runId jobName"
            " status creationTime startTime endTime tags { key value } } } } }",
            {"id": [run_id]},
        )["runsOrError"]["results"]
        if not runs:
            raise KeyError(run_id)
        r = runs[0]
        return RunInfo(
            r["runId"],
            r["jobName"],
            r["status"],
            r["creationTime"],
            r["startTime"],
            r["endTime"],
            {t["key"]: t["value"] for t in r["tags"]},
        )

    def failure_text(self, run_id: str) -> str:
        """The error messages a failed run logged (step failures and the run failure)."""
        data = self.query(
            "query($id: ID!) { logsForRun(runId: $id, limit: 2000) { __typename ... on EventConnection { events {"
            " __typename ... on MessageEvent { message }"
            " ... on ExecutionStepFailureEvent { error { message cause { message } } }"
            " ... on EngineEvent { error { message cause { message } } } } } } }",
            {"id": run_id},
        )
        texts = []
        for e in data["logsForRun"].get("events", []):
            if e["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent") or (
                e["__typename"] == "EngineEvent" and e.get("error")
            ):
                texts.append(e.get("message") or "")
                error = e.get("error")
                while error:  # Dagster's wrapper first, then what it wraps (the reason)
                    texts.append(error.get("message") or "")
                    error = error.get("cause")
        return "\n".join(texts)

    def launch_run(
        self, job: str, *, tags: dict[str, str] | None = None, run_config: dict | None = None
    ) -> str:
        data = self.query(
            "mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename"
            " ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }"
            " ... on RunConfigValidationInvalid { errors { message } } ... on InvalidSubsetError { message } } }",
            {
                "p": {
                    "selector": {**_SELECTOR, "jobName": job},
                    "runConfigData": run_config or {},
                    "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
                }
            },
        )
        result = data["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"launching {job} failed: {result}")
        return result["run"]["runId"]

    def wait_run(self, run_id: str, timeout_s: float) -> RunInfo:
        deadline = time.monotonic() + timeout_s
        while True:
            info = self.run(run_id)
            if info.status in TERMINAL:
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {info.status} after {timeout_s:.0f}s")
            time.sleep(1)

    def run_to_end(
        self, job: str, timeout_s: float, *, tags: dict[str, str] | None = None, attempts: int = 3
    ) -> tuple[RunInfo, int]:
        """Launch `job` and wait for it; launch again (up to `attempts` in all) when run monitoring
        failed it for not starting in time (a CPU-starved machine). Returns the last run and the
        number of launches."""
        for n in range(1, attempts + 1):
            info = self.wait_run(self.launch_run(job, tags=tags), timeout_s)
            if info.status != "FAILURE" or n == attempts or not info.started or info.ended != info.started:
                return info, n
            if "marked as failed from outside the execution context" not in self.failure_text(info.run_id):
                return info, n
        raise AssertionError("unreachable")

    # --- sensors --------------------------------------------------------------------------------

    def sensor_ticks(self, sensor: str, *, after: float | None = None, limit: int = 5000) -> list[Tick]:
        data = self.query(
            "query($s: SensorSelector!, $n: Int, $a: Float) { sensorOrError(sensorSelector: $s) { __typename"
            " ... on Sensor { sensorState { ticks(limit: $n, afterTimestamp: $a) { timestamp status runIds"
            " skipReason } } } } }",
            {"s": {**_SELECTOR, "sensorName": sensor}, "n": limit, "a": after},
        )
        s = data["sensorOrError"]
        if s["__typename"] != "Sensor":
            raise RuntimeError(f"sensor {sensor} not found: {s}")
        return [
            Tick(t["timestamp"], t["status"], tuple(t["runIds"]), t["skipReason"])
            for t in s["sensorState"]["ticks"]
        ]


def _metadata_value(entry: dict):
    for key in ("floatValue", "intValue", "text", "boolValue", "url", "mdStr"):
        if key in entry and entry[key] is not None:
            return entry[key]
    return None


def materialization_metadata(gql: HubGraphQL, asset: str, run_id: str) -> dict:
    """The metadata of `asset`'s materialization in run `run_id` ({} when there is none)."""
    data = gql.query(
        "query($k: AssetKeyInput!) { assetOrError(assetKey: $k) { __typename ... on Asset {"
        " assetMaterializations(limit: 50) { runId metadataEntries { label"
        " ... on FloatMetadataEntry { floatValue } ... on IntMetadataEntry { intValue }"
        " ... on TextMetadataEntry { text } ... on BoolMetadataEntry { boolValue } } } } } }",
        {"k": {"path": asset.split("/")}},
    )
    asset_data = data["assetOrError"]
    for m in asset_data.get("assetMaterializations", []) if asset_data["__typename"] == "Asset" else []:
        if m["runId"] == run_id:
            return {e["label"]: _metadata_value(e) for e in m["metadataEntries"]}
    return {}
