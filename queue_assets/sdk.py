"""The producer SDK: what an instance calls to talk to the hub and to the request/reply queues.

Every message is validated against its contract before it is sent, so a producer learns about a bad
message at once (a `ContractError` naming the field and value) instead of finding it in the hub's
dead-letter queue later. Sends go through the official pgmq client's connection pool; a publish
sends the JSON text it validated to pgmq's own `pgmq.send` (encoding the dict again for the
client's `send` cost as much as the validation).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg

from . import contracts
from .backoff import send_with_backoff
from .db import close_pgmq, make_pgmq
from .names import inbox_queue_for, validate_instance_id
from .patterns import canonical
from .patterns.models import PatternInfo, PatternList, UnknownPattern, parse_query_result
from .queues import INSTANCE_HEARTBEAT, LEARNED_PATTERNS, PATTERN_MESSAGES, REPLY_QUEUE_FOR

if TYPE_CHECKING:  # the pgmq package imports SQLAlchemy: loaded when a client is made (`make_pgmq`)
    import pgmq


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


# Built once: `json.dumps` with these options builds an encoder per call. The same options, so the
# same text (ASCII-escaped, `default=str`, NaN/Infinity refused). Not orjson: it writes NaN as
# `null`, and would change which texts reach the size limit (non-ASCII unescaped).
_ENCODE = json.JSONEncoder(allow_nan=False, default=str).encode


def _dumps(message: Mapping[str, Any]) -> str:
    try:
        return _ENCODE(message)
    except ValueError as exc:  # NaN / Infinity
        raise contracts.ContractError("non_finite", f"message cannot be sent: {exc}") from None


def _headers(idempotency_key: str | None) -> dict | None:
    return {"idempotency_key": idempotency_key} if idempotency_key else None


class HubClient:
    """An instance's connection to the hub: publish what it learned, read its inbox."""

    def __init__(self, db_url: str, instance_id: str, *, client: pgmq.PGMQueue | None = None):
        self.instance_id = validate_instance_id(instance_id)
        self._own = client is None
        self.q = client or make_pgmq(db_url)

    def close(self) -> None:
        if self._own:
            close_pgmq(self.q)

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, queue: str, message: dict, idempotency_key: str | None) -> int:
        message.setdefault("instance_id", self.instance_id)
        if "timestamp" not in message:  # not `setdefault`: the clock is read only when it is needed
            message["timestamp"] = _now()
        text = _dumps(message)
        contracts.parse_ingest_as(queue, message["type"], text)  # raises ContractError on a bad message
        # The validated text is what is sent: not the dict, encoded again.
        return send_with_backoff(
            self.q, queue, text, _headers(idempotency_key), idempotent=idempotency_key is not None
        )

    def publish_patterns(
        self,
        patterns: Sequence[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
        timestamp: str | None = None,
    ) -> int:
        msg = {
            "type": "pattern_detection",
            "source": self.instance_id,
            "patterns": [dict(p) for p in patterns],
        }
        if timestamp:
            msg["timestamp"] = timestamp
        return self._send(PATTERN_MESSAGES, msg, idempotency_key)

    def publish_code_analysis(
        self, analysis: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> int:
        return self._send(
            PATTERN_MESSAGES, {"type": "code_analysis", "analysis": dict(analysis)}, idempotency_key
        )

    def publish_learned_patterns(
        self,
        artifacts: Sequence[Mapping[str, Any]],
        *,
        usage_count: int,
        success_rate: float,
        idempotency_key: str | None = None,
    ) -> int:
        msg = {
            "type": "learned_patterns",
            "source": self.instance_id,
            "usage_count": usage_count,
            "success_rate": success_rate,
            "artifacts": [dict(a) for a in artifacts],
        }
        return self._send(LEARNED_PATTERNS, msg, idempotency_key)

    def heartbeat(
        self, *, version: str | None = None, status: str = "ok", idempotency_key: str | None = None
    ) -> int:
        msg = {"type": "heartbeat", "status": status}
        if version:
            msg["version"] = version
        return self._send(INSTANCE_HEARTBEAT, msg, idempotency_key)

    # --- the pattern authority: ask the hub (SQL functions in schema hub_api, docs/patterns.md) ---

    def _api(self, statement: str, params: tuple) -> dict:
        pool = self.q.pool
        assert pool is not None  # the client always runs on a pool (make_pgmq)
        with pool.connection() as conn:
            conn.autocommit = True  # one round trip: the function is the whole transaction
            try:
                row = conn.execute(statement, params).fetchone()
                assert row is not None  # a function call returns one row
                return row[0]
            except psycopg.errors.InvalidParameterValue as exc:
                raise canonical.PatternInputError(exc.diag.message_primary or str(exc)) from None
            finally:
                conn.autocommit = False

    def query_pattern(self, pattern_type: str, name: str) -> PatternInfo | UnknownPattern:
        """The hub's entry for `name` (any name it was sent under), or `UnknownPattern` with the id of
        the discovery request the miss recorded. Bad input raises `PatternInputError` before any query."""
        canonical.check_pattern_type(pattern_type)
        canonical.check_name(name)
        return parse_query_result(self._api("SELECT hub_api.query_pattern(%s, %s)", (pattern_type, name)))

    def query_patterns(
        self,
        pattern_type: str | None = None,
        *,
        language: str | None = None,
        min_instances: int | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> PatternList:
        """The catalogue by rank, filtered (None matches everything); at most `limit` (1..1000)."""
        if pattern_type is not None:
            canonical.check_pattern_type(pattern_type)
        doc = self._api(
            "SELECT hub_api.query_patterns(%s, %s, %s, %s, %s)",
            (pattern_type, language, min_instances, status, limit),
        )
        return PatternList.model_validate(doc)

    # --- the inbox: what the hub fans out to this instance (pgmq topics, see queue_assets.fanout) ---

    @property
    def inbox(self) -> str:
        """This instance's inbox queue, `inbox_<instance id>`."""
        return inbox_queue_for(self.instance_id)

    def read_inbox(self, limit: int = 10, vt: int = 30) -> list[InboxMessage]:
        """Up to `limit` messages from the hub, hidden from other readers for `vt` seconds.

        Archive (or delete) each message once handled; otherwise it is read again after `vt`.
        Empty until the hub has created the inbox (its next publication after this instance's first
        heartbeat) and while the instance is stale (no heartbeat for QUEUE_ASSETS_STALE_AFTER_S).
        """
        if not 1 <= limit <= 10_000:
            raise ValueError(f"limit={limit}: must be between 1 and 10000")
        if not 0 <= vt <= 86_400:
            raise ValueError(f"vt={vt}: must be between 0 and 86400 seconds")
        try:
            msgs = self.q.read_batch(self.inbox, vt=vt, batch_size=limit)
        except psycopg.errors.UndefinedTable:
            return []  # the hub has not created this inbox yet
        return [InboxMessage(m.msg_id, m.read_ct, m.enqueued_at, m.message) for m in msgs]

    def archive_inbox(self, msg_id: int) -> bool:
        """Move a handled inbox message to the inbox's archive; False if it was not there."""
        return self.q.archive(self.inbox, msg_id)

    def delete_inbox(self, msg_id: int) -> bool:
        """Delete a handled inbox message; False if it was not there."""
        return self.q.delete(self.inbox, msg_id)


@dataclass(frozen=True)
class InboxMessage:
    """One message from the hub: `message["type"]` is `aggregated_patterns`, `templates_updated` or
    `learning_exported` (contracts in `queue_assets.contracts.hub`)."""

    msg_id: int
    read_ct: int
    enqueued_at: datetime
    message: dict[str, Any]

    @property
    def type(self) -> str | None:
        return self.message.get("type") if isinstance(self.message, dict) else None


@dataclass(frozen=True)
class Reply:
    msg_id: int
    read_ct: int
    enqueued_at: datetime
    message: Any


class RequestReplyClient:
    """Seed 002's request/reply queues: publish a request, then read, archive and delete replies."""

    KINDS = {q.removesuffix("_requests"): q for q in REPLY_QUEUE_FOR}

    def __init__(self, db_url: str, *, client: pgmq.PGMQueue | None = None):
        self._own = client is None
        self.q = client or make_pgmq(db_url)

    def close(self) -> None:
        if self._own:
            close_pgmq(self.q)

    def _request_queue(self, kind: str) -> str:
        if kind not in self.KINDS:
            raise ValueError(
                f"unknown request kind {kind!r}; expected one of: {', '.join(sorted(self.KINDS))}"
            )
        return self.KINDS[kind]

    def publish_request(
        self, kind: str, payload: Mapping[str, Any], *, request_id: str | None = None
    ) -> tuple[int, str]:
        """Send a request; returns (msg_id, request_id). The reply carries the same request_id."""
        queue = self._request_queue(kind)
        message = dict(payload)
        if "request_id" not in message:
            message["request_id"] = request_id or str(uuid.uuid4())
        if "timestamp" not in message:
            message["timestamp"] = _now()
        contracts.parse_for_queue(queue, _dumps(message))
        return send_with_backoff(self.q, queue, message, None, idempotent=False), message["request_id"]

    def publish_reply(self, kind: str, payload: Mapping[str, Any]) -> int:
        """For the service side: send a reply (must carry the request's `request_id`)."""
        queue = REPLY_QUEUE_FOR[self._request_queue(kind)]
        message = dict(payload)
        if "timestamp" not in message:
            message["timestamp"] = _now()
        contracts.parse_for_queue(queue, _dumps(message))
        return send_with_backoff(self.q, queue, message, None, idempotent=False)

    def read_replies(self, kind: str, *, limit: int = 10, vt: int = 30) -> list[Reply]:
        queue = REPLY_QUEUE_FOR[self._request_queue(kind)]
        msgs = self.q.read(queue, vt=vt, qty=limit)
        # The pgmq client returns a single Message (or None) when qty == 1, a list otherwise.
        msgs = [] if msgs is None else msgs if isinstance(msgs, list) else [msgs]
        return [Reply(m.msg_id, m.read_ct, m.enqueued_at, m.message) for m in msgs]

    def archive_reply(self, kind: str, msg_id: int) -> bool:
        return self.q.archive(REPLY_QUEUE_FOR[self._request_queue(kind)], msg_id)

    def delete_reply(self, kind: str, msg_id: int) -> bool:
        return self.q.delete(REPLY_QUEUE_FOR[self._request_queue(kind)], msg_id)
