"""A real hub for UI tests, started the way a person starts it: `queue-assets init`, then
`queue-assets dev --no-demo` (embedded PostgreSQL, `dagster dev`: one code server, the webserver and
the daemon), in a process group of its own that is torn down completely, even after a failure.

Everything lives under one data folder (`QUEUE_ASSETS_DATA_DIR`): the embedded server, Dagster's
home (`DAGSTER_HOME`, with the project's `dagster.yaml`) and the embedded `templates_data` remote,
so a test never touches `.queue_assets/` or another test's server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # finds the run workers our processes started
import requests

from queue_assets import embedded
from queue_assets.cli.app import initialise
from queue_assets.db import resolve_urls
from queue_assets.settings import Settings
from queue_assets_tests import helpers

PORT_RANGE = range(3500, 3600)
# Variables that would point the hub at another database, repository or GitHub: the test hub
# must run on its own embedded default.
_FOREIGN_PREFIXES = ("SHARED_QUEUE_", "DAGSTER_", "TEMPLATES_REPO_URL", "GITHUB_", "QUEUE_ASSETS_")


class HubStartError(RuntimeError):
    """The hub did not come up; carries the tail of its log."""


def free_port(ports: range = PORT_RANGE) -> int:
    """A port in `ports` nothing listens on."""
    return helpers.free_port(ports)


def clean_environment(data_dir: Path) -> dict[str, str]:
    """os.environ without the hub's own settings, plus QUEUE_ASSETS_DATA_DIR=<data_dir>."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
    env["QUEUE_ASSETS_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    # On a loaded 2-core machine a code server can take longer than Dagster's 60 s default to
    # answer the daemon, which then fails the run while dequeuing it.
    env["DAGSTER_GRPC_TIMEOUT_SECONDS"] = "300"
    return env


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Hub:
    """The running hub: `url` is the webserver, `graphql_url` its API, `db_url` the shared_queue database."""

    data_dir: Path
    port: int
    env: dict[str, str]
    db_url: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    def log_path(self, name: str) -> Path:
        return self.data_dir / f"{name}.log"

    def logs(self, lines: int = 40) -> str:
        """The tail of every process log, for assertion messages."""
        return "\n".join(
            f"--- {name} (last {lines} lines)\n{_tail(self.log_path(name), lines)}" for name in self.processes
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self.log_path(name).open("ab")
        # A session of its own: teardown signals the whole group, never anything else.
        self.processes[name] = subprocess.Popen(
            argv,
            env=self.env,
            # Not the project root: Dagster would load the root's `.env` (`queue-assets init` writes it
            # for the default data folder) over this hub's environment.
            cwd=self.data_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def start_processes(self) -> None:
        # `dagster dev` shares one code server between the webserver and the daemon: one Python
        # process loading the definitions instead of two, which matters on a 2-core machine.
        self._spawn(
            "dev",
            [
                sys.executable,
                "-m",
                "queue_assets.cli",
                "dev",
                "--no-demo",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
        )

    def wait_until_serving(self, timeout_s: float) -> None:
        """Until the webserver answers GraphQL; fails early if a process exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise HubStartError(
                        f"`queue-assets {name}` exited with code {proc.returncode}\n{self.logs()}"
                    )
            try:
                r = requests.post(self.graphql_url, json={"query": "{ version }"}, timeout=5)
                if r.ok and r.json().get("data", {}).get("version"):
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(1)
        raise HubStartError(
            f"webserver did not answer {self.graphql_url} within {timeout_s:.0f}s\n{self.logs()}"
        )

    def stop(self, grace_s: float = 15) -> None:
        """Terminate the process group and every descendant (code server, webserver, daemon, run
        workers), killing what is still there after `grace_s`; then stop the embedded PostgreSQL.
        Safe to call more than once."""
        procs: list[psutil.Process] = []
        for proc in self.processes.values():
            try:
                parent = psutil.Process(proc.pid)
                procs += [parent, *parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        for proc in self.processes.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace_s
        while (alive := [p for p in procs if _alive(p)]) and time.monotonic() < deadline:
            for proc in self.processes.values():
                proc.poll()  # reap our own child, or it lingers as a zombie
            time.sleep(0.2)
        for p in alive:  # ignored SIGTERM, or left our process group
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        for proc in self.processes.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        embedded.stop(self.data_dir)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def start_hub(data_dir: Path, port: int | None = None, *, timeout_s: float = 240, wait: bool = True) -> Hub:
    """`queue-assets init` (embedded PostgreSQL, pgmq, queues, migrations, templates_data remote), then
    `queue-assets dev --no-demo` on `port` (default: a free one in 3500-3599), all in `data_dir`.

    With `wait=False` it returns once the processes are started (the database is ready; call
    `Hub.wait_until_serving` before using the webserver). The caller must call `Hub.stop()`; when
    this raises, the partly started hub has been stopped already.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    env = clean_environment(data_dir)
    settings = Settings.from_env(env)
    urls = resolve_urls(settings)  # starts the embedded server in data_dir
    hub = Hub(data_dir=data_dir, port=port or free_port(), env=env, db_url=urls["shared_queue"])
    try:
        # Before `dev` (which repeats it, idempotently): the caller may publish as soon as this returns.
        initialise(settings, urls)
        hub.start_processes()
        if wait:
            hub.wait_until_serving(timeout_s)
    except BaseException:
        hub.stop()
        raise
    return hub
