"""Bounded exponential backoff with full jitter, and the database retries built on it.

What is retried, and why only that:
- establishing a connection (`connect_with_backoff`): nothing was sent, so a retry cannot double
  anything. Failures that another attempt cannot fix (wrong password, missing database, no
  pg_hba entry) are not retried;
- a read-only probe (the ingest sensors wrap theirs in `retry_call`): running it twice is harmless;
- a pgmq send (`send_with_backoff`) only while the outcome is known: no connection could be had
  from the pool, or the pooled connection failed its BEGIN before the statement went out. Once
  the statement was sent, an error (say, the connection dropped while committing) leaves the
  outcome unknown: the message may be in the queue already. Such a send is retried only when it
  carries an idempotency key, because the hub stores one message per (queue, instance, key) and
  drops the copy; without a key the caller gets `SendOutcomeUnknown` and decides.

Full jitter (a delay drawn uniformly from [0, min(cap, base * 2**attempt)]) spreads the retries of
many clients after an outage instead of having them hit the server in waves. Every retry loop is
bounded by attempts and by a deadline, and the final error names the operation, the attempts, the
time spent and the last cause.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg

from .db import DatabaseUnavailable, InvalidDatabaseUrl, connect
from .horizons import SDK_SEND_DEADLINE_S
from .redact import redact

T = TypeVar("T")

# Connection failures another attempt cannot fix: retrying them only delays the real error.
PERMANENT_CONNECT_ERRORS = (
    "password authentication failed",
    "not permitted to log in",
    "authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
    "permission denied",
    "invalid connection option",
    "invalid dsn",
    "certificate",
)


@dataclass(frozen=True)
class Backoff:
    """How often and how long to retry: `attempts` tries in all, never past `deadline_s`."""

    attempts: int = 5
    base_s: float = 0.25
    cap_s: float = 8.0
    deadline_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"Backoff.attempts = {self.attempts}: must be at least 1")
        if self.base_s < 0 or self.cap_s < 0 or self.deadline_s < 0:
            raise ValueError(
                f"Backoff delays must not be negative (base_s={self.base_s}, cap_s={self.cap_s}, "
                f"deadline_s={self.deadline_s})"
            )

    def delay(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**retry)] for the `retry`-th retry (0-based)."""
        return rng() * min(self.cap_s, self.base_s * (2**retry))


# Runs (assets, jobs, the CLI): worth waiting a while for a database that restarts.
RUN_BACKOFF = Backoff(attempts=6, base_s=0.5, cap_s=8.0, deadline_s=30.0)
# Sensors: a tick must finish well inside Dagster's sensor timeout (60 s); the next tick retries anyway.
SENSOR_BACKOFF = Backoff(attempts=3, base_s=0.5, cap_s=2.0, deadline_s=10.0)
# Producers (the SDK): short, so a caller's own loop stays responsive.
SDK_BACKOFF = Backoff(attempts=5, base_s=0.2, cap_s=4.0, deadline_s=SDK_SEND_DEADLINE_S)


class RetryExhausted(RuntimeError):
    """Every attempt failed; the message names the operation, the attempts and the last cause."""

    def __init__(self, what: str, attempts: int, elapsed_s: float, last: BaseException):
        self.what, self.attempts, self.elapsed_s, self.last = what, attempts, elapsed_s, last
        cause = redact(str(last).strip().splitlines()[0]) if str(last).strip() else type(last).__name__
        super().__init__(
            f"{what} failed after {attempts} attempt{'s' if attempts != 1 else ''} in {elapsed_s:.1f}s; "
            f"last error: {cause}"
        )


class DatabaseRetryExhausted(RetryExhausted, DatabaseUnavailable):
    """The database stayed unreachable through every attempt (still a `DatabaseUnavailable`)."""


class SendOutcomeUnknown(RuntimeError):
    """A send failed after the statement reached the server: the message may or may not be queued."""


