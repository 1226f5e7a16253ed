"""The demo's simulated services (seed 004): an LLM router and a HITL bridge, as plain pgmq consumers
of the official client that honour `reply_to` (used by `queue-assets dev` and the tests).

Both read only the hub's requests (`agent_id = "centralcloud"`, a conditional `pgmq.read`): the
simulated instances' own llm traffic stays theirs. Each request is answered on its `reply_to`
(else on the seed's reply queue) and then archived. Every choice comes from one seeded
`random.Random`, so a seed gives the same sequence of outcomes.

The router, per request (rates in `RouterRates`, documented in docs/patterns.md, "The demo"):
- a name it does not know (not one of the simulated instances' names, e.g. the `unheard-of-*` names
  they ask about) gets an error reply ("no knowledge of ..."): that key ends `enrichment_failed`;
- otherwise: no reply (`silent`), garbage (`garbage`: text that is not JSON, a field the schema
  refuses, or an oversized description), a valid reply delayed past the hub's timeout (`late`,
  sent with pgmq's `delay`), or a valid JSON enrichment (the rest).
The bridge approves each request, or rejects it with a reason (`reject`).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .db import close_pgmq, make_pgmq
from .simulate import CODE, FRAMEWORKS, MICROSERVICES, TECHNOLOGIES

if TYPE_CHECKING:
    import pgmq

HUB_AGENT = "centralcloud"
LLM_REQUESTS, LLM_RESULTS = "llm_requests", "llm_results"
APPROVAL_REQUESTS, APPROVAL_RESPONSES = "approval_requests", "approval_responses"
KNOWN = {n for n, _ in FRAMEWORKS} | set(TECHNOLOGIES) | set(MICROSERVICES) | set(CODE)
LANGUAGE_OF = dict(FRAMEWORKS)
REVIEWERS = ("alice", "bob", "carol")
REJECT_REASONS = ("too vague to publish", "describes another project", "detection rules would misfire")


@dataclass(frozen=True)
class RouterRates:
    garbage: float = 0.10
    late: float = 0.05
    silent: float = 0.05
    late_delay_s: int = 45
    """How long a late reply is held back (pgmq `delay`): past the hub's QUEUE_ASSETS_LLM_TIMEOUT_S."""

    def __post_init__(self) -> None:
        for name in ("garbage", "late", "silent"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"router rate {name}={getattr(self, name)!r}: must be between 0 and 1")
        if self.garbage + self.late + self.silent > 1:
            raise ValueError(
                f"router rates garbage + late + silent = {self.garbage + self.late + self.silent:.2f}: must be at most 1"
            )


def _messages(found) -> list:
    # The pgmq client returns a single Message (or None) when qty == 1, a list otherwise.
    return [] if found is None else found if isinstance(found, list) else [found]


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def enrichment_for(task: dict[str, Any]) -> dict[str, Any]:
    """A valid enrichment (fits contracts.enrichment.EnrichmentResult) for a known name."""
    name, kind = task.get("name", "?"), task.get("pattern_type", "pattern")
    language = LANGUAGE_OF.get(name)
    return {
        "description": f"{name} is a {kind} seen across the fleet (simulated LLM router).",
        "detection": {"files": ["mix.exs"] if language == "elixir" else [], "dependencies": [name]},
        "related": sorted(k for k in KNOWN if k != name)[:2],
        "languages": [language] if language else [],
    }


