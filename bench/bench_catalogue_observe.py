"""What keeping the stored answer (`hub.patterns.entry`, sql/016) costs `hub.catalogue_observe`, the
call ingest makes once per batch, by how many distinct keys a batch touches.

    .venv/bin/python bench/bench_catalogue_observe.py [--batches 16] [--server URL]

Two fresh databases on one server: in one the entry triggers are on, in the other off (switched
once, before timing, so no ALTER TABLE invalidates plans between calls). The same batch summaries
(every name of the batch a new observation from one instance, one indicator each) go to both,
alternating which goes first; each call is timed with its commit. Medians after two warm-up
batches, for 7 keys (what bench_ingest.py's payload touches per batch), 100 keys of 2 names and
500 keys. The load average is printed beside.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fresh_database, parse_args  # noqa: E402
from bench.bench_patterns import set_entry_triggers  # noqa: E402

NOW = "2026-12-03T16:00:00Z"


def summary(keys: int, names_per_key: int, batch: int) -> str:
    """A batch summary as catalogue.summarise builds it."""
    names = [
        {"t": "framework", "n": f"Key-{k}" + (f".v{a}" if a else ""), "c": 1 + batch % 3, "f": NOW, "l": NOW}
        for k in range(keys)
        for a in range(names_per_key)
    ]
    sightings = [
        {"t": x["t"], "n": x["n"], "i": f"inst-{batch % 8}", "g": "elixir", "c": x["c"], "s": 0.9 * x["c"]}
        | {"k": x["c"], "f": NOW, "l": NOW}
        for x in names
    ]
    indicators = [{"t": x["t"], "n": x["n"], "x": "mix.exs", "c": x["c"]} for x in names]
    return json.dumps({"names": names, "sightings": sightings, "indicators": indicators, "examples": []})


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    args = parse_args(__doc__, batches=(int, 16, "batches per shape and database (2 of them warm-up)"))
    on_db, off_db = fresh_database(args.server), fresh_database(args.server)
    print(f"server: {on_db[1]}; load average 1/5/15 min: {load()}")
    try:
        with psycopg.connect(on_db[0]) as on, psycopg.connect(off_db[0]) as off:
            set_entry_triggers(off, False)
            for keys, per in ((7, 1), (100, 2), (500, 1)):
                times: dict[str, list[float]] = {"on": [], "off": []}
                for r in range(args.batches):
                    order = (("on", on), ("off", off)) if r % 2 == 0 else (("off", off), ("on", on))
                    for label, conn in order:
                        body = summary(keys, per, r)
                        t = time.perf_counter()
                        conn.execute("SELECT hub.catalogue_observe(%s::jsonb)", (body,))
                        conn.commit()
                        if r >= 2:
                            times[label].append(time.perf_counter() - t)
                m_on, m_off = statistics.median(times["on"]), statistics.median(times["off"])
                print(
                    f"{keys} keys x {per} names: with the entry triggers {m_on * 1000:.2f} ms, without "
                    f"{m_off * 1000:.2f} ms, +{(m_on - m_off) * 1000:.2f} ms a batch "
                    f"({(m_on - m_off) * 1e6 / keys:.0f} us a key), ratio {m_on / m_off:.2f}"
                )
        print(f"load average 1/5/15 min: {load()}")
    finally:
        on_db[2]()
        off_db[2]()


if __name__ == "__main__":
    main()
