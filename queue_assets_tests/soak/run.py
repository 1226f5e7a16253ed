"""Run the soak (and its faults) against a hub started here: `python -m queue_assets_tests.soak.run`.

    python -m queue_assets_tests.soak.run --minutes 10                 # the long variant
    python -m queue_assets_tests.soak.run --minutes 2 --vt 30          # what the CI test runs
    python -m queue_assets_tests.soak.run --minutes 1 --faults none    # soak only

Timeline: start a hub in a fresh data folder (its own embedded PostgreSQL, webserver and daemon on
`--port`), publish for `--minutes` with no fault (the latency, lag and memory figures come from
this phase), then inject the faults one after another while publishing goes on, each followed by
a checkpoint; then stop publishing, wait for the queues to drain, and account for every message.
A webserver or daemon that exits is restarted, as a process supervisor would, and the restart fails
the run: the one injected daemon kill is restarted by its fault step, not by the supervisor.
Prints a JSON report (and `--markdown` writes the tables for docs/reliability.md); exits 1 when a
check failed. Only the daemon's sensors drive ingestion: nothing here reads a queue.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg

from queue_assets.queues import CONSUMED_QUEUES
from queue_assets_tests.fake_github import serve_fake_github

from . import accounting, metrics
from .faults import FAULTS, FaultResult
from .hub import Hub
from .publisher import Fleet, check_malformed_corpus

LATENCY_TARGET_P95_S = 1.0
LATENCY_TARGET_P99_S = 2.0
"""Issue 13's targets for publish->stored under steady traffic: reported beside the figures, never asserted."""


@dataclass
class SoakOptions:
    minutes: float = 2.0
    instances: int = 20
    rate: float = 25.0
    """Messages per second over pattern_messages and learned_patterns, heartbeats on top."""
    heartbeat_every_s: float = 10.0
    faults: tuple[str, ...] = tuple(FAULTS)
    port: int = 3300
    data_dir: Path | None = None
    keep: bool = False
    visibility_timeout_s: int | None = None
    """QUEUE_ASSETS_VISIBILITY_TIMEOUT_S for the hub (None: the default, 60 s)."""
    ready_timeout_s: float = 300.0
    settle_timeout_s: float = 300.0
    drain_timeout_s: float = 300.0
    malformed: int = 10_000
    kill_burst: int = 10_000
    db_down_s: float = 20.0
    sample_every_s: float = 3.0
    max_lag_s: float = 120.0
    """Pass bound on the oldest message's age during the fault-free phase."""
    memory_factor: float = 1.5
    memory_slack_mb: float = 100.0
    """Pass bound: RSS at the end of the soak <= factor * RSS at its start + slack, per role."""
    extra_env: dict[str, str] = field(default_factory=dict)


