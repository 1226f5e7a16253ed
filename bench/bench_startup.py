"""Start-up time of `queue-assets --help`, `queue-assets status` and `import queue_assets.sdk`.

    .venv/bin/python bench/bench_startup.py [--runs 10] [--server URL] [--checkout PATH]

Sets up what `status` reads, as beside `make demo`: a bootstrapped shared_queue database and a
Dagster instance on PostgreSQL (the project's dagster.yaml, DAGSTER_PG_URL) holding one
materialization of `queue_statistics`. Then runs each command `--runs` times in a fresh
interpreter and prints the median and minimum wall time and the median CPU time (user + system,
which a busy machine inflates less than wall time). `--checkout` times another checkout
of the code (e.g. a `git worktree` of an older commit) with the same interpreter, for before/after.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from bench._common import fresh_database, parse_args  # noqa: E402
from queue_assets.settings import project_root  # noqa: E402

COMMANDS = {
    "queue-assets --help": ["-m", "queue_assets.cli", "--help"],
    "queue-assets status": ["-m", "queue_assets.cli", "status"],
    "queue-assets status --no-dagster": ["-m", "queue_assets.cli", "status", "--no-dagster"],
    "import queue_assets.sdk": ["-c", "import queue_assets.sdk"],
}


def _children_cpu() -> float:
    """CPU seconds used by finished child processes: less sensitive than wall time to a busy machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def dagster_instance(admin: str, shared_queue_url: str, home: Path) -> tuple[str, callable]:
    """A Dagster instance on PostgreSQL at `home` with one materialization; (its URL, drop)."""
    name = f"qa_bench_dagster_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(admin)
    url = urlunsplit(("postgresql+psycopg2", parts.netloc, "/" + name, parts.query, ""))
    shutil.copyfile(project_root() / "dagster.yaml", home / "dagster.yaml")
    code = (
        "import dagster as dg\n"
        "from queue_assets.operations.assets import queue_statistics\n"
        "from queue_assets.resources import SharedQueueResource\n"
        "with dg.DagsterInstance.get() as i:\n"
        f"    dg.materialize([queue_statistics], instance=i, resources={{'shared_queue': SharedQueueResource(db_url={shared_queue_url!r})}})\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_PG_URL": url}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)

    def drop():
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    return url, drop


def main() -> None:
    args = parse_args(
        __doc__, runs=(int, 10, "runs of each command"), checkout=(str, None, "time this checkout")
    )
    url, label, drop = fresh_database(args.server)
    home = Path(tempfile.mkdtemp(prefix="qa_bench_dagster_home_"))
    admin = urlunsplit(urlsplit(url)._replace(path="/postgres"))
    dagster_url, drop_dagster = dagster_instance(admin, url, home)
    env = {**os.environ, "SHARED_QUEUE_DB_URL": url, "DAGSTER_PG_URL": dagster_url, "DAGSTER_HOME": str(home)}
    code_dir = Path(args.checkout).resolve() if args.checkout else project_root()
    env["PYTHONPATH"] = str(code_dir)  # and run there: the current directory comes first on sys.path
    try:
        load = os.getloadavg()[0]
        print(f"{label}; code: {code_dir}; load average {load:.1f}")
        for name, argv in COMMANDS.items():
            times, cpu = [], []
            for _ in range(args.runs):
                t, before = time.perf_counter(), _children_cpu()
                subprocess.run(
                    [sys.executable, *argv], env=env, cwd=code_dir, check=True, capture_output=True
                )
                times.append(time.perf_counter() - t)
                cpu.append(_children_cpu() - before)
            print(
                f"  {name:34} wall median {statistics.median(times):.3f} s, min {min(times):.3f} s; "
                f"CPU (user+sys) median {statistics.median(cpu):.3f} s ({args.runs} runs)"
            )
    finally:
        drop_dagster()
        drop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
