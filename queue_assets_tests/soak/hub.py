"""The hub as production runs it, in a dedicated data folder: embedded PostgreSQL, webserver, daemon.

`Hub` starts the embedded server of its own data folder, bootstraps it, creates the templates_data
remote, and runs `dagster-daemon run` and `dagster-webserver` against the repository's
`workspace.yaml` and `dagster.yaml` (copied into `<data dir>/dagster_home`, as `queue-assets dev`
does). Each of the two starts its own code server (`dagster api grpc`), and the daemon's code
server starts the run workers (`dagster api execute_run`). Nothing here touches another data
folder, so several engineers (or CI) can run it at once on different ports.

Every process it stops is one it started, found by pid: the ones it spawned, and their children
and orphans, recognised by their DAGSTER_HOME (the folder is unique to this hub).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from queue_assets import bootstrap, embedded
from queue_assets.cli.app import dagster_home
from queue_assets.settings import Settings, project_root

from .graphql import HubGraphQL

# Variables of the caller's shell that would point the hub somewhere else.
_SCRUB = ("SHARED_QUEUE_", "DAGSTER_", "QUEUE_ASSETS_", "GITHUB_", "TEMPLATES_REPO_URL")


@dataclass
class HubProcess:
    role: str
    popen: subprocess.Popen
    log_path: Path


@dataclass
class Hub:
    data_dir: Path
    port: int = 3300
    extra_env: dict[str, str] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, HubProcess] = field(default_factory=dict)
    templates_remote: Path | None = None

    # --- database -------------------------------------------------------------------------

    def start_database(self) -> dict[str, str]:
        """Start this hub's embedded server, bootstrap it and create the templates_data remote."""
        from queue_assets.git.repo import ensure_embedded_templates_remote

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.urls = embedded.ensure_running(self.data_dir)
        bootstrap.bootstrap(self.urls["shared_queue"])
        self.templates_remote = Path(ensure_embedded_templates_remote(self.data_dir))
        return self.urls

    @property
    def db_url(self) -> str:
        return self.urls["shared_queue"]

    def stop_database_from_another_process(self) -> None:
        """`embedded.stop`, run in a separate process (pgserver caches its handle per process)."""
        _run_embedded(self.data_dir, "stop")

    def start_database_from_another_process(self) -> None:
        _run_embedded(self.data_dir, "ensure_running")

    # --- Dagster processes ----------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        settings = Settings.from_env({"QUEUE_ASSETS_DATA_DIR": str(self.data_dir)})
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
        env.update(
            {
                # An explicit URL: a sensor or run must never start the server again on its own
                # while the fault step has it stopped.
                "SHARED_QUEUE_DB_URL": self.urls["shared_queue"],
                "DAGSTER_PG_URL": self.urls["dagster"],
                "DAGSTER_HOME": str(dagster_home(settings)),
                "QUEUE_ASSETS_DATA_DIR": str(self.data_dir),
                "TEMPLATES_REPO_URL": str(self.templates_remote),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        self.env = env
        return env

    @property
    def dagster_home(self) -> str:
        return self.env["DAGSTER_HOME"]

    def _spawn(self, role: str, cmd: list[str]) -> HubProcess:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        n = sum(1 for p in logs.glob(f"{role}*.log"))
        log_path = logs / f"{role}{'-' + str(n) if n else ''}.log"
        log = open(log_path, "w")  # noqa: SIM115 - kept open for the child's lifetime
        popen = subprocess.Popen(
            cmd,
            env=self.env,
            # Not the project root: Dagster would load the root's `.env` (`queue-assets init` writes it
            # for the default data folder) over this hub's environment.
            cwd=self.data_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = HubProcess(role, popen, log_path)
        self.procs[role] = proc
        return proc

    def start_daemon(self) -> HubProcess:
        return self._spawn(
            "daemon", [_bin("dagster-daemon"), "run", "-w", str(project_root() / "workspace.yaml")]
        )

    def start_webserver(self) -> HubProcess:
        return self._spawn(
            "webserver",
            [
                _bin("dagster-webserver"),
                "-w",
                str(project_root() / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
        )

    def start(self, timeout_s: float = 240) -> HubGraphQL:
        """Webserver and daemon, then wait until the code location is loaded and the daemons are healthy."""
        if not self.env:
            self.environment()
        self.start_webserver()
        self.start_daemon()
        gql = self.graphql()
        self.wait_ready(gql, timeout_s)
        return gql

    def graphql(self) -> HubGraphQL:
        return HubGraphQL(f"http://127.0.0.1:{self.port}")

    def wait_ready(self, gql: HubGraphQL, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = "not started"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if gql.location_loaded() and gql.daemons_healthy(("SENSOR", "QUEUED_RUN_COORDINATOR")):
                    return
                last = "code location or daemons not ready"
            except (requests.RequestException, RuntimeError) as exc:
                last = str(exc)[:200]
            time.sleep(1)
        raise TimeoutError(
            f"the hub on port {self.port} was not ready after {timeout_s:.0f}s ({last}); "
            f"logs in {self.data_dir / 'logs'}"
        )

    def check_alive(self) -> None:
        for role, p in self.procs.items():
            if p.popen.poll() is not None:
                tail = p.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the {role} exited with code {p.popen.returncode}; its log ends:\n{tail}")

    def kill_daemon(self) -> int:
        """SIGKILL the daemon process (only it: its code server and runs are left as a crash leaves them)."""
        p = self.procs.pop("daemon")
        os.kill(p.popen.pid, signal.SIGKILL)
        p.popen.wait(timeout=30)
        return p.popen.pid

    # --- processes by role ------------------------------------------------------------------

    def hub_processes(self) -> list[psutil.Process]:
        """Every live process of this hub: the ones started here, their children, and orphans whose
        DAGSTER_HOME is this hub's (a killed daemon's code server, say)."""
        found: dict[int, psutil.Process] = {}
        for p in self.procs.values():
            try:
                root = psutil.Process(p.popen.pid)
                found[root.pid] = root
                for c in root.children(recursive=True):
                    found[c.pid] = c
            except psutil.NoSuchProcess:
                pass
        home = self.env.get("DAGSTER_HOME")
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if proc.pid in found or not _looks_like_dagster(proc.info.get("cmdline")):
                continue
            try:
                if home and proc.environ().get("DAGSTER_HOME") == home:
                    found[proc.pid] = proc
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        return list(found.values())

    def roles(self) -> dict[str, list[psutil.Process]]:
        """`webserver`, `daemon`, `code_server` (one per webserver/daemon) and `run_worker` processes."""
        out: dict[str, list[psutil.Process]] = {
            "webserver": [],
            "daemon": [],
            "code_server": [],
            "run_worker": [],
        }
        pids = {p.popen.pid: role for role, p in self.procs.items()}
        for proc in self.hub_processes():
            try:
                cmd = " ".join(proc.cmdline())
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            if proc.pid in pids:
                out[pids[proc.pid]].append(proc)
            elif "multiprocessing" in cmd or "execute_run" in cmd or "execute_step" in cmd:
                out["run_worker"].append(proc)
            elif " grpc" in cmd or "code-server" in cmd:
                out["code_server"].append(proc)
        return out

    def rss_mb(self) -> dict[str, float]:
        """Resident memory by role, in MB: the webserver, the daemon, and the largest code server.

        Run workers are left out (they come and go). Code servers are taken one by one, not summed:
        Dagster replaces them now and then, and while a new one starts beside the old their sum
        jumps by a whole process (~210 MB here) without anything growing. A leak shows as one
        process growing."""
        out = {}
        for role, procs in self.roles().items():
            if role == "run_worker":
                continue
            sizes = [0]
            for p in procs:
                try:
                    sizes.append(p.memory_info().rss)
                except (psutil.NoSuchProcess, psutil.ZombieProcess):
                    pass
            out[role] = round((max(sizes) if role == "code_server" else sum(sizes)) / 2**20, 1)
        return out

    def run_workers(self) -> list[psutil.Process]:
        return self.roles()["run_worker"]

    # --- shutdown ---------------------------------------------------------------------------

    def stop(self, *, database: bool = True) -> None:
        """Stop every process of this hub (SIGTERM, then SIGKILL), then the database."""
        procs = self.hub_processes()
        for p in self.procs.values():
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=15)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        for p in self.procs.values():
            try:
                p.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        if database and self.urls:
            try:
                embedded.stop(self.data_dir)
            except Exception:  # noqa: BLE001 - best effort at the end of a run
                pass

    def remove(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _looks_like_dagster(cmdline: Iterable[str] | None) -> bool:
    """Dagster's processes, and the multiprocessing children that run workers and steps are."""
    text = " ".join(cmdline or ())
    return "dagster" in text or "multiprocessing" in text


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _run_embedded(data_dir: Path, action: str) -> None:
    code = (
        "import sys; from pathlib import Path; from queue_assets import embedded; "
        f"embedded.{action}(Path(sys.argv[1]))"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(data_dir)],
        check=True,
        cwd=project_root(),
        capture_output=True,
        timeout=120,
    )