class Soak:
    def __init__(self, opts: SoakOptions, log=print):
        self.opts = opts
        self.log = log
        self.data_dir = opts.data_dir or Path(tempfile.mkdtemp(prefix="qa-soak-"))
        self.hub: Hub | None = None
        self.fleet: Fleet | None = None
        self.sampler: metrics.Sampler | None = None
        self.gql = None
        self.fake_github = None
        self.db_url = ""
        self.restarts: list[dict] = []

    # --- helpers used by the faults ---------------------------------------------------------------

    def hub_alive_note(self) -> str:
        dead = [
            f"{role} exited {p.popen.returncode}"
            for role, p in self.hub.procs.items()
            if p.popen.poll() is not None
        ]
        return ", ".join(dead) or "webserver and daemon kept running"

    def supervise(self) -> None:
        """Restart a hub process that exited, as a process supervisor would, and record it: every
        restart fails the run (`problems`). The daemon_kill_restart fault takes its daemon out of
        `hub.procs` before the kill and starts the new one itself, so the injected kill is never
        one of these."""
        for role in list(self.hub.procs):
            p = self.hub.procs[role]
            if p.popen.poll() is not None:
                self.restarts.append(
                    {
                        "role": role,
                        "exit_code": p.popen.returncode,
                        "at": time.strftime("%H:%M:%S"),
                        "phase": self.sampler.phase if self.sampler else "startup",
                    }
                )
                self.log(f"  ! {restart_text(self.restarts[-1])}: restarting it")
                (self.hub.start_daemon if role == "daemon" else self.hub.start_webserver)()

    def settle(self, res: FaultResult) -> None:
        """Wait until every message made so far is stored or dead-lettered; then check the accounting."""
        cutoff = time.time()
        subject = [r for r in self.fleet.snapshot() if r.created <= cutoff]
        bad_sent = sum(self.fleet.bad_sent.values())
        deadline = time.monotonic() + self.opts.settle_timeout_s
        left: int | str = "?"
        while True:
            self.supervise()
            try:
                with psycopg.connect(self.db_url, connect_timeout=5) as conn:
                    left = accounting.unaccounted(conn, subject)
                    _, bad = accounting.dead_letter_headers(conn)
                    bad_left = bad_sent - len(bad)
                if left == 0 and bad_left <= 0:
                    break
                left = f"{left} valid, {bad_left} malformed"
            except psycopg.Error as exc:
                left = f"database unreachable ({str(exc).strip().splitlines()[0][:80]})"
            if time.monotonic() > deadline:
                # Not a failure by itself: what is still queued is checked below (not lost, not
                # doubled) and must be stored by the end (the final drain is strict).
                res.details["not_settled"] = (
                    f"{left} messages still queued {self.opts.settle_timeout_s:.0f}s after the fault"
                )
                if res.name == "final_drain":
                    res.problems.append(
                        f"not drained {self.opts.settle_timeout_s:.0f}s after publishing "
                        f"stopped: {left} messages not yet stored or dead-lettered"
                    )
                break
            time.sleep(2)
        res.recovered_s = None if "not_settled" in res.details else round(time.time() - res.ended, 1)
        with psycopg.connect(self.db_url) as conn:
            acc = accounting.account(conn, self.fleet.snapshot(), bad_sent, upto=cutoff)
        res.details["accounting"] = acc.summary()
        res.problems += acc.final_problems() if res.name == "final_drain" else acc.problems
        self.log(
            f"  {res.name}: {res.details.get('not_settled') or f'settled in {res.recovered_s}s'}; "
            f"{acc.published} published = {acc.stored} stored + {acc.dead_lettered_valid} dead-lettered; "
            f"{acc.bad_in_dlq}/{acc.bad_sent} malformed in the DLQs"
            + (f"; PROBLEMS: {acc.problems}" if acc.problems else "")
        )

    # --- the run ------------------------------------------------------------------------------

    def run(self) -> dict:
        opts = self.opts
        check_malformed_corpus()
        t0 = time.time()
        load_start = os.getloadavg()
        report: dict = {
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
        }
        with serve_fake_github() as fake:
            self.fake_github = fake
            # Retries at once (no backoff): the Git-outage fault's run must end FAILURE while the
            # remote is gone, not wait minutes in its backoff (queue_assets/retries.py).
            env = {
                "GITHUB_REPOSITORY": f"{fake.owner}/{fake.repo}",
                "GITHUB_TOKEN": fake.token,
                "GITHUB_API_URL": fake.url,
                "QUEUE_ASSETS_RETRY_DELAY_S": "0",
                **opts.extra_env,
            }
            if opts.visibility_timeout_s:
                env["QUEUE_ASSETS_VISIBILITY_TIMEOUT_S"] = str(opts.visibility_timeout_s)
            self.hub = Hub(self.data_dir, port=opts.port, extra_env=env)
            try:
                self.log(f"hub: data folder {self.data_dir}, port {opts.port}")
                self.hub.start_database()
                self.db_url = self.hub.db_url
                self.gql = self.hub.start(timeout_s=opts.ready_timeout_s)
                t_ready = time.time()
                self.log(f"hub ready in {t_ready - t0:.1f}s")
                report.update(self._run_phases(t0, t_ready))
            finally:
                if self.sampler:
                    self.sampler.stop()
                if self.fleet:
                    self.fleet.close()
                self.hub.stop()
                if not opts.keep:
                    self.hub.remove()
        report["machine"] = {
            "cpus": os.cpu_count(),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        }
        report["timeline"]["total_s"] = round(time.time() - t0, 1)
        report["problems"] = problems(report, opts)
        report["passed"] = not report["problems"]
        return report

    def _run_phases(self, t0: float, t_ready: float) -> dict:
        opts = self.opts
        fleet = self.fleet = Fleet(
            self.db_url, instances=opts.instances, rate=opts.rate, heartbeat_every_s=opts.heartbeat_every_s
        )
        self.sampler = metrics.Sampler(
            self.db_url, rss=self.hub.rss_mb, backlog=lambda: len(fleet.pending), every_s=opts.sample_every_s
        )
        self.sampler.phase = "soak"
        rss_start = self.hub.rss_mb()
        soak_start = time.time()
        fleet.start()
        self.sampler.start()
        self.log(
            f"soak: {opts.instances} instances, {opts.rate:g} msg/s + heartbeats every "
            f"{opts.heartbeat_every_s:g}s, for {opts.minutes:g} min"
        )
        while time.time() - soak_start < opts.minutes * 60:
            self.supervise()
            time.sleep(1)
        soak_end = time.time()
        rss_soak_end = self.hub.rss_mb()
        self.log(f"soak phase done: {len(fleet.snapshot())} messages made")

        faults = []
        for name in opts.faults:
            self.sampler.phase = name
            self.log(f"fault: {name}")
            kwargs = {
                "malformed_burst": {"n": opts.malformed},
                "sigkill_ingest_run": {"burst": opts.kill_burst, "find_timeout_s": opts.settle_timeout_s},
                "postgres_restart": {"down_s": opts.db_down_s},
                "git_remote_outage": {"run_timeout_s": opts.settle_timeout_s * 2},
            }.get(name, {})
            try:
                res = FAULTS[name](self, **kwargs)
            except Exception as exc:  # noqa: BLE001 - a fault step that breaks fails the soak, the rest still run
                res = FaultResult(name, time.time(), ended=time.time())
                res.problems.append(f"the fault step raised {type(exc).__name__}: {str(exc)[:300]}")
                self.supervise()
            if res.problems:
                self.log(f"  PROBLEMS: {res.problems}")
            faults.append(res)

        self.sampler.phase = "drain"
        publish_end = time.time()
        drained = fleet.drain(opts.drain_timeout_s)
        settle = FaultResult("final_drain", publish_end, ended=time.time())
        if not drained:
            settle.problems.append(
                f"{len(fleet.pending)} messages still unsent after {opts.drain_timeout_s:.0f}s"
            )
        self.settle(settle)
        self.supervise()  # a process that died after the last checkpoint is recorded too
        t_end = time.time()
        self.sampler.sample_now()
        rss_end = self.hub.rss_mb()

        with psycopg.connect(self.db_url) as conn:
            acc = accounting.account(conn, fleet.snapshot(), sum(fleet.bad_sent.values()))
            ledger = accounting.fetch_ledger(conn)
            # 60 s: the hub's default QUEUE_ASSETS_VISIBILITY_TIMEOUT_S, when the soak does not set one.
            reads = metrics.first_read_times(conn, opts.visibility_timeout_s or 60)
            depth = {
                q: conn.execute(f"SELECT count(*) FROM pgmq.q_{q}").fetchone()[0] for q in CONSUMED_QUEUES
            }
        runs = self.gql.runs(created_after=t_ready - 5)
        records = fleet.snapshot()
        soak_keys = {r.key for r in records if soak_start <= r.created <= soak_end}
        fault_keys = {r.key for r in records if soak_end < r.created}
        created = {r.key: r.created for r in records}
        producer_view = lambda keys: metrics.summary(  # noqa: E731
            [row.stored - created[row.key] for row in ledger if row.outcome == "stored" and row.key in keys]
        )
        soak_runs = [r for r in runs if soak_start - 5 <= r.created <= soak_end]
        first_started = metrics.first_run_started(runs)
        caught_up = metrics.first_caught_up(self.sampler.samples, first_started)
        steady = metrics.steady_keys(ledger, caught_up, soak_keys)
        per_queue = Counter(r.queue for r in records if r.key in soak_keys)
        sensors = {
            f"{q}_sensor": self.gql.sensor_ticks(f"{q}_sensor", after=soak_start) for q in CONSUMED_QUEUES
        }

        return {
            "timeline": {
                "hub_ready_s": round(t_ready - t0, 1),
                "soak_s": round(soak_end - soak_start, 1),
                "faults_s": round(publish_end - soak_end, 1),
                "drain_s": round(t_end - publish_end, 1),
            },
            "rate": {
                "target_msgs_per_s": opts.rate,
                "heartbeats_per_s": round(opts.instances / opts.heartbeat_every_s, 2),
                "soak_published_per_queue": dict(per_queue),
                "soak_msgs_per_s": round(len(soak_keys) / max(1e-9, soak_end - soak_start), 1),
                "total_valid_published": acc.published,
                "malformed_published": acc.bad_sent,
            },
            "latency": {
                "soak_enqueued_to_stored": metrics.latency(ledger, soak_keys),
                # Without the cold start: messages enqueued once their queue's first run had started
                # and drained what piled up before it (the oldest message younger than 1 s).
                "soak_steady_enqueued_to_stored": metrics.latency(ledger, steady),
                "first_run_started_after_s": {
                    q: round(t - soak_start, 1) for q, t in sorted(first_started.items())
                },
                "caught_up_after_s": {q: round(t - soak_start, 1) for q, t in sorted(caught_up.items())},
                "soak_per_queue": {
                    q: metrics.latency([r for r in ledger if r.queue == q], soak_keys)
                    for q in CONSUMED_QUEUES
                },
                "faults_producer_made_to_stored": producer_view(fault_keys),
                "all_enqueued_to_stored": metrics.latency(ledger, {r.key for r in records}),
                "target_p95_s": LATENCY_TARGET_P95_S,
                "target_p99_s": LATENCY_TARGET_P99_S,
            },
            "latency_components_soak": metrics.decompose(ledger, soak_runs, soak_keys).summary()
            | metrics.read_split(ledger, reads, soak_keys),
            "latency_components_steady": metrics.decompose(ledger, soak_runs, steady).summary()
            | metrics.read_split(ledger, reads, steady),
            "run_overheads_soak": metrics.run_overheads(soak_runs, ledger),
            "sensor_tick_interval_soak": {
                name: metrics.tick_intervals([t.timestamp for t in ticks if t.timestamp <= soak_end])
                for name, ticks in sensors.items()
            },
            "lag": {
                "soak": metrics.lag_summary(self.sampler.samples, {"soak"}),
                "whole_run": metrics.lag_summary(self.sampler.samples),
            },
            "lag_series": [
                {
                    "t": round(s.t - soak_start, 1),
                    "phase": s.phase,
                    "backlog": s.backlog,
                    "oldest_age_s": {q: v["oldest_age_s"] for q, v in (s.queues or {}).items()},
                    "depth": {q: v["depth"] for q, v in (s.queues or {}).items()},
                    "rss_mb": s.rss_mb,
                    "error": s.error,
                }
                for s in self.sampler.samples
            ],
            "runs": runs_summary(runs, soak_start, soak_end),
            "memory_mb": {"soak_start": rss_start, "soak_end": rss_soak_end, "end": rss_end},
            "faults": [asdict(f) | {"passed": f.passed} for f in faults],
            "final": asdict(settle) | {"passed": settle.passed},
            "accounting": acc.summary(),
            "queue_depth_at_end": depth,
            "supervisor_restarts": self.restarts,
            "publisher_errors": dict(fleet.error_kinds),
            "max_publisher_backlog": fleet.max_pending,
        }


