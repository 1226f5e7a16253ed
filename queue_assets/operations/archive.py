"""Archive analytics: typed readers over any queue's messages, and request/reply pairing.

The Python counterpart of seed 002's "type-safe querying of archived messages". Plain Python
(psycopg + pandas, no Dagster):

- `read_messages` / `read_archive` load a queue's archived (and optionally live) messages,
  filtered by time, message type and instance, into a DataFrame whose columns and dtypes are
  always `MESSAGE_COLUMNS`, even when nothing matched;
- `to_models` turns such rows into the pydantic contract models (`queue_assets.contracts`);
- `pair_requests` joins requests to replies by correlation id (`request_id`, alias
  `correlation_id`), live or archived, into `PAIR_COLUMNS`; `unanswered` keeps the requests that
  got no reply within a timeout; `find_unanswered` does both for one request queue.

Time filters apply to `enqueued_at` (when the producer sent the message). On the archive the
same bound is also applied to `archived_at` (a message is archived after it is enqueued), which
lets PostgreSQL use pgmq's `archived_at` index instead of scanning the whole archive.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql
from pydantic import BaseModel

from ..contracts import QUEUE_MODELS, ContractError, parse_for_queue, parse_message
from ..db import one_row
from ..names import validate_queue_name
from ..queues import REPLY_QUEUE_FOR

if TYPE_CHECKING:  # pandas (about 1.5 s to import) is loaded by the readers that build a frame
    import pandas as pd

MESSAGE_COLUMNS: dict[str, str] = {
    "queue": "string",
    "msg_id": "int64",
    "live": "bool",  # True: still in the queue; False: in the archive
    "read_ct": "int64",
    "enqueued_at": "datetime64[us, UTC]",
    "archived_at": "datetime64[us, UTC]",  # NaT for live messages
    "message_type": "string",  # `type`, or the queue's contract type when the message has none
    "instance_id": "string",  # instance_id, else source, else agent_id
    "request_id": "string",  # request_id, else correlation_id
    "message": "object",  # the JSON body as a dict
    "headers": "object",  # pgmq headers as a dict, or None
}

PAIR_COLUMNS: dict[str, str] = {
    "request_queue": "string",
    "reply_queue": "string",
    "request_id": "string",
    "request_msg_id": "int64",
    "requested_at": "datetime64[us, UTC]",
    "request_live": "bool",
    "instance_id": "string",
    "reply_msg_id": "Int64",  # <NA> when unanswered
    "replied_at": "datetime64[us, UTC]",  # NaT when unanswered
    "reply_live": "boolean",
    "latency_s": "float64",  # NaN when unanswered
    "answered": "bool",
}


class ArchiveQueryError(ValueError):
    """A reader was asked for something it cannot read; the message names the value and why."""


def empty_frame(columns: dict[str, str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in columns.items()})


def _typed(rows: list[tuple], columns: dict[str, str]) -> pd.DataFrame:
    import pandas as pd

    if not rows:
        return empty_frame(columns)
    df = pd.DataFrame.from_records(rows, columns=list(columns))
    for name, dtype in columns.items():
        if dtype.startswith("datetime64"):
            df[name] = pd.to_datetime(df[name], utc=True).astype(dtype)
        elif dtype != "object":
            df[name] = df[name].astype(dtype)
    return df


def _aware(name: str, value: datetime | None) -> datetime | None:
    if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
        raise ArchiveQueryError(
            f"{name} = {value!r}: expected a timezone-aware datetime (e.g. with tzinfo=UTC)"
        )
    return value


def _existing(conn: psycopg.Connection, queue: str) -> str:
    validate_queue_name(queue)
    if conn.execute("SELECT 1 FROM pgmq.meta WHERE queue_name = %s", (queue,)).fetchone() is None:
        raise ArchiveQueryError(f"queue {queue!r} does not exist (not in pgmq.meta)")
    return queue


def default_type(queue: str) -> str | None:
    """The contract type of messages on `queue` that carry no `type` (request/reply queues)."""
    model = QUEUE_MODELS.get(queue)
    return getattr(model, "TYPE", None) if model else None


def read_messages(
    conn: psycopg.Connection,
    queue: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    message_type: str | None = None,
    instance: str | None = None,
    include_live: bool = True,
    include_archived: bool = True,
    limit: int | None = None,
) -> pd.DataFrame:
    """Messages of `queue` enqueued in [since, until), oldest first, as a `MESSAGE_COLUMNS` frame."""
    _aware("since", since)
    _aware("until", until)
    if limit is not None and limit < 0:
        raise ArchiveQueryError(f"limit = {limit}: must not be negative")
    _existing(conn, queue)
    params = {
        "queue": queue,
        "since": since,
        "until": until,
        "type": message_type,
        "instance": instance,
        "default_type": default_type(queue),
        "limit": limit,
    }
    where = sql.SQL(
        " WHERE (%(since)s::timestamptz IS NULL OR enqueued_at >= %(since)s)"
        " AND (%(until)s::timestamptz IS NULL OR enqueued_at < %(until)s)"
        " AND (%(type)s::text IS NULL OR coalesce(message->>'type', %(default_type)s::text) = %(type)s)"
        " AND (%(instance)s::text IS NULL OR coalesce(message->>'instance_id', message->>'source',"
        " message->>'agent_id') = %(instance)s)"
    )
    head = sql.SQL(
        "SELECT %(queue)s::text, msg_id, {live}, read_ct, enqueued_at, {archived_at},"
        " coalesce(message->>'type', %(default_type)s::text),"
        " coalesce(message->>'instance_id', message->>'source', message->>'agent_id'),"
        " coalesce(message->>'request_id', message->>'correlation_id'), message, headers FROM {table}"
    )
    parts = []
    if include_archived:
        parts.append(
            head.format(
                live=sql.SQL("false"),
                archived_at=sql.SQL("archived_at"),
                table=sql.Identifier("pgmq", "a_" + queue),
            )
            + where
            + sql.SQL(" AND (%(since)s::timestamptz IS NULL OR archived_at >= %(since)s)")
        )
    if include_live:
        parts.append(
            head.format(
                live=sql.SQL("true"),
                archived_at=sql.SQL("NULL::timestamptz"),
                table=sql.Identifier("pgmq", "q_" + queue),
            )
            + where
        )
    if not parts:
        return empty_frame(MESSAGE_COLUMNS)
    stmt = sql.SQL(" UNION ALL ").join(sql.SQL("({})").format(p) for p in parts) + sql.SQL(
        " ORDER BY 5, 2 LIMIT %(limit)s"
    )
    rows = conn.execute(stmt, params).fetchall()
    return _typed(rows, MESSAGE_COLUMNS)


def read_archive(conn: psycopg.Connection, queue: str, **filters) -> pd.DataFrame:
    """Archived messages only (`read_messages` with `include_live=False`)."""
    return read_messages(conn, queue, include_live=False, **filters)


def to_models(frame: pd.DataFrame) -> list[tuple[int, BaseModel | ContractError]]:
    """(msg_id, contract model or ContractError) for each row, parsed by the row's queue."""
    out: list[tuple[int, BaseModel | ContractError]] = []
    for queue, msg_id, message in zip(frame["queue"], frame["msg_id"], frame["message"], strict=True):
        raw = json.dumps(message)
        model: BaseModel | ContractError
        try:
            try:
                model = parse_for_queue(str(queue), raw)
            except ValueError as exc:
                if isinstance(exc, ContractError):
                    raise
                model = parse_message(raw)  # a queue without its own contract (e.g. a DLQ)
        except ContractError as exc:
            model = exc
        out.append((int(msg_id), model))
    return out


