"""The soak's pass conditions, checked on constructed inputs (fast; not marked `soak`).

The soak itself takes minutes and passes on a healthy hub, so it cannot show that its checks can
fail. These tests feed the harness's own evaluation functions (`accounting.tally`,
`run.problems`, `Soak.supervise`, `faults.outage_run_problems`, `faults.git_remote_outage`) a
report or a hub state with one thing wrong, and expect that one thing to be named as a problem;
each starts from a clean input that has no problem, so the failure comes from the change alone.
"""

from __future__ import annotations

import collections
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

from .accounting import HubState, LedgerRow, tally
from .faults import FaultResult, git_remote_outage, outage_run_problems
from .graphql import RunInfo
from .metrics import Sample, first_caught_up, first_run_started, read_split, steady_keys
from .publisher import Record
from .run import Soak, SoakOptions, markdown, problems

REMOTE = Path("/data/qa-soak/templates_data.git")


# --- a hub state and a report with nothing wrong ---------------------------------------------------


def records() -> list[Record]:
    """One pattern detection (2 rows), one learned_patterns (1 artifact), two heartbeats of one instance."""

    def rec(key, queue, kind, rows, msg_id, instance="singularity-1"):
        return Record(key, queue, instance, kind, rows, created=100.0 + msg_id, payload={}, msg_id=msg_id)

    return [
        rec("k1", "pattern_messages", "pattern_detection", 2, 1),
        rec("k2", "learned_patterns", "learned_patterns", 1, 1),
        rec("k3", "instance_heartbeat", "heartbeat", 1, 1),
        rec("k4", "instance_heartbeat", "heartbeat", 1, 2),
    ]


def ledger_row(queue: str, msg_id: int, key: str, outcome: str = "stored") -> LedgerRow:
    return LedgerRow(queue, msg_id, key, outcome, enqueued=200.0, stored=201.0)


def hub_state(**changes) -> HubState:
    state = {
        "ledger": [
            ledger_row("pattern_messages", 1, "k1"),
            ledger_row("learned_patterns", 1, "k2"),
            ledger_row("instance_heartbeat", 1, "k3"),
            ledger_row("instance_heartbeat", 2, "k4"),
        ],
        "dlq_keys": collections.Counter(),
        "dlq_reasons": {},
        "bad_in_dlq": collections.Counter({"bad-1": 1}),
        "rows_actual": {
            "pattern_observations": 2,
            "code_analyses": 0,
            "learned_artifacts": 1,
            "heartbeats": 2,
        },
        "queued": set(),
        "heartbeat_counts": {"singularity-1": 2},
    }
    return HubState(**(state | changes))


def report(**changes) -> dict:
    """A complete report as `Soak.run` makes it, for a run with nothing wrong."""
    acc = tally(records(), hub_state(), bad_sent=1).summary()
    lat = {"n": 4, "p50": 0.1, "p95": 7.5, "p99": 12.25, "max": 13.0, "mean": 2.0}
    steady = {"n": 3, "p50": 0.1, "p95": 0.5, "p99": 0.75, "max": 0.8, "mean": 0.2}
    fault = FaultResult("malformed_burst", 1.0, ended=2.0, recovered_s=1.0, details={"accounting": acc})
    final = FaultResult("final_drain", 3.0, ended=4.0, recovered_s=0.5, details={"accounting": acc})
    rss = {"webserver": 200.0, "daemon": 150.0, "code_server": 210.0}
    rep = {
        "options": asdict(SoakOptions()),
        "timeline": {
            "hub_ready_s": 10.0,
            "soak_s": 120.0,
            "faults_s": 100.0,
            "drain_s": 1.0,
            "total_s": 240.0,
        },
        "rate": {"soak_msgs_per_s": 27.0, "soak_published_per_queue": {"pattern_messages": 4}},
        "latency": {
            "soak_enqueued_to_stored": lat,
            "soak_steady_enqueued_to_stored": steady,
            "first_run_started_after_s": {"pattern_messages": 9.5},
            "soak_per_queue": {"pattern_messages": lat},
            "faults_producer_made_to_stored": lat,
            "all_enqueued_to_stored": lat,
            "target_p95_s": 1.0,
            "target_p99_s": 2.0,
        },
        "latency_components_soak": {
            "wait_for_run_request": {"n": 0},
            "run_launch": {"n": 0},
            "inside_run": {"n": 0},
        },
        "run_overheads_soak": {
            "created_to_started": {"n": 0},
            "started_to_first_stored": {"n": 0},
            "run_duration": {"n": 0},
        },
        "sensor_tick_interval_soak": {},
        "lag": {
            "soak": {"pattern_messages": {"max_oldest_age_s": 9.0, "mean_oldest_age_s": 3.0}},
            "whole_run": {"pattern_messages": {"max_oldest_age_s": 30.0, "max_depth": 100}},
        },
        "runs": {
            "total": 3,
            "by_job": {"ingest_pattern_messages_job": {"SUCCESS": 3}},
            "during_soak": 3,
            "ingest_runs_per_minute_soak": 1.5,
        },
        "memory_mb": {"soak_start": rss, "soak_end": rss, "end": rss},
        "faults": [asdict(fault) | {"passed": fault.passed}],
        "final": asdict(final) | {"passed": final.passed},
        "accounting": acc,
        "queue_depth_at_end": {"pattern_messages": 0, "learned_patterns": 0, "instance_heartbeat": 0},
        "supervisor_restarts": [],
        "machine": {"loadavg_start": [0.5], "loadavg_end": [1.5]},
    }
    rep |= changes
    rep["problems"] = problems(rep, SoakOptions())
    rep["passed"] = not rep["problems"]
    return rep


