"""`queue-assets`: bootstrap, run the hub locally, publish demo traffic, inspect settings."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import traceback
from pathlib import Path

from ..names import InvalidNameError
from ..redact import redact
from ..settings import Settings, SettingsError, project_root
from . import ops, patterns, roles
from .errors import fail

# psycopg, pydantic and the hub's modules are imported inside the commands that use them:
# `queue-assets --help` loads none of them, and `status` only psycopg (docs/benchmarks.md).

DOTENV_HEADER = "# Written by `queue-assets init` (and `queue-assets dev`); rewritten by each run."


def write_dotenv(root: Path, settings: Settings, urls: dict[str, str]) -> str | None:
    """`root/.env` with the embedded server's URLs, so `dagster dev` / `dg dev` run in `root` use it.

    Dagster loads `.env` from its working directory before it opens the instance, so `dagster.yaml`'s
    `DAGSTER_PG_URL` is found there. Written only for the embedded server (its URLs hold no password);
    with configured URLs, a `.env` written earlier by this function is removed, since Dagster lets
    `.env` override the environment. A `.env` someone else wrote is never touched. Returns what was
    done, for the user, or None when nothing was.
    """
    path = root / ".env"
    if settings.data_dir.resolve() != (root / ".queue_assets").resolve():
        # A hub in a data folder of its own (a test's, the soak's) must not rewrite the checkout's
        # `.env`: Dagster lets it override the environment of every Dagster command run in `root`.
        return None
    ours = not path.exists() or path.read_text(errors="replace").startswith(DOTENV_HEADER)
    if not settings.embedded:
        if path.exists() and ours:
            path.unlink()
            return f"removed {path}: it named the embedded server, and SHARED_QUEUE_DB_URL is set"
        return None
    values = {
        "DAGSTER_HOME": str(dagster_home(settings)),
        "DAGSTER_PG_URL": urls["dagster"],
        "SHARED_QUEUE_DB_URL": urls["shared_queue"],
    }
    lines = [f"{k}={v}" for k, v in values.items()]
    if not ours:
        return (
            f"{path} exists and was not written by queue-assets, so it was left alone; for `dagster dev` "
            f"there, add: {' '.join(lines)}"
        )
    path.write_text(
        "\n".join(
            [
                DOTENV_HEADER,
                "# `dagster dev` and `dg dev` in this folder read it: they use the embedded PostgreSQL, which must be",
                "# running (`queue-assets init` starts it; `queue-assets stop` stops it).",
                *lines,
                "",
            ]
        )
    )
    return (
        f"wrote {path} for `dagster dev` / `dg dev` here (the embedded server; `queue-assets init` starts it)"
    )


def initialise(settings: Settings, urls: dict[str, str]) -> None:
    """Everything `queue-assets init` does: pgmq, queues, migrations, roles, the templates remote, `.env`."""
    from .. import bootstrap, security

    report = bootstrap.bootstrap(
        urls["shared_queue"], extra_steps=security.bootstrap_steps(urls.get("dagster") or None)
    )
    print(report.summary())
    if not os.environ.get("TEMPLATES_REPO_URL", "").strip():
        from ..git.repo import ensure_embedded_templates_remote

        print(f"templates_data remote (embedded): {ensure_embedded_templates_remote(settings.data_dir)}")
    done = write_dotenv(project_root(), settings, urls)
    if done:
        print(done)


def cmd_init(settings: Settings, args) -> int:
    from ..db import resolve_urls

    initialise(settings, resolve_urls(settings))
    return 0


def cmd_settings(settings: Settings, args) -> int:
    for k, v in settings.describe().items():
        print(f"{k:22} {v}")
    return 0


def cmd_simulate(settings: Settings, args) -> int:
    from .. import simulate
    from ..db import resolve_urls

    urls = resolve_urls(settings)

    def progress(s):
        print(
            f"\rpublished: {s.patterns} pattern, {s.analyses} analysis, {s.learned} learned, "
            f"{s.heartbeats} heartbeat, {s.invalid} invalid, {s.requests} llm requests, "
            f"{s.queries} pattern queries ({s.misses} misses)",
            end="",
            flush=True,
        )

    stats = simulate.run(
        urls["shared_queue"],
        instances=args.instances,
        rate=args.rate,
        duration_s=args.duration,
        progress=progress,
    )
    progress(stats)
    print()
    return 0


def cmd_simulate_services(settings: Settings, args) -> int:
    """The demo's LLM router and HITL bridge (queue_assets/simulate_services.py), until Ctrl-C."""
    from .. import simulate_services as services
    from ..db import resolve_urls

    try:
        rates = services.RouterRates(
            garbage=args.garbage, late=args.late, silent=args.silent, late_delay_s=args.late_delay
        )
    except ValueError as exc:
        return fail(str(exc))
    if not 0 <= args.reject <= 1:
        return fail(f"--reject {args.reject!r}: must be between 0 and 1")
    urls = resolve_urls(settings)
    stats = services.run(
        urls["shared_queue"], seed=args.seed, rates=rates, reject=args.reject, duration_s=args.duration
    )
    print(f"router: {dict(stats.router)}; bridge: {dict(stats.bridge)}")
    return 0