def pair_requests(
    requests: pd.DataFrame, replies: pd.DataFrame, *, request_queue: str = "", reply_queue: str = ""
) -> pd.DataFrame:
    """One row per request that carries a request_id, with its first reply (if any), as `PAIR_COLUMNS`.

    Requests without a request_id cannot be matched and are left out. When several replies name
    the same request, the earliest counts.
    """
    import pandas as pd

    req = requests[requests["request_id"].notna()]
    if req.empty:
        return empty_frame(PAIR_COLUMNS)
    rep = replies[replies["request_id"].notna()].sort_values(["enqueued_at", "msg_id"])
    rep = rep.drop_duplicates("request_id", keep="first")
    merged = req.merge(
        rep[["request_id", "msg_id", "enqueued_at", "live"]].rename(
            columns={"msg_id": "reply_msg_id", "enqueued_at": "replied_at", "live": "reply_live"}
        ),
        on="request_id",
        how="left",
    )
    out = pd.DataFrame(
        {
            "request_queue": request_queue or merged["queue"],
            "reply_queue": reply_queue or (replies["queue"].iloc[0] if len(replies) else ""),
            "request_id": merged["request_id"],
            "request_msg_id": merged["msg_id"],
            "requested_at": merged["enqueued_at"],
            "request_live": merged["live"],
            "instance_id": merged["instance_id"],
            "reply_msg_id": merged["reply_msg_id"],
            "replied_at": merged["replied_at"],
            "reply_live": merged["reply_live"],
            "latency_s": (merged["replied_at"] - merged["enqueued_at"]).dt.total_seconds(),
            "answered": merged["reply_msg_id"].notna(),
        }
    )
    return _retype(out, PAIR_COLUMNS).sort_values(["requested_at", "request_msg_id"]).reset_index(drop=True)


