"""The faults injected during a soak, each followed by a checkpoint: nothing lost, nothing doubled.

Every fault runs while the fleet keeps publishing, then `Soak.settle` waits (with a deadline) until
every message made so far is stored or dead-lettered, and checks the accounting up to that point.
A fault that could not be injected fails with the reason: a soak never passes on a fault that
did not happen.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg

from .graphql import RunInfo

EXPORT_JOB = "knowledge_export_job"
EXPORT_ASSET = "learned_pattern_export"


@dataclass
class FaultResult:
    name: str
    started: float
    ended: float = 0.0
    recovered_s: float | None = None
    """From the end of the fault until every message made so far was accounted for."""
    problems: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.problems


# --- 1. malformed burst ------------------------------------------------------------------------


def malformed_burst(soak, n: int = 10_000) -> FaultResult:
    """`n` malformed messages in the middle of the valid ones: every one must end in a DLQ."""
    res = FaultResult("malformed_burst", time.time())
    res.details["sent_per_queue"] = soak.fleet.malformed_burst(n)
    res.ended = time.time()
    soak.settle(res)
    return res


# --- 2. SIGKILL an ingest run -------------------------------------------------------------------


def sigkill_ingest_run(
    soak, queue: str = "pattern_messages", burst: int = 10_000, find_timeout_s: float = 240.0
) -> FaultResult:
    """SIGKILL the process tree of an ingest run while it holds leased messages.

    A burst of valid messages gives the run something to chew on; the kill comes when the run is
    STARTED, its step process is found, and messages of its queue are leased (read, not yet
    archived): a batch is in flight.
    """
    res = FaultResult("sigkill_ingest_run", time.time())
    soak.fleet.burst(burst)
    job = f"ingest_{queue}_job"
    deadline = time.monotonic() + find_timeout_s
    killed: list[int] = []
    run: RunInfo | None = None
    with psycopg.connect(soak.db_url, autocommit=True) as conn:
        while time.monotonic() < deadline and not killed:
            started = [
                r for r in soak.gql.runs(created_after=res.started - 60, job=job) if r.status == "STARTED"
            ]
            for run in started:
                procs = run_processes(soak.hub, run.run_id)
                if procs and leased(conn, queue) > 0:
                    killed = kill_tree(procs)
                    break
            else:
                time.sleep(0.05)
    if not killed:
        res.problems.append(f"no {job} run was caught mid-batch within {find_timeout_s:.0f}s")
        res.ended = time.time()
        return res
    res.details.update(run_id=run.run_id, killed_pids=killed)
    res.ended = time.time()
    with psycopg.connect(soak.db_url, autocommit=True) as conn:
        res.details["leased_at_kill"] = leased(conn, queue)
    soak.settle(res)
    final = soak.gql.run(run.run_id)
    res.details["killed_run_final_status"] = final.status
    if final.status != "FAILURE":
        res.problems.append(f"the killed run {run.run_id} ended {final.status}, expected FAILURE")
    with psycopg.connect(soak.db_url) as conn:
        res.details["redelivered_messages"] = conn.execute(
            "SELECT count(*) FROM hub.ingest_ledger WHERE queue = %s AND read_ct > 1", (queue,)
        ).fetchone()[0]
    return res


def leased(conn: psycopg.Connection, queue: str) -> int:
    """Messages of `queue` read and not yet archived (their lease still runs)."""
    from psycopg import sql

    return conn.execute(
        sql.SQL("SELECT count(*) FROM pgmq.{} WHERE read_ct > 0 AND vt > clock_timestamp()").format(
            sql.Identifier("q_" + queue)
        )
    ).fetchone()[0]


def run_processes(hub, run_id: str) -> list[psutil.Process]:
    """The processes executing run `run_id`: the step process (it holds the run's compute-log files
    open under DAGSTER_HOME/storage/<run_id>/), and its ancestors up to (not including) the code server."""
    marker = str(Path(hub.dagster_home) / "storage" / run_id)
    for proc in hub.hub_processes():
        try:
            if not any(f.path.startswith(marker) for f in proc.open_files()):
                continue
            chain = [proc]
            parent = proc.parent()
            while parent is not None and "spawn_main" in " ".join(parent.cmdline()):
                chain.append(parent)
                parent = parent.parent()
            return chain
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return []


def kill_tree(procs: list[psutil.Process]) -> list[int]:
    """SIGKILL the run worker first (outermost), then everything under it, as a crash of its host would."""
    everything: dict[int, psutil.Process] = {}
    for p in reversed(procs):
        everything[p.pid] = p
        try:
            for c in p.children(recursive=True):
                everything[c.pid] = c
        except psutil.NoSuchProcess:
            pass
    killed = []
    for p in everything.values():
        try:
            p.send_signal(signal.SIGKILL)
            killed.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(everything.values()), timeout=10)
    return killed


# --- 3. PostgreSQL stopped ----------------------------------------------------------------------


def database_restart(soak, down_s: float = 20.0) -> FaultResult:
    """Stop the server (from another process), keep it down `down_s` seconds, start it again."""
    res = FaultResult("postgres_restart", time.time())
    errors_before = sum(soak.fleet.error_kinds.values())
    soak.hub.stop_database_from_another_process()
    stopped = time.time()
    # While the server is down the instances keep making messages; the SDK retries each send with
    # backoff and the simulator keeps what is not yet sent in its buffer: watch that buffer grow.
    peak = 0
    while time.time() - stopped < down_s:
        peak = max(peak, len(soak.fleet.pending))
        time.sleep(0.25)
    soak.hub.start_database_from_another_process()
    res.ended = time.time()
    res.details["down_s"] = round(res.ended - stopped, 1)
    soak.settle(res)
    res.details["publisher_backlog_peak_while_down"] = peak
    res.details["publisher_backlog_after"] = len(soak.fleet.pending)
    # Sends that failed even after the SDK's own retries (the simulator then retried them with the
    # same key); 0 when the SDK's backoff outlasted the outage.
    res.details["publisher_send_errors"] = sum(soak.fleet.error_kinds.values()) - errors_before
    res.details["publisher_error_kinds"] = dict(soak.fleet.error_kinds)
    res.details["max_publisher_backlog"] = soak.fleet.max_pending
    res.details["hub_processes_alive"] = soak.hub_alive_note()
    return res


# --- 4. daemon killed and restarted -------------------------------------------------------------


def daemon_restart(soak, down_s: float = 5.0) -> FaultResult:
    res = FaultResult("daemon_kill_restart", time.time())
    res.details["killed_pid"] = soak.hub.kill_daemon()
    time.sleep(down_s)
    soak.hub.start_daemon()
    soak.hub.wait_ready(soak.gql, soak.opts.ready_timeout_s)
    res.details["daemon_ready_after_s"] = round(time.time() - res.started, 1)
    res.ended = time.time()
    soak.settle(res)
    return res


# --- 5. Git remote unavailable during an export --------------------------------------------------


def git_remote_outage(soak, run_timeout_s: float = 600.0) -> FaultResult:
    """The templates_data remote disappears for one export run of today's cycle (the run must fail
    with the reason), then comes back: the next run exports, a re-run of the same cycle updates in
    place, and the cycle ends with exactly one branch on the remote and one pull request."""
    res = FaultResult("git_remote_outage", time.time())
    jobs = soak.gql.job_names()
    if EXPORT_JOB not in jobs or EXPORT_ASSET not in soak.gql.asset_jobs():
        res.problems.append(
            f"the Git outage did not happen: the code location has no {EXPORT_JOB} / "
            f"{EXPORT_ASSET} to run during it"
        )
        res.ended = time.time()
        return res
    from queue_assets.export.assets import EXPORT_PARTITIONS
    from queue_assets.export.settings import BRANCH_PREFIX

    cycle = EXPORT_PARTITIONS.get_last_partition_key()
    branch = BRANCH_PREFIX + cycle.replace("-", "")
    tags = {"dagster/partition": cycle}
    remote = soak.hub.templates_remote
    offline = remote.with_name(remote.name + ".offline")
    fake = soak.fake_github

    shutil.move(remote, offline)
    try:
        failed, launches = soak.gql.run_to_end(EXPORT_JOB, run_timeout_s, tags=tags)
    finally:
        shutil.move(offline, remote)
    error = soak.gql.failure_text(failed.run_id)
    res.details["outage_run"] = {
        "run_id": failed.run_id,
        "status": failed.status,
        "launches": launches,
        "error": _first_line(error, prefer=(remote.name,)),
    }
    res.problems += outage_run_problems(failed.status, error, remote)
    res.details["branches_after_outage"] = branches(remote, BRANCH_PREFIX)
    res.details["prs_after_outage"] = len(fake.pulls)
    if res.details["branches_after_outage"] or fake.pulls:
        res.problems.append("the failed export left a branch or a pull request behind")

    runs = []
    for _ in range(2):  # back online, then a re-run of the same cycle
        info, launches = soak.gql.run_to_end(EXPORT_JOB, run_timeout_s, tags=tags)
        runs.append(
            {
                "run_id": info.run_id,
                "status": info.status,
                "launches": launches,
                "error": _first_line(soak.gql.failure_text(info.run_id))
                if info.status != "SUCCESS"
                else None,
            }
        )
        if info.status != "SUCCESS":
            res.problems.append(f"export run {info.run_id} after the outage ended {info.status}")
    res.ended = time.time()
    res.details["runs_after_outage"] = runs
    found = branches(remote, BRANCH_PREFIX)
    prs = [{"number": p["number"], "head": p["head"]["ref"], "state": p["state"]} for p in fake.pulls]
    res.details.update(
        cycle=cycle,
        branches=found,
        pull_requests=prs,
        pr_calls={m: len(fake.calls(m)) for m in ("GET", "POST", "PATCH")},
    )
    if found != [branch]:
        res.problems.append(f"remote branches for the cycle: {found}, expected exactly [{branch!r}]")
    if len(prs) != 1 or prs[0]["head"] != branch or prs[0]["state"] != "open":
        res.problems.append(f"pull requests: {prs}, expected exactly one open PR for {branch}")
    with psycopg.connect(soak.db_url) as conn:
        row = conn.execute(
            "SELECT status, attempts, error FROM hub.exports WHERE cycle_date = %s",
            (datetime.fromisoformat(cycle).replace(tzinfo=UTC).date(),),
        ).fetchone()
    res.details["hub_exports_row"] = (
        {"status": row[0], "attempts": row[1], "error": _first_line(row[2] or "")} if row else None
    )
    # Publishing went on through the export runs: the ingest checkpoint holds here too.
    soak.settle(res)
    return res


def outage_run_problems(status: str, error: str, remote: Path) -> list[str]:
    """Did the outage happen to the export run launched during it? Then the run failed, and the
    reason it gives names the missing remote. A run that succeeded, or failed for another reason
    (the code location could not load, a GitHub call failed), proves nothing about the remote."""
    if status != "FAILURE":
        return [
            f"the export run during the Git outage ended {status}, expected FAILURE: the outage did "
            "not reach the export"
        ]
    if remote.name not in error:
        return [
            f"the export run during the Git outage failed without naming the remote {remote.name} as "
            f"the reason: {_first_line(error) or '(no error text)'}"
        ]
    return []


def branches(remote: Path, prefix: str) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(remote), "for-each-ref", "--format=%(refname:short)", "refs/heads"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(b for b in out.split() if b.startswith(prefix))


def _first_line(text: str, prefer: tuple[str, ...] = ()) -> str:
    """The first non-blank line of `text`, or the first one naming one of `prefer` (the reason, not
    Dagster's "Execution of step ... failed." wrapper)."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    named = [ln for ln in lines if any(w in ln.lower() for w in prefer)]
    return (named or lines or [""])[0][:300]


FAULTS = {
    "malformed_burst": malformed_burst,
    "sigkill_ingest_run": sigkill_ingest_run,
    "postgres_restart": database_restart,
    "daemon_kill_restart": daemon_restart,
    "git_remote_outage": git_remote_outage,
}