def cmd_ingest(settings: Settings, args) -> int:
    """Drain one queue now, outside Dagster (what the ingest asset does)."""
    from ..db import connection, resolve_urls
    from ..ingest.core import IngestConfig, ingest_queue
    from ..queues import CONSUMED_QUEUES

    if args.queue not in CONSUMED_QUEUES:
        return fail(
            f"queue {args.queue[:60]!r} is not consumed by the hub; expected one of: "
            f"{', '.join(CONSUMED_QUEUES)}"
        )
    urls = resolve_urls(settings)
    with connection(urls["shared_queue"]) as conn:
        # "Drain now": no lingering on an empty queue and no time cap (the message cap still holds).
        cfg = dataclasses.replace(IngestConfig.from_settings(settings), linger_s=0.0, max_seconds=86_400.0)
        r = ingest_queue(
            conn,
            args.queue,
            cfg,
            prefetch_url=urls["shared_queue"],
            on_batch=lambda r: print(f"\r{r.read} read, {r.stored} stored", end="", flush=True),
        )
    print(
        f"\n{args.queue}: {r.read} read, {r.stored} stored, {r.duplicates} duplicates"
        f" ({r.ledger_conflicts} read again after another consumer took them), "
        f"{r.dead_lettered} dead-lettered in {r.elapsed_s:.2f}s ({r.rate:.0f} msg/s)"
    )
    return 0


def dagster_home(settings: Settings) -> Path:
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(project_root() / "dagster.yaml", home / "dagster.yaml")
    return home


def hub_environment(settings: Settings) -> dict[str, str]:
    """Environment for the Dagster processes: the resolved URLs and DAGSTER_HOME."""
    from ..db import resolve_urls

    urls = resolve_urls(settings)
    if not urls.get("dagster"):
        raise SettingsError(
            ["DAGSTER_PG_URL: must be set when SHARED_QUEUE_DB_URL is (Dagster's own storage)"]
        )
    env = dict(os.environ)
    env["SHARED_QUEUE_DB_URL"] = urls["shared_queue"]
    env["DAGSTER_PG_URL"] = urls["dagster"]
    env["DAGSTER_HOME"] = str(dagster_home(settings))
    return env


def after_dev(settings: Settings, started_here: bool) -> str:
    """On leaving `queue-assets dev`: stop the embedded server it started; say what still runs.

    A server that ran before `dev` started (someone's `queue-assets init`, a `dagster dev` through
    `.env`) is left running, and so is one that other clients still use.
    """
    from .. import embedded

    if not settings.embedded:
        return ""
    how = "`queue-assets stop` (or `make clean-data`, which also deletes its data) stops it"
    if not started_here:
        return f"the embedded PostgreSQL still runs (it ran before `queue-assets dev`); {how}"
    others = embedded.other_clients(settings.data_dir)
    if others:
        return f"the embedded PostgreSQL still runs: {others} other connection(s) use it; {how}"
    embedded.stop(settings.data_dir)
    return "stopped the embedded PostgreSQL (`queue-assets init` starts it again, e.g. for `dagster dev`)"


# The demo's enrichment clock: a 20 s timeout (retries after 20 s, then 40 s) shows a failed
# enrichment within about two minutes instead of 15; the router's late replies come after 30 s.
DEMO_LLM_TIMEOUT_S = "20"
DEMO_LATE_DELAY_S = "30"


def demo_environment(approval: str, env: dict[str, str]) -> dict[str, str]:
    """What `queue-assets dev` sets for the demo, unless the environment already sets it."""
    wanted = {"QUEUE_ASSETS_PATTERN_APPROVAL": approval, "QUEUE_ASSETS_LLM_TIMEOUT_S": DEMO_LLM_TIMEOUT_S}
    return {k: v for k, v in wanted.items() if not env.get(k)}