def runs_summary(runs, soak_start: float, soak_end: float) -> dict:
    by_job: dict[str, Counter] = {}
    for r in runs:
        by_job.setdefault(r.job, Counter())[r.status] += 1
    soak = [r for r in runs if soak_start <= r.created <= soak_end]
    return {
        "total": len(runs),
        "by_job": {j: dict(c) for j, c in sorted(by_job.items())},
        "during_soak": len(soak),
        "ingest_runs_per_minute_soak": round(
            sum(1 for r in soak if r.job.startswith("ingest_")) / max(1e-9, (soak_end - soak_start) / 60), 1
        ),
    }


def problems(report: dict, opts: SoakOptions) -> list[str]:
    """Every pass condition that failed, as text (empty: passed)."""
    out = list(report.get("accounting", {}).get("final_problems", []))
    for f in report.get("faults", []):
        out += [f"{f['name']}: {p}" for p in f["problems"]]
    out += [f"final drain: {p}" for p in report.get("final", {}).get("problems", [])]
    out += [
        restart_text(r) + ": only the injected daemon kill may stop a hub process"
        for r in report.get("supervisor_restarts", [])
    ]
    for q, lag in report.get("lag", {}).get("soak", {}).items():
        if lag["max_oldest_age_s"] > opts.max_lag_s:
            out.append(
                f"lag on {q} reached {lag['max_oldest_age_s']}s during the soak (bound {opts.max_lag_s:g}s)"
            )
    mem = report.get("memory_mb", {})
    for role, start in mem.get("soak_start", {}).items():
        end = mem.get("soak_end", {}).get(role)
        if (
            isinstance(start, float)
            and isinstance(end, float)
            and end > opts.memory_factor * start + opts.memory_slack_mb
        ):
            out.append(f"{role} memory grew from {start} MB to {end} MB during the soak")
    for q, n in report.get("queue_depth_at_end", {}).items():
        if n:
            out.append(f"{q} still holds {n} messages at the end")
    return out


