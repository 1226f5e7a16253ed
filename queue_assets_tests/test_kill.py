"""Crash safety: a consumer SIGKILLed at random points still yields exactly-once storage."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import psycopg

from queue_assets_tests.helpers import count, pattern_message, queue_depth, send_many

TOTAL = 20_000
INVALID_EVERY = 50  # every 50th message is malformed
DUPLICATE_KEY_EVERY = 97
VT = 5


def _corpus() -> tuple[list[str], list[dict], int, int, int]:
    """Raw messages and headers; every 97th valid message reuses the key of the message 4 before it
    (same instance), so it is a producer retry that must be stored once."""
    raws, headers = [], []
    valid = invalid = duplicates = 0
    for i in range(TOTAL):
        if i % INVALID_EVERY == 0:
            raws.append(json.dumps({"type": "pattern_detection", "instance_id": "singularity-1",
                                    "timestamp": "not-a-time", "patterns": []}))
            headers.append(None)
            invalid += 1
            continue
        valid += 1
        raws.append(pattern_message(f"singularity-{i % 4}", i))
        if i % DUPLICATE_KEY_EVERY == 0 and (i - 4) % INVALID_EVERY and i >= 4:
            headers.append({"idempotency_key": f"k-{i - 4}"})
            duplicates += 1
        else:
            headers.append({"idempotency_key": f"k-{i}"})
    return raws, headers, valid, invalid, duplicates


def _consumer(db_url: str) -> subprocess.Popen:
    env = {**os.environ, "SHARED_QUEUE_DB_URL": db_url, "SHARED_QUEUE_BATCH_SIZE": "100",
           "QUEUE_ASSETS_VISIBILITY_TIMEOUT_S": str(VT), "QUEUE_ASSETS_MAX_ATTEMPTS": "50"}
    return subprocess.Popen([sys.executable, "-m", "queue_assets.cli", "ingest", "pattern_messages"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_sigkill_five_times_during_20k_ingest_stores_each_valid_message_exactly_once(db_url):
    rng = random.Random(20_000)
    raws, headers, valid, invalid, duplicates = _corpus()
    assert duplicates > 100
    with psycopg.connect(db_url) as conn:
        send_many(conn, "pattern_messages", raws, headers)
        kills = 0
        while kills < 5:
            before = count(conn, "hub.ingest_ledger")
            proc = _consumer(db_url)
            deadline = time.monotonic() + 60
            while count(conn, "hub.ingest_ledger") == before and time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.4))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
            else:
                assert proc.returncode == 0, proc.stderr.read()
                break  # drained before we could kill it: the corpus ran out
        assert kills == 5, "the consumer finished before it could be killed five times"
        assert queue_depth(conn, "pattern_messages") > 0
        time.sleep(VT + 0.5)  # leases of the killed runs expire
        proc = _consumer(db_url)
        assert proc.wait(timeout=300) == 0, proc.stderr.read()

        stored = valid - duplicates
        assert queue_depth(conn, "pattern_messages") == 0
        assert count(conn, "hub.ingest_ledger") == TOTAL
        assert count(conn, "hub.ingest_ledger", "outcome = 'stored'") == stored
        assert count(conn, "hub.ingest_ledger", "outcome = 'duplicate'") == duplicates
        assert count(conn, "hub.pattern_observations") == 2 * stored
        assert queue_depth(conn, "pattern_messages_dlq") == invalid
        assert count(conn, "pgmq.a_pattern_messages") == TOTAL
        redelivered = conn.execute("SELECT count(*) FROM hub.ingest_ledger WHERE read_ct > 1").fetchone()[0]
        assert redelivered > 0  # the kills really interrupted batches in flight