def cmd_dev(settings: Settings, args) -> int:
    """The embedded hub: server, bootstrap, demo traffic and `dagster dev`, in one command."""
    from .. import embedded

    started_here = settings.embedded and not embedded.is_running(settings.data_dir)
    env = hub_environment(settings)
    if not args.no_demo:
        env["QUEUE_ASSETS_DEMO"] = "1"  # turns on demo_lineage_sensor (see queue_assets/demo.py)
        env.update(demo_environment(args.approval, env))
    initialise(settings, {"shared_queue": env["SHARED_QUEUE_DB_URL"], "dagster": env["DAGSTER_PG_URL"]})
    sim = services = None
    if not args.no_demo:
        # The simulated LLM router and HITL bridge answer the hub's requests (docs/patterns.md, "The demo").
        services = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "queue_assets.cli",
                "simulate-services",
                "--late-delay",
                DEMO_LATE_DELAY_S,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "queue_assets.cli",
                "simulate",
                "--instances",
                str(args.instances),
                "--rate",
                str(args.rate),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
        )
    cmd = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(project_root() / "workspace.yaml"),
        "-h",
        args.host,
        "-p",
        str(args.port),
    ]
    print(f"starting Dagster at http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    # Run from the data folder, not the project root: Dagster loads `.env` from its working directory
    # and lets it override the environment, and the root's `.env` names the default data folder.
    proc = subprocess.Popen(cmd, env=env, cwd=settings.data_dir)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        return proc.wait()
    finally:
        for child in (sim, services):
            if child:
                child.terminate()
                child.wait()
        note = after_dev(settings, started_here)
        if note:
            print(note, flush=True)


def cmd_stop(settings: Settings, args) -> int:
    from .. import embedded

    if settings.db_url:
        return fail("SHARED_QUEUE_DB_URL is set: there is no embedded server to stop")
    print(
        "stopped the embedded PostgreSQL"
        if embedded.stop(settings.data_dir)
        else "the embedded PostgreSQL was not running"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="queue-assets", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="install pgmq, create the queues and apply the hub schema (idempotent)")
    sub.add_parser("settings", help="show the settings in force (passwords redacted)")
    s = sub.add_parser("simulate", help="publish demo traffic from simulated instances")
    s.add_argument("--instances", type=int, default=3)
    s.add_argument("--rate", type=float, default=5.0, help="pattern messages per second")
    s.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    s = sub.add_parser("ingest", help="drain one consumed queue now, outside Dagster")
    s.add_argument("queue")
    d = sub.add_parser("dev", help="run the hub locally: embedded PostgreSQL, demo traffic, dagster dev")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=3000)
    d.add_argument("--instances", type=int, default=3)
    d.add_argument("--rate", type=float, default=5.0)
    d.add_argument("--no-demo", action="store_true", help="do not start simulated instances and services")
    d.add_argument(
        "--approval",
        choices=["required", "off"],
        default="required",
        help="the demo's QUEUE_ASSETS_PATTERN_APPROVAL (default required: the simulated HITL bridge decides)",
    )
    v = sub.add_parser(
        "simulate-services", help="run the demo's simulated LLM router and HITL bridge (honour reply_to)"
    )
    v.add_argument("--seed", type=int, default=7)
    v.add_argument("--garbage", type=float, default=0.10, help="share of router replies that are garbage")
    v.add_argument("--late", type=float, default=0.05, help="share of router replies sent late")
    v.add_argument("--silent", type=float, default=0.05, help="share of requests the router never answers")
    v.add_argument("--late-delay", type=int, default=45, help="seconds a late reply is held back")
    v.add_argument("--reject", type=float, default=0.2, help="share of approval requests the bridge rejects")
    v.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    sub.add_parser("stop", help="stop the embedded PostgreSQL")
    ops.add_subcommands(sub)
    roles.add_subcommands(sub)
    patterns.add_subcommands(sub)
    return p


COMMANDS = {
    "init": cmd_init,
    "settings": cmd_settings,
    "simulate": cmd_simulate,
    "simulate-services": cmd_simulate_services,
    "ingest": cmd_ingest,
    "dev": cmd_dev,
    "stop": cmd_stop,
}
COMMANDS.update(ops.COMMANDS)
COMMANDS.update(roles.COMMANDS)
COMMANDS.update(patterns.COMMANDS)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        return COMMANDS[args.command](settings, args)
    except (SettingsError, InvalidNameError) as exc:
        return fail(str(exc))
    except Exception as exc:
        if isinstance(exc, _expected_errors()):
            return fail(str(exc))
        # A bug or an error nobody foresaw: the traceback helps, but only redacted.
        print(redact(traceback.format_exc()), file=sys.stderr, end="")
        return 1


def _expected_errors() -> tuple[type[Exception], ...]:
    """Errors reported as one line, not a traceback; imported only once a command has failed."""
    from ..bootstrap import BootstrapError
    from ..db import DatabaseUnavailable

    return (DatabaseUnavailable, BootstrapError)
