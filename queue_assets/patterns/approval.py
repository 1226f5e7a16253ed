"""A person in the loop (issue 12, seed 004's HITL queues), in plain Python (no Dagster).

With `QUEUE_ASSETS_PATTERN_APPROVAL=required`, the ingest of an `llm_result` that enriched a pattern
calls `hold_for_approval` instead of broadcasting it: the enrichment moves from the catalogue row
into `hub.pattern_approvals` (so no instance can read unreviewed LLM text, by broadcast or by
query), and one `approval_request` goes on `approval_requests` with
`reply_to = "hub_approval_responses"`, in the ingest's transaction.

`parse_response` / `screen_responses` / `apply_responses` are the `hub_approval_responses` part of
the ingest (core.store_batch calls them inside its ledger transaction): a response makes the
pattern `approved` (the enrichment is published) or `rejected` (it is not), records the reviewer
and the reason, bumps the version and broadcasts it once as `pattern_learned`. A response for a
request the hub never sent, for another pattern, or for a pattern already decided goes to the DLQ
with the reason; an identical response delivered twice is a ledger duplicate (stored once).
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
from datetime import UTC, datetime
from typing import Any, cast

import psycopg
from pydantic import ValidationError

from .. import fanout
from ..contracts import ContractError
from ..contracts.approval import ApprovalTask, HubApprovalRequest, HubApprovalResponse
from ..contracts.base import PatternType
from ..contracts.enrichment import EnrichmentResult
from ..contracts.errors import from_validation_error
from ..contracts.parse import json_object
from ..db import one_row
from .enrichment import learned_message

APPROVAL_REQUESTS = "approval_requests"
RESPONSE_TYPE = "approval_response"


@functools.cache
def response_schema() -> dict[str, Any]:
    return HubApprovalResponse.model_json_schema()


def _describe(pattern_type: str, key: str, instances: int, enrichment: dict[str, Any]) -> str:
    seen = "one instance only" if instances <= 1 else f"{instances} instances"
    return (
        f"Publish this LLM-written description of the {pattern_type} {json.dumps(key)} (reported by {seen}) "
        "to every instance? Answer on reply_to with an approval_response: request_id, approved "
        "(true/false), reviewer, and optionally reason. Description: "
        + enrichment.get("description", "")[:500]
    )


def hold_for_approval(conn: psycopg.Connection, pattern_type: str, canonical_name: str) -> str:
    """Take the just-stored enrichment off the catalogue row into a pending approval and send one
    `approval_request` for it. Returns its request id. Runs in the caller's transaction."""
    row = conn.execute(
        "SELECT version, instances, enrichment, enrichment_provider, enrichment_model, enrichment_request_id"
        " FROM hub.patterns WHERE pattern_type = %s AND canonical_name = %s FOR UPDATE",
        (pattern_type, canonical_name),
    ).fetchone()
    assert row is not None, f"{pattern_type}/{canonical_name} is not in hub.patterns"
    version, instances, enrichment, provider, model, llm_request_id = row
    aliases = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM hub.pattern_aliases WHERE pattern_type = %s AND canonical_name = %s"
            " ORDER BY observations DESC, name LIMIT 20",
            (pattern_type, canonical_name),
        )
    ]
    request = HubApprovalRequest(
        request_id=f"approve-{pattern_type}-{canonical_name[:80]}-v{version}-{secrets.token_hex(4)}",
        timestamp=datetime.now(UTC),
        description=_describe(pattern_type, canonical_name, instances, enrichment),
        task=ApprovalTask(
            pattern_type=cast(PatternType, pattern_type),
            name=canonical_name,
            version=version,
            instances=instances,
            aliases=aliases,
            enrichment=EnrichmentResult.model_validate(enrichment),
            provenance={"provider": provider, "model": model, "request_id": llm_request_id},
            response_schema=response_schema(),
        ),
    )
    (msg_id,) = one_row(
        conn.execute("SELECT pgmq.send(%s, %s::jsonb)", (APPROVAL_REQUESTS, request.model_dump_json())),
        "pgmq.send of an approval_request",
    )
    conn.execute(
        "INSERT INTO hub.pattern_approvals (request_id, pattern_type, canonical_name, version,"
        " enrichment_request_id, proposal, msg_id) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s)",
        (
            request.request_id,
            pattern_type,
            canonical_name,
            version,
            llm_request_id,
            json.dumps(enrichment),
            msg_id,
        ),
    )
    conn.execute(
        "UPDATE hub.patterns SET enrichment = NULL, approval = 'pending' WHERE pattern_type = %s AND canonical_name = %s",
        (pattern_type, canonical_name),
    )
    return request.request_id


# ---------------------------------------------------------------- responses (inside the ingest transaction)


def parse_response(
    raw: str, max_bytes: int
) -> tuple[HubApprovalResponse | None, str | None, ContractError | None]:
    """(response, idempotency key, error). The key is the request id and the decision itself, so
    the same response delivered twice is stored once, and a different second decision is not
    mistaken for a duplicate (it is refused as already decided)."""
    try:
        doc = json_object(raw, max_bytes, "response")
    except ContractError as exc:
        return None, None, exc
    try:
        response = HubApprovalResponse.model_validate(doc)
    except ValidationError as exc:
        err = from_validation_error(exc, tagged=False, type_name=RESPONSE_TYPE, known=(RESPONSE_TYPE,))
        return None, None, err
    decision = json.dumps([response.approved, response.reviewer, response.reason or ""])
    digest = hashlib.sha256(decision.encode()).hexdigest()[:16]
    return response, f"approval_response:{response.request_id}:{digest}", None


