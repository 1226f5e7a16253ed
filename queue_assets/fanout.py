"""Fan-out from the hub to every instance: inbox queues bound to the hub's pgmq topics.

pgmq is point-to-point (a message read by one consumer is gone for the others), so one queue
cannot reach the whole fleet. Every instance known in `hub.instances` gets its own inbox queue
(`inbox_<instance>`), bound to the hub's topic pattern (`hub.#`) with `pgmq.bind_topic`; the hub
then publishes each message once with `pgmq.send_topic`, and pgmq puts one copy in every bound
inbox, in the same transaction.

An instance whose last heartbeat is older than `stale_after_s` (or that never sent one) is
stale: its inbox queue stays (with whatever it holds), but it is unbound, so it stops receiving.
When a new heartbeat arrives the next `sync_inboxes` binds it again. The state of each inbox is
kept in `hub.instance_inboxes` for people to see.

Only pgmq's own SQL functions are used (`pgmq.create`, `pgmq.bind_topic`, `pgmq.unbind_topic`,
`pgmq.send_topic`, `pgmq.list_queues`, `pgmq.list_topic_bindings`); everything runs on the
caller's connection and inside its transaction, so a publication can be committed atomically with
the hub's own bookkeeping. No Dagster here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from . import contracts
from .contracts.base import HUB_SOURCE
from .contracts.hub import HUB_MODELS
from .db import one_row
from .names import InvalidNameError, inbox_queue_for, validate_queue_name
from .queues import INBOX_BINDING, TOPIC_PREFIX

# Inbox queues created per transaction (see sync_inboxes).
CREATE_BATCH = 25
# Serialises concurrent syncs (pattern distribution and the export may run at the same time).
_SYNC_LOCK_KEY = 0x5141_4642  # "QAFB"


@dataclass
class InboxSync:
    """What `sync_inboxes` found and changed. Lists hold instance ids, sorted."""

    active: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    bound: list[str] = field(default_factory=list)
    unbound: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    """instance id -> why it has no inbox (a name that is not safe as a queue name)."""


@dataclass(frozen=True)
class FanOut:
    """The result of `fan_out`: the inbox sync, and how many inboxes got a copy."""

    sync: InboxSync
    copies: int


def topic_for(message_type: str) -> str:
    """The routing key the hub publishes a message type on: `hub.<type>`."""
    if message_type not in contracts.HUB_MESSAGE_TYPES:
        raise ValueError(
            f"message type {message_type!r} is not a hub -> instance message; expected one of: "
            f"{', '.join(sorted(contracts.HUB_MESSAGE_TYPES))}"
        )
    return f"{TOPIC_PREFIX}.{message_type}"


def sync_inboxes(
    conn: psycopg.Connection,
    stale_after_s: int,
    *,
    now: datetime | None = None,
    defer_excess: bool = False,
) -> InboxSync:
    """Create every known instance's inbox queue; bind the active ones and unbind the stale ones.

    Active: a heartbeat (producer timestamp) no older than `stale_after_s` before `now` (default:
    the database's clock). Idempotent, serialised by an advisory lock.

    Creating a pgmq queue takes a dozen locks (tables, indexes, sequence), and one transaction can
    hold only `max_locks_per_transaction` (64 by default) times the connection count: on a
    connection with no open transaction, missing inboxes are therefore created in transactions of
    `CREATE_BATCH` each. Inside a caller's transaction they are created in it, at most
    `CREATE_BATCH` of them (more raises, asking for a sync outside the transaction first; with
    `defer_excess`, the first `CREATE_BATCH` are created and the others are left, in `skipped`, to the
    next sync outside a transaction: for a broadcast that must not fail the transaction it rides in).
    Binding, unbinding and the states are one transaction (a savepoint inside the caller's).
    """
    if stale_after_s <= 0:
        raise ValueError(f"stale_after_s={stale_after_s}: must be a positive number of seconds")
    result = InboxSync()
    own = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SYNC_LOCK_KEY,))
        inboxes, states = _read_instances(conn, stale_after_s, now, result)
        existing = {r[0] for r in conn.execute("SELECT queue_name FROM pgmq.list_queues()")}
        missing = [(i, q) for i, q in inboxes if q not in existing]
        if not own and len(missing) > CREATE_BATCH and defer_excess:
            for instance_id, _ in missing[CREATE_BATCH:]:
                result.skipped[instance_id] = (
                    f"inbox not created yet: more than {CREATE_BATCH} were missing in one transaction; "
                    "the next sync outside a transaction creates it"
                )
            deferred = {q for _, q in missing[CREATE_BATCH:]}
            missing = missing[:CREATE_BATCH]
            states = [st for st in states if st[1] not in deferred]
        if not own and len(missing) > CREATE_BATCH:
            raise RuntimeError(
                f"{len(missing)} instance inboxes need creating, more than the {CREATE_BATCH} that fit in one "
                "transaction: call sync_inboxes on a connection with no open transaction first"
            )
        if not own:
            _create(conn, missing, result)
    if own:
        for lo in range(0, len(missing), CREATE_BATCH):
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SYNC_LOCK_KEY,))
                _create(conn, missing[lo : lo + CREATE_BATCH], result)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SYNC_LOCK_KEY,))
        bound = {
            r[0]
            for r in conn.execute(
                "SELECT queue_name FROM pgmq.list_topic_bindings() WHERE pattern = %s", (INBOX_BINDING,)
            )
        }
        for instance_id, inbox, state, _ in states:
            if state == "active":
                result.active.append(instance_id)
                if inbox not in bound:
                    conn.execute("SELECT pgmq.bind_topic(%s, %s)", (INBOX_BINDING, inbox))
                    result.bound.append(instance_id)
            else:
                result.stale.append(instance_id)
                if inbox in bound:
                    conn.execute("SELECT pgmq.unbind_topic(%s, %s)", (INBOX_BINDING, inbox))
                    result.unbound.append(instance_id)
        if states:
            _record_states(conn, states)
    return result


def _read_instances(
    conn: psycopg.Connection, stale_after_s: int, now: datetime | None, result: InboxSync
) -> tuple[list[tuple[str, str]], list[tuple]]:
    rows = conn.execute(
        "SELECT instance_id, inbox_queue, last_heartbeat,"
        " coalesce(last_heartbeat >= coalesce(%s::timestamptz, now()) - make_interval(secs => %s), false)"
        " FROM hub.instances ORDER BY instance_id",
        (now, stale_after_s),
    ).fetchall()
    inboxes, states = [], []
    for instance_id, stored_inbox, last_heartbeat, fresh in rows:
        try:
            inbox = _inbox_of(instance_id, stored_inbox)
        except InvalidNameError as exc:
            result.skipped[instance_id] = str(exc)
            continue
        inboxes.append((instance_id, inbox))
        states.append((instance_id, inbox, "active" if fresh else "stale", last_heartbeat))
    return inboxes, states


def _create(conn: psycopg.Connection, missing: list[tuple[str, str]], result: InboxSync) -> None:
    existing = {r[0] for r in conn.execute("SELECT queue_name FROM pgmq.list_queues()")}
    for instance_id, inbox in missing:
        if inbox not in existing:  # another sync may have created it meanwhile
            conn.execute("SELECT pgmq.create(%s)", (inbox,))
            result.created.append(instance_id)


def _inbox_of(instance_id: str, stored_inbox: str) -> str:
    """The inbox queue name, recomputed from the id: a row edited by hand must not name a queue
    the hub would then create or write to."""
    inbox = inbox_queue_for(instance_id)
    if stored_inbox != inbox:
        raise InvalidNameError(
            f"hub.instances names inbox {stored_inbox[:60]!r} for instance {instance_id!r}, "
            f"but its inbox is {inbox!r}; fix the row"
        )
    return validate_queue_name(inbox)


def _record_states(conn: psycopg.Connection, states: list[tuple]) -> None:
    ids, inboxes, kinds, heartbeats = (list(col) for col in zip(*states, strict=True))
    conn.execute(
        "INSERT INTO hub.instance_inboxes AS b"
        " (instance_id, inbox_queue, state, state_since, last_heartbeat, synced_at)"
        " SELECT i, q, s, now(), h, now()"
        " FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[]) AS u(i, q, s, h)"
        " ON CONFLICT (instance_id) DO UPDATE SET"
        "  inbox_queue = excluded.inbox_queue,"
        "  state_since = CASE WHEN b.state = excluded.state THEN b.state_since ELSE now() END,"
        "  state = excluded.state,"
        "  last_heartbeat = excluded.last_heartbeat,"
        "  synced_at = now()",
        (ids, inboxes, kinds, heartbeats),
    )


def validate_hub_message(message: dict[str, Any]) -> contracts.HubToInstanceMessage:
    """Check a hub -> instance message against its contract; `ContractError` names what is wrong."""
    try:
        raw = json.dumps(message, allow_nan=False, default=str)
    except ValueError as exc:
        raise contracts.ContractError("non_finite", f"message cannot be published: {exc}") from None
    parsed = contracts.parse_message(raw)
    if not isinstance(parsed, HUB_MODELS):  # the models of HUB_MESSAGE_TYPES
        raise contracts.ContractError(
            "wrong_queue",
            f"a {parsed.type!r} message is not a hub -> instance message and is not published to inboxes",
        )
    return parsed


def hub_message(message_type: str, **fields: Any) -> dict[str, Any]:
    """A hub -> instance message with `type`, `timestamp` (now, UTC) and `source` filled in."""
    return {
        "type": message_type,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "source": HUB_SOURCE,
        **fields,
    }


def publish(
    conn: psycopg.Connection,
    message: dict[str, Any],
    routing_key: str | None = None,
    *,
    stale_after_s: int | None = None,
    sync: bool = True,
) -> int:
    """Validate `message` and send it once with `pgmq.send_topic`; returns the number of inboxes
    that got a copy.

    First the inboxes are synced (`sync_inboxes`, with `stale_after_s`: the caller's
    `QUEUE_ASSETS_STALE_AFTER_S` setting), so exactly the instances active at this moment receive
    it, whoever publishes. `routing_key` defaults to `hub.<type>` and must start with `hub.`. The
    copies are written in the caller's transaction: they become visible when it commits (at once
    on an autocommit connection).
    """
    if sync and stale_after_s is None:
        raise ValueError("publish(sync=True) needs stale_after_s (the QUEUE_ASSETS_STALE_AFTER_S setting)")
    parsed = validate_hub_message(message)
    key = routing_key or topic_for(parsed.type)
    if not key.startswith(TOPIC_PREFIX + "."):
        raise ValueError(
            f"routing key {key[:80]!r} is not a hub topic: it must start with {TOPIC_PREFIX + '.'!r} so "
            f"the inboxes (bound to {INBOX_BINDING!r}) receive it"
        )
    # The validated form (UTC timestamps, normalised names), without defaults nobody set.
    body = json.dumps(parsed.model_dump(mode="json", exclude_unset=True), allow_nan=False)
    if len(body.encode()) > contracts.MAX_BYTES:
        raise contracts.ContractError(
            "too_large",
            f"{parsed.type} message is {len(body.encode())} bytes, over the limit of "
            f"{contracts.MAX_BYTES} bytes that instances accept",
            message_type=parsed.type,
        )
    if sync and stale_after_s is not None:
        sync_inboxes(conn, stale_after_s)
    (copies,) = one_row(conn.execute("SELECT pgmq.send_topic(%s, %s::jsonb)", (key, body)), "pgmq.send_topic")
    return copies


def fan_out(
    conn: psycopg.Connection, message: dict[str, Any], stale_after_s: int, routing_key: str | None = None
) -> FanOut:
    """`sync_inboxes` then `publish`, in the caller's transaction; returns both results."""
    validate_hub_message(message)  # a bad message changes nothing, not even the inboxes
    sync = sync_inboxes(conn, stale_after_s)
    return FanOut(sync=sync, copies=publish(conn, message, routing_key, sync=False))
