"""A run that sent `llm_request`s takes their replies itself (issue 12: the fleet learns in seconds).

Without this, a reply waits on `hub_llm_results` for its sensor's tick and a run launch, seconds to
tens of seconds on a busy 2-core machine. `ReplyWaiter` ingests `hub_llm_results` in a thread of
the run that sent the requests, through the very same `ingest_queue` the reply queue's own run uses,
while any of those requests is still in flight and for at most `wait_s` after the newest was sent
(`QUEUE_ASSETS_LLM_REPLY_WAIT_S`). Both consumers may run at once: pgmq's read skips what the other
holds and the ledger stores each message once, so a reply is applied exactly once whoever reads it.
A reply that arrives after the wait is the reply queue's own run's, as before.

No Dagster here: the ingest and enrichment assets own a waiter and report what it ingested.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import psycopg

from .. import db
from ..queues import HUB_LLM_RESULTS
from ..redact import redact
from .core import IngestConfig, IngestResult, ingest_queue

IN_FLIGHT_SQL = "SELECT EXISTS (SELECT 1 FROM hub.enrichment_requests WHERE request_id = ANY(%s) AND status = 'in_flight')"


class ReplyWaiter:
    """Ingest `hub_llm_results` in a background thread while requests this run sent are in flight.

    `expect(ids)` after each commit that sent requests (starts the thread, or extends its wait);
    `close()` at the end of the run waits for the thread and returns what it ingested. A waiter
    with `wait_s` 0 does nothing.
    """

    def __init__(
        self,
        url: str,
        cfg: IngestConfig,
        wait_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.url = url
        # no linger of its own: `wait_while` decides; the run's cap still bounds one pass
        self.cfg = replace(cfg, linger_s=0.0)
        self.wait_s = wait_s
        self.clock = clock
        self.result = IngestResult(queue=HUB_LLM_RESULTS)
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._ids: set[str] = set()
        self._deadline = 0.0
        self._running = False
        self._threads: list[threading.Thread] = []

    @property
    def waiting(self) -> bool:
        """The thread is still waiting for (or taking) replies."""
        with self._lock:
            return self._running

    def stop(self) -> None:
        """End the wait now (the thread stops at its next empty poll, within about a second)."""
        with self._lock:
            self._deadline = 0.0

    @property
    def expected(self) -> int:
        with self._lock:
            return len(self._ids)

    def expect(self, request_ids: Iterable[str]) -> None:
        ids = [i for i in request_ids if i]
        if not ids or self.wait_s <= 0:
            return
        with self._lock:
            self._ids.update(ids)
            self._deadline = self.clock() + self.wait_s
            if self._running:
                return  # the thread asks `_awaiting` before it stops: it sees these ids
            self._running = True
            thread = threading.Thread(target=self._run, name="queue_assets-reply-waiter", daemon=True)
            self._threads.append(thread)
        thread.start()

    def _awaiting(self, conn: psycopg.Connection) -> bool:
        with self._lock:
            ids = list(self._ids)
            if self.clock() < self._deadline:
                row = conn.execute(IN_FLIGHT_SQL, (ids,)).fetchone()
                conn.commit()
                if row is not None and row[0]:
                    return True
            # decided under the lock: an `expect` after this starts a new thread
            self._running = False
            return False

    def _run(self) -> None:
        try:
            with db.connection(self.url) as conn:
                got = ingest_queue(conn, HUB_LLM_RESULTS, self.cfg, wait_while=lambda: self._awaiting(conn))
            with self._lock:
                self.result.add(got)
        except Exception as exc:  # the replies stay on the queue for its own run: report, don't fail
            with self._lock:
                self.errors.append(redact(f"{type(exc).__name__}: {exc}")[:500])
        finally:
            with self._lock:
                if self._threads and self._threads[-1] is threading.current_thread():
                    self._running = False

    def close(self) -> IngestResult:
        """Wait for the thread(s) to finish (each ends when its requests are answered or the wait is
        over) and return what they ingested."""
        while True:
            with self._lock:
                alive = [t for t in self._threads if t.is_alive()]
            if not alive:
                return self.result
            for t in alive:
                t.join()