class LlmRouter:
    """Reads the hub's `llm_request`s and answers them on `reply_to` (see the module docstring)."""

    def __init__(self, q: pgmq.PGMQueue, rng: random.Random, rates: RouterRates = RouterRates()):
        self.q, self.rng, self.rates = q, rng, rates
        self.outcomes: Counter[str] = Counter()

    def _garbage(self, request_id: str) -> dict[str, Any]:
        kind = self.rng.choice(["text", "extra_field", "oversized"])
        result: Any = {
            "text": 'Sure! Here is the JSON you asked for: {"description": ',
            "extra_field": {"description": "A framework.", "confidence": "very high"},
            "oversized": {"description": "word " * 1000},
        }[kind]
        return {"type": "llm_result", "request_id": request_id, "model": "sim-router-1", "result": result}

    def answer(self, request: dict[str, Any]) -> tuple[str, dict[str, Any] | None, int]:
        """(outcome, reply or None, delay in seconds) for one request; draws from the rng."""
        rid, task = request.get("request_id", ""), request.get("task") or {}
        roll = self.rng.random()
        if task.get("name") not in KNOWN:
            error = f"no knowledge of {task.get('pattern_type', 'pattern')} {task.get('name')!r}"
            return "unknown", {"type": "llm_result", "request_id": rid, "result": None, "error": error}, 0
        r = self.rates
        if roll < r.silent:
            return "silent", None, 0
        if roll < r.silent + r.garbage:
            return "garbage", self._garbage(rid), 0
        reply = {
            "type": "llm_result",
            "request_id": rid,
            "model": "sim-router-1",
            "timestamp": _now(),
            "result": enrichment_for(task),
            "error": None,
        }
        if roll < r.silent + r.garbage + r.late:
            return "late", reply, r.late_delay_s
        return "valid", reply, 0

    def step(self, limit: int = 20) -> int:
        """Answer up to `limit` waiting hub requests; returns how many were read."""
        found = _messages(self.q.read(LLM_REQUESTS, vt=30, qty=limit, conditional={"agent_id": HUB_AGENT}))
        for m in found:
            outcome, reply, delay = self.answer(m.message)
            if reply is not None:
                self.q.send(m.message.get("reply_to") or LLM_RESULTS, reply, delay=delay or None)
            self.q.archive(LLM_REQUESTS, m.msg_id)
            self.outcomes[outcome] += 1
        return len(found)


class HitlBridge:
    """Reads the hub's `approval_request`s and answers each on `reply_to`: approve, or reject
    (`reject` of them) with a reason."""

    def __init__(self, q: pgmq.PGMQueue, rng: random.Random, reject: float = 0.2):
        if not 0 <= reject <= 1:
            raise ValueError(f"bridge reject rate {reject!r}: must be between 0 and 1")
        self.q, self.rng, self.reject = q, rng, reject
        self.outcomes: Counter[str] = Counter()

    def decide(self, request: dict[str, Any]) -> dict[str, Any]:
        approved = self.rng.random() >= self.reject
        response = {
            "type": "approval_response",
            "request_id": request.get("request_id", ""),
            "approved": approved,
            "reviewer": self.rng.choice(REVIEWERS),
            "timestamp": _now(),
        }
        if not approved:
            response["reason"] = self.rng.choice(REJECT_REASONS)
        return response

    def step(self, limit: int = 20) -> int:
        found = _messages(
            self.q.read(APPROVAL_REQUESTS, vt=30, qty=limit, conditional={"agent_id": HUB_AGENT})
        )
        for m in found:
            response = self.decide(m.message)
            self.q.send(m.message.get("reply_to") or APPROVAL_RESPONSES, response)
            self.q.archive(APPROVAL_REQUESTS, m.msg_id)
            self.outcomes["approved" if response["approved"] else "rejected"] += 1
        return len(found)


@dataclass
class ServiceStats:
    router: Counter = field(default_factory=Counter)
    bridge: Counter = field(default_factory=Counter)


def run(
    db_url: str,
    *,
    seed: int = 7,
    rates: RouterRates = RouterRates(),
    reject: float = 0.2,
    poll_s: float = 1.0,
    duration_s: float | None = None,
) -> ServiceStats:
    """Run the router and the bridge side by side until `duration_s` (or Ctrl-C)."""
    q = make_pgmq(db_url)
    router = LlmRouter(q, random.Random(seed), rates)
    bridge = HitlBridge(q, random.Random(seed + 1), reject)
    started = time.monotonic()
    try:
        while duration_s is None or time.monotonic() - started < duration_s:
            busy = router.step() + bridge.step()
            if not busy:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        pass
    finally:
        close_pgmq(q)
    return ServiceStats(router.outcomes, bridge.outcomes)