def restart_text(r: dict) -> str:
    return f"the supervisor restarted the {r['role']} (exited with {r['exit_code']} at {r['at']}, during {r['phase']})"


def markdown(report: dict) -> str:
    """The report's tables, as they go into docs/reliability.md."""
    o = report["options"]
    lat = report["latency"]
    lines = [
        f"- {o['instances']} instances, {o['rate']:g} msg/s (pattern_messages + learned_patterns) + heartbeats every "
        f"{o['heartbeat_every_s']:g} s ({report['rate']['soak_msgs_per_s']} msg/s measured in the soak phase); "
        f"soak phase {report['timeline']['soak_s']} s, faults {report['timeline']['faults_s']} s, drain "
        f"{report['timeline']['drain_s']} s, total {report['timeline']['total_s']} s; load average "
        f"{report['machine']['loadavg_start'][0]} at the start, {report['machine']['loadavg_end'][0]} at the end.",
        f"- Accounting: {report['accounting']['published']} valid messages published = "
        f"{report['accounting']['stored']} stored + {report['accounting']['dead_lettered_valid']} dead-lettered; "
        f"{report['accounting']['unsent']} never sent; {report['accounting']['malformed_in_dlq']} of "
        f"{report['accounting']['malformed_sent']} malformed in the DLQs; "
        f"{report['accounting']['duplicate_deliveries_dropped']} producer retries dropped as duplicates "
        f"({report['accounting']['duplicates_never_stored']} of a key not stored); heartbeat_count "
        f"{report['accounting']['heartbeats_counted']} for {report['accounting']['heartbeats_stored']} stored "
        "heartbeats.",
        f"- publish→stored in the soak phase: p95 {lat['soak_enqueued_to_stored'].get('p95', '—')} s, "
        f"p99 {lat['soak_enqueued_to_stored'].get('p99', '—')} s; once each queue's first run had caught up "
        f"(steady traffic): p95 {lat.get('soak_steady_enqueued_to_stored', {}).get('p95', '—')} s, "
        f"p99 {lat.get('soak_steady_enqueued_to_stored', {}).get('p99', '—')} s (reported, not asserted: this "
        f"machine's load varies; targets p95 < {lat['target_p95_s']:g} s, p99 < {lat.get('target_p99_s', LATENCY_TARGET_P99_S):g} s).",
        f"- Result: **{'PASSED' if report['passed'] else 'FAILED'}**"
        + ("" if report["passed"] else ": " + "; ".join(report["problems"])),
        "",
        "| publish→stored (s) | n | p50 | p95 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def row(label, s):
        return f"| {label} | {s.get('n', 0)} | {s.get('p50', '—')} | {s.get('p95', '—')} | {s.get('p99', '—')} | {s.get('max', '—')} |"

    lines.append(row("soak phase, all queues", lat["soak_enqueued_to_stored"]))
    lines.append(
        row(
            "soak phase, once each queue's first run had caught up",
            lat.get("soak_steady_enqueued_to_stored", {}),
        )
    )
    for q, s in lat["soak_per_queue"].items():
        lines.append(row(f"soak phase, `{q}`", s))
    lines.append(row("fault phase (made→stored, incl. buffering)", lat["faults_producer_made_to_stored"]))
    comp = report["latency_components_soak"]
    ov = report["run_overheads_soak"]
    lines += [
        "",
        f"Seconds after publishing began: first ingest run started {lat.get('first_run_started_after_s', {})}, "
        f"caught up (oldest message < 1 s) {lat.get('caught_up_after_s', {})}.",
        "",
        "| latency part (soak phase) | mean | p50 | p95 | p99 |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, s in (
        ("waiting for a run request (sensor tick, or a run in progress)", comp["wait_for_run_request"]),
        ("run launch (created → started: queue, spawn, code load)", comp["run_launch"]),
        ("inside the run (started → stored)", comp["inside_run"]),
        ("enqueued → first read (consumer's poll, the batch ahead)", comp.get("enqueued_to_read", {})),
        ("first read → stored (validation, store statement)", comp.get("read_to_stored", {})),
        *(
            (f"steady traffic: {label}", report.get("latency_components_steady", {}).get(key, {}))
            for label, key in (
                ("waiting for a run or its launch", "run_launch"),
                ("enqueued → first read", "enqueued_to_read"),
                ("first read → stored", "read_to_stored"),
            )
        ),
        ("per run: created → started", ov["created_to_started"]),
        ("per run: started → first row stored", ov["started_to_first_stored"]),
        ("per run: duration", ov["run_duration"]),
    ):
        lines.append(
            f"| {label} | {s.get('mean', '—')} | {s.get('p50', '—')} | {s.get('p95', '—')} | {s.get('p99', '—')} |"
        )
    for name, s in report["sensor_tick_interval_soak"].items():
        lines.append(
            f"| tick interval of `{name}` | {s.get('mean', '—')} | {s.get('p50', '—')} | {s.get('p95', '—')} | "
            f"{s.get('p99', '—')} |"
        )
    lines += [
        "",
        "| lag (oldest message age) | max (soak) | mean (soak) | max (whole run) | max depth (whole run) |",
        "|---|---:|---:|---:|---:|",
    ]
    for q, s in report["lag"]["soak"].items():
        w = report["lag"]["whole_run"].get(q, {})
        lines.append(
            f"| `{q}` | {s['max_oldest_age_s']} s | {s['mean_oldest_age_s']} s | "
            f"{w.get('max_oldest_age_s', '—')} s | {w.get('max_depth', '—')} |"
        )
    mem = report["memory_mb"]
    lines += ["", "| RSS (MB) | soak start | soak end | end (after faults) |", "|---|---:|---:|---:|"]
    for role in mem["soak_start"]:
        lines.append(
            f"| {role} | {mem['soak_start'][role]} | {mem['soak_end'].get(role)} | {mem['end'].get(role)} |"
        )
    runs = report["runs"]
    lines += [
        "",
        f"Runs launched: {runs['total']} ({runs['during_soak']} in the soak phase, "
        f"{runs['ingest_runs_per_minute_soak']} ingest runs/min): "
        + ", ".join(f"`{j}` {dict(c)}" for j, c in runs["by_job"].items()),
    ]
    if report["faults"]:
        lines += ["", "| fault | result | settled after | details |", "|---|---|---:|---|"]
        for f in report["faults"]:
            result = "passed" if f["passed"] else "FAILED: " + "; ".join(f["problems"])
            d = {k: v for k, v in f["details"].items() if k != "accounting"}
            acc = f["details"].get("accounting", {})
            if acc:
                d["accounting"] = (
                    f"{acc['published']} = {acc['stored']} + {acc['dead_lettered_valid']}, "
                    f"{acc['missing']} lost, malformed {acc['malformed_in_dlq']}/{acc['malformed_sent']}"
                )
            settled = (
                f"{f['recovered_s']} s"
                if f["recovered_s"] is not None
                else f"not within {report['options']['settle_timeout_s']:g} s"
            )
            lines.append(f"| {f['name']} | {result} | {settled} | {_md(json.dumps(d, default=str))} |")
    if report.get("supervisor_restarts"):
        lines += [
            "",
            "Processes restarted by the harness (as a supervisor would; each fails the run): "
            + "; ".join(restart_text(r) for r in report["supervisor_restarts"]),
        ]
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|")[:700]


def parse_args(argv: list[str] | None = None) -> tuple[SoakOptions, argparse.Namespace]:
    p = argparse.ArgumentParser(
        prog="python -m queue_assets_tests.soak.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--minutes", type=float, default=10.0, help="fault-free soak phase (default 10)")
    p.add_argument("--instances", type=int, default=20)
    p.add_argument("--rate", type=float, default=25.0, help="messages/s besides heartbeats (default 25)")
    p.add_argument("--heartbeat-every", type=float, default=10.0)
    p.add_argument("--faults", default="all", help=f"comma list of {', '.join(FAULTS)}; 'all' or 'none'")
    p.add_argument(
        "--port", type=int, default=3300, help="webserver port (3300-3399 for this project's soaks)"
    )
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the data folder (logs, database) afterwards")
    p.add_argument(
        "--vt", type=int, default=None, help="QUEUE_ASSETS_VISIBILITY_TIMEOUT_S for the hub (default 60)"
    )
    p.add_argument("--malformed", type=int, default=10_000)
    p.add_argument("--json", type=Path, default=None, help="write the full report here")
    p.add_argument(
        "--markdown", type=Path, default=None, help="write the tables for docs/reliability.md here"
    )
    a = p.parse_args(argv)
    faults = tuple(FAULTS) if a.faults == "all" else () if a.faults == "none" else tuple(a.faults.split(","))
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        p.error(f"unknown fault(s) {unknown}; expected some of {', '.join(FAULTS)}")
    opts = SoakOptions(
        minutes=a.minutes,
        instances=a.instances,
        rate=a.rate,
        heartbeat_every_s=a.heartbeat_every,
        faults=faults,
        port=a.port,
        data_dir=a.data_dir,
        keep=a.keep,
        visibility_timeout_s=a.vt,
        malformed=a.malformed,
    )
    return opts, a


def main(argv: list[str] | None = None) -> int:
    opts, a = parse_args(argv)
    report = Soak(opts, log=lambda m: print(m, file=sys.stderr, flush=True)).run()
    text = json.dumps(report, indent=2, default=str)
    if a.json:
        a.json.write_text(text)
    md = markdown(report)
    if a.markdown:
        a.markdown.write_text(md + "\n")
    print(md)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