def screen_responses(conn: psycopg.Connection, deliveries: list) -> None:
    """Mark as errors (they go to the DLQ with the reason) the responses that name no request the
    hub sent, another pattern than their request's, or a request already decided (before this
    batch, or earlier in it by a different response). Locks the requests they name."""
    ids = sorted({d.model.request_id for d in deliveries})
    if not ids:
        return
    known = {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT request_id, pattern_type, canonical_name, status, reviewer, decided_at, reason"
            " FROM hub.pattern_approvals WHERE request_id = ANY(%s) ORDER BY request_id FOR UPDATE",
            (ids,),
        )
    }
    decided_in_batch: dict[str, str] = {}
    for d in deliveries:
        response: HubApprovalResponse = d.model
        rid = response.request_id
        error = None
        if rid not in known:
            error = ("unknown_request", f"request_id {rid[:120]!r} names no approval_request the hub sent")
        else:
            ptype, key, status, reviewer, decided_at, reason = known[rid]
            same = (status == "approved") == response.approved and (reviewer, reason) == (
                response.reviewer,
                response.reason,
            )
            if status != "pending" and same:
                pass  # the decision itself, delivered again: the ledger stores it once (a duplicate)
            elif (response.pattern_type or ptype) != ptype or (
                response.name is not None and response.name != key
            ):
                error = (
                    "unknown_request",
                    f"request_id {rid[:120]!r} is about {ptype}/{key}, but the response names "
                    f"{response.pattern_type or ptype}/{(response.name or key)[:120]}",
                )
            elif status == "rejected":
                error = (
                    "already_decided",
                    f"{ptype}/{key} was rejected by {reviewer!r} at {decided_at:%Y-%m-%d %H:%M:%SZ}; a rejected "
                    "pattern stays rejected (nothing was changed)",
                )
            elif status != "pending":
                error = (
                    "already_decided",
                    f"{ptype}/{key} was already {status} by {reviewer!r} at {decided_at:%Y-%m-%d %H:%M:%SZ} "
                    "(nothing was changed)",
                )
            elif rid in decided_in_batch and decided_in_batch[rid] != d.idempotency_key:
                error = (
                    "already_decided",
                    f"{ptype}/{key}: another response to {rid[:120]!r} earlier in this batch decided it "
                    "(nothing was changed)",
                )
            else:
                decided_in_batch[rid] = d.idempotency_key
        if error is not None:
            d.model = None
            d.error_kind, d.error = error


def apply_responses(conn: psycopg.Connection, fresh: list, *, stale_after_s: int) -> int:
    """Decide the requests of `fresh` responses (the ledger already made each response count once)
    and broadcast each decided pattern's new version once. Returns the number decided."""
    decided = []
    for d in fresh:
        response: HubApprovalResponse = d.model
        status = "approved" if response.approved else "rejected"
        row = conn.execute(
            "UPDATE hub.pattern_approvals SET status = %s, reviewer = %s, reason = %s, decided_at = clock_timestamp()"
            " WHERE request_id = %s AND status = 'pending' RETURNING pattern_type, canonical_name, proposal",
            (status, response.reviewer, response.reason, response.request_id),
        ).fetchone()
        if row is None:
            continue  # the same decision, delivered again in this batch
        ptype, key, proposal = row
        conn.execute(
            "UPDATE hub.patterns SET status = %s, approval = %s, version = version + 1,"
            " enrichment = CASE WHEN %s THEN %s::jsonb END, reviewed_by = %s, review_reason = %s,"
            " reviewed_at = clock_timestamp(), updated_at = clock_timestamp()"
            " WHERE pattern_type = %s AND canonical_name = %s",
            (
                status,
                status,
                response.approved,
                json.dumps(proposal),
                response.reviewer,
                response.reason,
                ptype,
                key,
            ),
        )
        decided.append((ptype, key))
    if decided:
        fanout.sync_inboxes(conn, stale_after_s)
        for ptype, key in decided:
            broadcast_decision(conn, ptype, key)
    return len(decided)


def broadcast_decision(conn: psycopg.Connection, pattern_type: str, canonical_name: str) -> int:
    """One `pgmq.send_topic` of the decided version: an approved pattern is never provisional; a
    rejected one carries no description (the rejected text stays in hub.pattern_approvals)."""
    message = learned_message(conn, pattern_type, canonical_name)
    reviewer, reason = one_row(
        conn.execute(
            "SELECT reviewed_by, review_reason FROM hub.patterns WHERE pattern_type = %s AND canonical_name = %s",
            (pattern_type, canonical_name),
        ),
        f"the review of {pattern_type} {canonical_name!r}",
    )
    message["reviewed_by"] = reviewer
    if reason:
        message["review_reason"] = reason[:4096]
    if message["status"] == "rejected":
        message["provisional"] = False  # nothing to confirm: there is no content
    conn.execute(
        "UPDATE hub.patterns SET broadcast_provisional = %s WHERE pattern_type = %s AND canonical_name = %s",
        (message["provisional"], pattern_type, canonical_name),
    )
    return fanout.publish(conn, message, sync=False)


__all__ = [
    "APPROVAL_REQUESTS",
    "apply_responses",
    "broadcast_decision",
    "hold_for_approval",
    "parse_response",
    "screen_responses",
]