class _NotSent(Exception):
    """Internal: the send failed before its statement left the client, so a retry is safe."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


def retry_call(
    fn: Callable[[], T],
    *,
    what: str,
    policy: Backoff = RUN_BACKOFF,
    retry_on: tuple[type[BaseException], ...] = (DatabaseUnavailable, psycopg.OperationalError),
    give_up_on: Callable[[BaseException], bool] = lambda exc: False,
    error: type[RetryExhausted] = RetryExhausted,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
    on_retry: Callable[[int, float, BaseException], None] | None = None,
) -> T:
    """Call `fn` until it succeeds, retrying `retry_on` errors with backoff; raise `error` at the end.

    Errors outside `retry_on`, or for which `give_up_on` is true, propagate at once and unchanged.
    """
    started = time.monotonic()
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except retry_on as exc:
            if give_up_on(exc):
                raise
            elapsed = time.monotonic() - started
            delay = policy.delay(attempt - 1, rng)
            if attempt == policy.attempts or elapsed + delay > policy.deadline_s:
                raise error(what, attempt, elapsed, exc) from exc
            if on_retry:
                on_retry(attempt, delay, exc)
            sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


def is_permanent(exc: BaseException) -> bool:
    """A connection error another attempt cannot fix (credentials, missing database, configuration)."""
    text = str(exc).lower()
    return isinstance(exc, InvalidDatabaseUrl) or any(marker in text for marker in PERMANENT_CONNECT_ERRORS)


def retry_db(fn: Callable[[], T], *, what: str, policy: Backoff = RUN_BACKOFF) -> T:
    """`retry_call` for a read-only database operation (safe to repeat): retries unreachable-database
    and connection errors, not permanent ones; the final error is a `DatabaseRetryExhausted`."""
    return retry_call(
        fn,
        what=what,
        policy=policy,
        retry_on=(DatabaseUnavailable, psycopg.OperationalError),
        give_up_on=is_permanent,
        error=DatabaseRetryExhausted,
    )


def connect_with_backoff(
    url: str, *, policy: Backoff | None = RUN_BACKOFF, **kwargs: Any
) -> psycopg.Connection:
    """`db.connect`, retried with backoff while the server is unreachable (never for bad credentials).

    The final error is a `DatabaseRetryExhausted`, which is a `DatabaseUnavailable`: callers that
    handle an unreachable database keep working, and the text (password-free, like
    `DatabaseUnavailable`'s) names the attempts and the last cause.
    """
    if policy is None:
        return connect(url, **kwargs)
    return retry_call(
        lambda: connect(url, **kwargs),
        what="connecting to the shared_queue database",
        policy=policy,
        retry_on=(DatabaseUnavailable,),
        give_up_on=is_permanent,
        error=DatabaseRetryExhausted,
    )


# pgmq's own `send` function, called with a message already encoded as JSON text (what the
# official client's `send` runs, minus its re-encoding of the dict: the SDK has the text in hand,
# as validated).
_SEND_TEXT_SQL = "SELECT * FROM pgmq.send(queue_name => %s::text, msg => %s::jsonb)"
_SEND_TEXT_WITH_HEADERS_SQL = (
    "SELECT * FROM pgmq.send(queue_name => %s::text, msg => %s::jsonb, headers => %s::jsonb)"
)


def _send_text(conn: psycopg.Connection, queue: str, message: str, headers: dict | None) -> int:
    if headers is None:
        row = conn.execute(_SEND_TEXT_SQL, (queue, message)).fetchone()
    else:
        row = conn.execute(_SEND_TEXT_WITH_HEADERS_SQL, (queue, message, json.dumps(headers))).fetchone()
    assert row is not None  # pgmq.send returns the msg_id
    return row[0]


def send_with_backoff(
    client: Any,
    queue: str,
    message: dict | str,
    headers: dict | None,
    *,
    idempotent: bool,
    policy: Backoff = SDK_BACKOFF,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """`client.send(queue, message, headers)` on the official pgmq client, retried only when safe.

    `idempotent` says a duplicate is harmless (the message carries an idempotency key the hub
    de-duplicates on). `message` is a dict (sent by the client's `send`) or its JSON text, sent as
    is to `pgmq.send` on the same pooled connection and transaction. Returns the msg_id.
    """

    def attempt() -> int:
        try:
            pooled = client.pool.connection()
            conn = pooled.__enter__()
        except psycopg.OperationalError as exc:  # PoolTimeout / PoolClosed: no connection, nothing sent
            raise _NotSent(exc) from exc
        with contextlib.ExitStack() as stack:
            # On the way out: a broken connection goes back to the pool, which replaces it.
            stack.push(pooled)
            # The transaction's BEGIN is the check: the round trip a send needs anyway (the official
            # client's own `send` opens the same transaction) proves the pooled connection alive
            # before any of the message leaves. A separate check cost a round trip more per send.
            tx = conn.transaction()
            try:
                tx.__enter__()
            except psycopg.OperationalError as exc:  # a stale pooled connection: nothing sent yet
                raise _NotSent(exc) from exc
            stack.push(tx)  # on the way out: COMMIT (an error there is an unknown outcome) or ROLLBACK
            if isinstance(message, str):
                return _send_text(conn, queue, message, headers)
            return client.send(queue, message, headers=headers, conn=conn)

    def guarded() -> int:
        try:
            return attempt()
        except _NotSent:
            raise
        except psycopg.OperationalError as exc:
            if idempotent:
                raise  # retried: the hub stores a keyed message once
            raise SendOutcomeUnknown(
                f"send to queue {queue!r} failed after the statement reached the database "
                f"({redact(str(exc).strip().splitlines()[0]) if str(exc).strip() else type(exc).__name__}); the message "
                "may or may not be queued. Not retried, as that could queue it twice: pass an idempotency_key "
                "so the hub de-duplicates, and retries become safe."
            ) from exc

    try:
        return retry_call(
            guarded,
            what=f"send to queue {queue!r}",
            policy=policy,
            retry_on=(_NotSent, psycopg.OperationalError),
            error=DatabaseRetryExhausted,
            sleep=sleep,
        )
    except DatabaseRetryExhausted as exc:
        last = exc.last.cause if isinstance(exc.last, _NotSent) else exc.last
        raise DatabaseRetryExhausted(exc.what, exc.attempts, exc.elapsed_s, last) from last