# --- the accounting ------------------------------------------------------------------------------


def test_a_hub_state_that_matches_the_records_has_no_problems():
    acc = tally(records(), hub_state(), bad_sent=1)
    assert acc.problems == [] and acc.final_problems() == []
    assert (acc.published, acc.stored, acc.unsent) == (4, 4, 0)


def test_a_message_the_instance_never_sent_is_a_problem():
    """Breaks if the accounting stops counting records without a msg_id (left in the buffer)."""
    recs = records()
    recs[1].msg_id = None
    acc = tally(recs, hub_state(), bad_sent=1)
    assert acc.unsent == 1
    assert any("never sent" in p for p in acc.problems), acc.problems


def test_a_message_taken_for_a_duplicate_of_a_key_never_stored_is_a_problem():
    """The data of k2 was dropped as a repeat of nothing: breaks if `duplicates_never_stored` goes."""
    ledger = [r for r in hub_state().ledger if r.key != "k2"] + [
        ledger_row("learned_patterns", 1, "k2", "duplicate")
    ]
    acc = tally(
        records(),
        hub_state(ledger=ledger, rows_actual=hub_state().rows_actual | {"learned_artifacts": 0}),
        bad_sent=1,
    )
    assert acc.duplicates_never_stored == ["k2"]
    assert any("duplicates of a key that is not stored" in p for p in acc.problems), acc.problems


def test_a_duplicate_of_a_stored_key_is_no_problem():
    ledger = hub_state().ledger + [ledger_row("instance_heartbeat", 3, "k4", "duplicate")]
    acc = tally(records(), hub_state(ledger=ledger), bad_sent=1)
    assert acc.duplicate_deliveries == 1 and acc.problems == []


def test_a_heartbeat_counted_twice_is_a_problem():
    """A retried batch whose instance update was applied twice: the ledger and the data tables are
    exact (their keys guard them), only the additive counter shows it."""
    acc = tally(records(), hub_state(heartbeat_counts={"singularity-1": 3}), bad_sent=1)
    assert any("heartbeat_count differs" in p and "singularity-1 (3, 2)" in p for p in acc.problems), (
        acc.problems
    )


def test_a_heartbeat_count_for_an_instance_with_no_stored_heartbeat_is_a_problem():
    acc = tally(records(), hub_state(heartbeat_counts={"singularity-1": 2, "singularity-9": 1}), bad_sent=1)
    assert any("singularity-9 (1, 0)" in p for p in acc.problems), acc.problems


def test_a_message_still_queued_is_a_problem_only_at_the_end():
    ledger = [r for r in hub_state().ledger if r.key != "k1"]
    state = hub_state(
        ledger=ledger,
        queued={("pattern_messages", 1)},
        rows_actual=hub_state().rows_actual | {"pattern_observations": 0},
    )
    acc = tally(records(), state, bad_sent=1)
    assert acc.pending == 1 and acc.problems == []
    assert any("still waiting in their queues" in p for p in acc.final_problems())


def test_a_lost_message_is_a_problem():
    ledger = [r for r in hub_state().ledger if r.key != "k1"]
    acc = tally(
        records(),
        hub_state(ledger=ledger, rows_actual=hub_state().rows_actual | {"pattern_observations": 0}),
        bad_sent=1,
    )
    assert acc.missing == ["k1"]
    assert any("lost" in p for p in acc.problems), acc.problems