def _retype(frame: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    import pandas as pd

    for name, dtype in columns.items():
        if dtype.startswith("datetime64"):
            frame[name] = pd.to_datetime(frame[name], utc=True).astype(dtype)
        elif dtype != "object":
            frame[name] = frame[name].astype(dtype)
    return frame[list(columns)]


def unanswered(pairs: pd.DataFrame, *, timeout: timedelta, as_of: datetime) -> pd.DataFrame:
    """Requests with no reply by `as_of` that were sent at least `timeout` before it."""
    import pandas as pd

    _aware("as_of", as_of)
    cutoff = pd.Timestamp(as_of - timeout)
    return pairs[(~pairs["answered"]) & (pairs["requested_at"] <= cutoff)].reset_index(drop=True)


def load_request_pairs(
    conn: psycopg.Connection, request_queue: str, *, since: datetime, until: datetime | None = None
) -> pd.DataFrame:
    """Requests of `request_queue` enqueued in [since, until), paired with replies from its reply queue."""
    if request_queue not in REPLY_QUEUE_FOR:
        raise ArchiveQueryError(
            f"queue {request_queue!r} is not a request queue; expected one of: {', '.join(REPLY_QUEUE_FOR)}"
        )
    reply_queue = REPLY_QUEUE_FOR[request_queue]
    requests = read_messages(conn, request_queue, since=since, until=until)
    # A reply is enqueued after its request, so replies before `since` cannot belong to these requests.
    replies = read_messages(conn, reply_queue, since=since)
    return pair_requests(requests, replies, request_queue=request_queue, reply_queue=reply_queue)


def find_unanswered(
    conn: psycopg.Connection,
    request_queue: str,
    *,
    timeout: timedelta,
    lookback: timedelta = timedelta(days=7),
    as_of: datetime | None = None,
) -> pd.DataFrame:
    """Requests sent in the `lookback` before `as_of`, older than `timeout`, that have no reply."""
    if as_of is None:
        (as_of,) = one_row(conn.execute("SELECT now()"), "the clock")
    pairs = load_request_pairs(conn, request_queue, since=as_of - lookback)
    return unanswered(pairs, timeout=timeout, as_of=as_of)


UNANSWERED_COLUMNS: dict[str, str] = {
    "request_queue": "string",
    "request_id": "string",
    "request_msg_id": "int64",
    "requested_at": "datetime64[us, UTC]",
    "request_live": "bool",
    "instance_id": "string",
}

_UNANSWERED_SQL = sql.SQL(
    "WITH req AS ("
    " SELECT msg_id, enqueued_at, false AS live, message FROM {req_archive}"
    "  WHERE enqueued_at >= %(since)s AND archived_at >= %(since)s AND enqueued_at <= %(cutoff)s"
    " UNION ALL SELECT msg_id, enqueued_at, true, message FROM {req_live}"
    "  WHERE enqueued_at >= %(since)s AND enqueued_at <= %(cutoff)s),"
    " rep AS ("
    " SELECT coalesce(message->>'request_id', message->>'correlation_id') AS rid FROM {rep_archive}"
    "  WHERE archived_at >= %(since)s AND enqueued_at >= %(since)s"
    " UNION ALL SELECT coalesce(message->>'request_id', message->>'correlation_id') FROM {rep_live}"
    "  WHERE enqueued_at >= %(since)s),"
    " missing AS ("
    " SELECT msg_id, enqueued_at, live, coalesce(message->>'request_id', message->>'correlation_id') AS rid,"
    "  coalesce(message->>'instance_id', message->>'source', message->>'agent_id') AS instance"
    "  FROM req WHERE coalesce(message->>'request_id', message->>'correlation_id') IS NOT NULL"
    "  AND NOT EXISTS (SELECT 1 FROM rep WHERE rep.rid = coalesce(req.message->>'request_id',"
    "   req.message->>'correlation_id')))"
    " SELECT count(*) OVER (), %(queue)s::text, rid, msg_id, enqueued_at, live, instance FROM missing"
    " ORDER BY enqueued_at, msg_id LIMIT %(sample)s"
)


def unanswered_rows(
    conn: psycopg.Connection,
    request_queue: str,
    *,
    timeout: timedelta,
    lookback: timedelta = timedelta(days=7),
    as_of: datetime,
    sample: int = 10,
) -> tuple[int, list[tuple]]:
    """`count_unanswered` without pandas (the statistics asset's check, every statistics run): the
    number of unanswered requests and the `sample` oldest as tuples in `UNANSWERED_COLUMNS` order."""
    _aware("as_of", as_of)
    if request_queue not in REPLY_QUEUE_FOR:
        raise ArchiveQueryError(
            f"queue {request_queue!r} is not a request queue; expected one of: {', '.join(REPLY_QUEUE_FOR)}"
        )
    reply_queue = REPLY_QUEUE_FOR[request_queue]
    _existing(conn, request_queue)
    _existing(conn, reply_queue)
    stmt = _UNANSWERED_SQL.format(
        req_archive=sql.Identifier("pgmq", "a_" + request_queue),
        req_live=sql.Identifier("pgmq", "q_" + request_queue),
        rep_archive=sql.Identifier("pgmq", "a_" + reply_queue),
        rep_live=sql.Identifier("pgmq", "q_" + reply_queue),
    )
    rows = conn.execute(
        stmt,
        {
            "since": as_of - lookback,
            "cutoff": as_of - timeout,
            "queue": request_queue,
            "sample": max(sample, 1),
        },
    ).fetchall()
    total = rows[0][0] if rows else 0
    return total, [r[1:] for r in rows[:sample]]


def count_unanswered(
    conn: psycopg.Connection,
    request_queue: str,
    *,
    timeout: timedelta,
    lookback: timedelta = timedelta(days=7),
    as_of: datetime,
    sample: int = 10,
) -> tuple[int, pd.DataFrame]:
    """`find_unanswered` done inside PostgreSQL (an anti-join), for alerting at any volume.

    Returns the number of unanswered requests and the `sample` oldest as `UNANSWERED_COLUMNS`.
    """
    total, rows = unanswered_rows(
        conn, request_queue, timeout=timeout, lookback=lookback, as_of=as_of, sample=sample
    )
    return total, _typed(rows, UNANSWERED_COLUMNS)
