"""Import time of the code location (what every run launch pays), this checkout against another.

    .venv/bin/python bench/bench_import.py --checkout /tmp/before [--runs 5] [--module queue_assets.definitions]

Runs `python -X importtime -c "import <module>"` in a fresh interpreter, alternating the other
checkout and this one `--runs` times each (same interpreter and packages; the checkout is put first
on PYTHONPATH and is the working directory). Prints, per checkout, the median and minimum of the
module's cumulative import time as `-X importtime` reports it and of the process's wall time, the
ratio after/before, and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def one_run(checkout: Path, module: str) -> tuple[float, float]:
    """(cumulative import time of `module` in s, process wall time in s)."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        env=env,
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    last = next(line for line in reversed(done.stderr.splitlines()) if line.rstrip().endswith(f"| {module}"))
    return int(last.split("|")[1]) / 1e6, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkout", required=True, help="the other checkout (the 'before')")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--module", default="queue_assets.definitions")
    args = p.parse_args()
    sides = {"before": Path(args.checkout).resolve(), "after": HERE}
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
    load_start = os.getloadavg()
    for path in sides.values():  # once each, unmeasured: the files into the page cache
        one_run(path, args.module)
    for _ in range(args.runs):
        for side, path in sides.items():
            results[side].append(one_run(path, args.module))
    load_end = os.getloadavg()
    print(
        f"import {args.module}: {args.runs} runs each, alternating; load average "
        f"{load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end"
    )
    med: dict[str, float] = {}
    for side, path in sides.items():
        imports = [r[0] for r in results[side]]
        walls = [r[1] for r in results[side]]
        med[side] = statistics.median(imports)
        print(
            f"  {side:6} ({path}): import median {med[side]:.3f} s, min {min(imports):.3f} s; "
            f"process wall median {statistics.median(walls):.3f} s"
        )
    print(f"  after/before (import medians): {med['after'] / med['before']:.2f}")


if __name__ == "__main__":
    main()