def test_a_dead_lettered_valid_message_is_reported_with_the_hubs_reason():
    """A failing soak must say why the hub gave up on the message, not only that it did."""
    ledger = [r for r in hub_state().ledger if r.key != "k1"]
    acc = tally(
        records(),
        hub_state(
            ledger=ledger,
            dlq_keys=collections.Counter({"k1": 1}),
            dlq_reasons={"k1": "pattern_messages: store_failed: the database refused to store it: boom"},
            rows_actual=hub_state().rows_actual | {"pattern_observations": 0},
        ),
        bad_sent=1,
    )
    assert acc.dead_lettered_valid == 1
    assert acc.summary()["dead_lettered_valid_reasons"] == [
        "k1: pattern_messages: store_failed: the database refused to store it: boom"
    ]


# --- the run's verdict ---------------------------------------------------------------------------


def test_a_clean_report_passes():
    rep = report()
    assert rep["problems"] == [] and rep["passed"] is True


def test_a_supervisor_restart_fails_the_run():
    """Breaks if `problems` stops reading `supervisor_restarts` (a silent restart passed before)."""
    restart = {"role": "daemon", "exit_code": -9, "at": "16:02:03", "phase": "postgres_restart"}
    rep = report(supervisor_restarts=[restart])
    assert rep["passed"] is False
    assert rep["problems"] == [
        "the supervisor restarted the daemon (exited with -9 at 16:02:03, during "
        "postgres_restart): only the injected daemon kill may stop a hub process"
    ]


def test_a_fault_that_did_not_happen_fails_the_run():
    fault = FaultResult("git_remote_outage", 1.0, ended=1.0)
    fault.problems.append("the Git outage did not happen: the code location has no knowledge_export_job")
    rep = report(faults=[asdict(fault) | {"passed": fault.passed}])
    assert rep["passed"] is False
    assert rep["problems"] == [
        "git_remote_outage: the Git outage did not happen: the code location has no knowledge_export_job"
    ]


def test_messages_left_unsent_after_the_drain_fail_the_run():
    final = FaultResult("final_drain", 3.0, ended=4.0, problems=["12 messages still unsent after 240s"])
    rep = report(final=asdict(final) | {"passed": final.passed})
    assert rep["passed"] is False and rep["problems"] == ["final drain: 12 messages still unsent after 240s"]


def test_a_final_accounting_problem_fails_the_run():
    recs = records()
    recs[0].msg_id = None
    acc = tally(recs, hub_state(), bad_sent=1).summary()
    rep = report(accounting=acc)
    assert rep["passed"] is False and any("never sent" in p for p in rep["problems"]), rep["problems"]


def test_a_queue_left_non_empty_fails_the_run():
    rep = report(queue_depth_at_end={"pattern_messages": 3, "learned_patterns": 0, "instance_heartbeat": 0})
    assert rep["problems"] == ["pattern_messages still holds 3 messages at the end"]


def test_the_printed_report_gives_p95_and_p99_and_the_restarts():
    restart = {"role": "webserver", "exit_code": 1, "at": "16:05:00", "phase": "soak"}
    text = markdown(report(supervisor_restarts=[restart]))
    assert (
        "publish→stored in the soak phase: p95 7.5 s, p99 12.25 s; once each queue's first run had caught up "
        "(steady traffic): p95 0.5 s, p99 0.75 s (reported, not asserted"
    ) in text
    assert "Result: **FAILED**: the supervisor restarted the webserver" in text
    assert "Processes restarted by the harness (as a supervisor would; each fails the run)" in text


# --- the latency figures ---------------------------------------------------------------------


def _ingest_run(queue: str, started: float | None) -> RunInfo:
    return RunInfo(
        "r", f"ingest_{queue}_job", "SUCCESS", 0.0, started, None, {"queue_assets/ingest_queue": queue}
    )


def test_steady_state_starts_when_the_queues_first_run_has_drained_what_piled_up_before_it():
    runs = [
        _ingest_run("pattern_messages", 12.0),
        _ingest_run("pattern_messages", 40.0),
        _ingest_run("x", None),
    ]
    first = first_run_started(runs)
    assert first == {"pattern_messages": 12.0}

    def sample(t: float, age: float) -> Sample:
        return Sample(t, "soak", {"pattern_messages": {"oldest_age_s": age, "depth": 1}}, {}, 0)

    # Before the run: young messages (one just arrived); after it started: the backlog, then caught up.
    samples = [sample(9.0, 0.2), sample(12.0, 11.0), sample(15.0, 4.0), sample(18.0, 0.3), sample(21.0, 0.1)]
    caught_up = first_caught_up(samples, first)
    assert caught_up == {"pattern_messages": 18.0}
    rows = [
        LedgerRow("pattern_messages", 1, "cold", "stored", enqueued=3.0, stored=12.5),
        LedgerRow("pattern_messages", 2, "backlog", "stored", enqueued=13.0, stored=16.0),
        LedgerRow("pattern_messages", 3, "steady", "stored", enqueued=19.0, stored=19.1),
        LedgerRow("learned_patterns", 4, "no-run", "stored", enqueued=20.0, stored=20.1),
        LedgerRow("pattern_messages", 5, "other-phase", "stored", enqueued=30.0, stored=30.1),
    ]
    assert steady_keys(rows, caught_up, {"cold", "backlog", "steady", "no-run"}) == {"steady"}


def test_the_read_split_leaves_out_a_read_time_outside_the_message_life():
    rows = [
        LedgerRow("q", 1, "a", "stored", enqueued=10.0, stored=10.5),
        LedgerRow("q", 2, "b", "stored", enqueued=10.0, stored=10.5),  # lease extended: "read" after stored
        LedgerRow("q", 3, "c", "stored", enqueued=10.0, stored=10.5),  # read twice: no first read time
    ]
    split = read_split(rows, {("q", 1): 10.25, ("q", 2): 11.0}, {"a", "b", "c"})
    assert split["enqueued_to_read"]["n"] == 1 and split["enqueued_to_read"]["p50"] == 0.25
    assert split["read_to_stored"]["p50"] == 0.25


# --- the supervisor ------------------------------------------------------------------------------


class _StandInHub:
    """The part of `Hub` the supervisor uses, with real (short-lived) processes."""

    def __init__(self):
        dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
        dead.wait()
        self.procs = {"daemon": SimpleNamespace(popen=dead)}
        self.started: list[str] = []

    def start_daemon(self):
        self.started.append("daemon")
        alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        self.procs["daemon"] = SimpleNamespace(popen=alive)

    def start_webserver(self):
        self.started.append("webserver")


def test_the_supervisor_restarts_a_dead_daemon_and_records_the_phase():
    soak = Soak(SoakOptions(), log=lambda m: None)
    soak.hub = _StandInHub()
    soak.sampler = SimpleNamespace(phase="sigkill_ingest_run")
    try:
        soak.supervise()
        soak.supervise()  # the new daemon is alive: nothing more to record
        assert soak.hub.started == ["daemon"]
        assert [(r["role"], r["exit_code"], r["phase"]) for r in soak.restarts] == [
            ("daemon", 3, "sigkill_ingest_run")
        ]
        assert report(supervisor_restarts=soak.restarts)["passed"] is False
    finally:
        soak.hub.procs["daemon"].popen.kill()
        soak.hub.procs["daemon"].popen.wait()


# --- the Git outage ------------------------------------------------------------------------------


def test_an_export_run_that_succeeded_during_the_outage_is_a_problem():
    """The outage did not reach the export: breaks if the status check goes."""
    assert outage_run_problems("SUCCESS", "", REMOTE) == [
        "the export run during the Git outage ended SUCCESS, expected FAILURE: the outage did not reach the export"
    ]


def test_an_export_run_that_failed_for_another_reason_is_a_problem():
    """A GitHub call failing names "git" too (GitHubError): the reason must name the remote itself."""
    problems_ = outage_run_problems("FAILURE", "GitHubError: GET /repos/o/r/pulls returned 500", REMOTE)
    assert problems_ == [
        "the export run during the Git outage failed without naming the remote "
        "templates_data.git as the reason: GitHubError: GET /repos/o/r/pulls returned 500"
    ]


def test_an_export_run_that_failed_on_the_missing_remote_is_the_outage():
    error = (
        f'Execution of step "learned_pattern_export" failed.\nGitError: cloning {REMOTE} failed: fatal: '
        f"repository '{REMOTE}' does not exist"
    )
    assert outage_run_problems("FAILURE", error, REMOTE) == []


def test_a_git_outage_that_could_not_run_fails_instead_of_skipping():
    """Before: `skipped` was set and the CI test called pytest.skip, so the soak passed without it."""
    gql = SimpleNamespace(job_names=lambda: ["ingest_pattern_messages_job"], asset_jobs=lambda: {})
    res = git_remote_outage(SimpleNamespace(gql=gql))
    assert res.passed is False
    assert res.problems == [
        "the Git outage did not happen: the code location has no knowledge_export_job / "
        "learned_pattern_export to run during it"
    ]
