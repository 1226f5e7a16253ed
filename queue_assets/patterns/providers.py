"""How an enrichment request reaches an LLM: the transports of QUEUE_ASSETS_LLM_PROVIDER (issue 12).

Everything else (the prompt, the budget, recording the request, parsing the answer into the
length-limited model, storing it and the `pattern_learned` broadcast) is `enrichment.py`'s, the
same for every provider. A transport only moves the request:

- `QueueTransport` (`queue`, the default): `send` puts the `llm_request` on `llm_requests` inside
  the transaction that records it; the router answers on `hub_llm_results`, which ingest reads.
- `OpenAITransport` (`openai`): `send` puts nothing anywhere; after the recording transaction has
  committed, `complete` asks any OpenAI-compatible server (Ollama, vLLM, a hosted API) through
  the official `openai` client, synchronously, one request at a time, no client-side retries
  (the budget's retries are the enrichment's).

The API key is a secret: it is registered with `redact` when loaded, travels only in the client's
Authorization header, and every error text goes through `redact` with it. The `openai` package is
imported only when an `OpenAITransport` is built, so nothing else pays for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from ..redact import redact
from .llm_settings import OpenAISettings

if TYPE_CHECKING:
    from ..contracts.enrichment import HubLlmRequest

LLM_REQUESTS = "llm_requests"
SYNC_BATCH = 10
"""Requests one run of a synchronous provider makes at most; the sensor starts the next run."""
_HINTS = {
    401: " (the server refused the key: check OPENAI_API_KEY)",
    403: " (the key may not use this model: check OPENAI_API_KEY and QUEUE_ASSETS_LLM_MODEL)",
    404: " (no such endpoint or model: check OPENAI_BASE_URL and QUEUE_ASSETS_LLM_MODEL)",
    429: " (rate limited by the server)",
}
DEPLOYMENT_ERRORS = frozenset({"http_401", "http_403", "http_404", "unreachable"})
"""Error kinds that say the deployment is wrong, not the pattern: the server refused the key (401),
the key may not use the model (403), no such endpoint or model (404), or no connection to the server
could be opened (`unreachable`: a wrong OPENAI_BASE_URL host or port, a server that is down).
`unreachable` is only the connect phase (DNS, refused, connect timeout): the request never left,
so it cannot be about the pattern, and the next pattern would fail the same way. A connection lost
after the request was sent (`connection_lost`) and a slow answer (`timeout`) stay failed attempts
of that pattern: a prompt that crashes or stalls the server must use up its own attempts instead of
blocking the keys after it forever. Any other status (400, 422, 429, 5xx) is an attempt too."""


class ProviderUnusable(RuntimeError):
    """A synchronous provider's server answered with a deployment error (`DEPLOYMENT_ERRORS`): the
    run stopped its calls and withdrew its requests not yet answered (`enrichment.run_enrichment`).
    The message (redacted) names the server, the HTTP status and what to check."""

    def __init__(self, provider: str, done: Completion, *, withdrawn: int, answered: int):
        self.provider = provider
        self.error_kind = done.error_kind
        self.withdrawn = withdrawn
        """Requests of the run withdrawn (the refused one and those not yet called)."""
        self.answered = answered
        """Requests of the run answered and stored before the refusal."""
        super().__init__(
            redact(
                f"QUEUE_ASSETS_LLM_PROVIDER={provider} is unusable: {done.error}. Nothing is wrong with the "
                f"patterns: this run withdrew its {withdrawn} request{'s' if withdrawn != 1 else ''} not yet "
                "answered (their keys wait as before, the hourly budget refunded); fix the setting and the "
                "sensor tries again after its backoff."
            )
        )


@dataclass(frozen=True)
class Completion:
    """A synchronous provider's answer: the model's text, or why there is none."""

    text: str | None = None
    model: str | None = None
    error_kind: str | None = None
    error: str | None = None


class Transport(Protocol):
    name: str
    max_per_run: int | None
    """None: no limit but the budget (sending is a queue insert)."""
    synchronous: bool
    """True: `complete` answers each request after the recording transaction commits."""

    def send(self, conn: psycopg.Connection, request: HubLlmRequest) -> int | None:
        """Inside the transaction that records the request; returns the queue msg_id, if any."""
        ...

    def complete(self, request: HubLlmRequest) -> Completion:
        """Ask the model (synchronous transports only)."""
        ...


class QueueTransport:
    """`queue`: the seeds' LLM router, over pgmq, answering on `reply_to` (hub_llm_results)."""

    name = "queue"
    max_per_run: int | None = None
    synchronous = False

    def send(self, conn: psycopg.Connection, request: HubLlmRequest) -> int | None:
        row = conn.execute(
            "SELECT pgmq.send(%s, %s::jsonb)", (LLM_REQUESTS, request.model_dump_json())
        ).fetchone()
        assert row is not None  # pgmq.send returns the new msg_id
        return int(row[0])

    def complete(self, request: HubLlmRequest) -> Completion:
        raise TypeError("the queue provider answers through hub_llm_results, not synchronously")


class OpenAITransport:
    """`openai`: one chat completion per request, on any OpenAI-compatible server."""

    name = "openai"
    max_per_run: int | None = SYNC_BATCH
    synchronous = True

    def __init__(self, settings: OpenAISettings):
        import openai  # lazily: only this provider needs the client (and its HTTP stack)

        self.settings = settings
        self._client = openai.OpenAI(
            base_url=settings.base_url, api_key=settings.api_key, timeout=settings.timeout_s, max_retries=0
        )

    def send(self, conn: psycopg.Connection, request: HubLlmRequest) -> int | None:
        return None  # recorded only; `complete` makes the call once the record is committed

    def _redact(self, text: str) -> str:
        return redact(text, (self.settings.api_key,))

    def complete(self, request: HubLlmRequest) -> Completion:
        import openai

        where = self._redact(self.settings.base_url)
        try:
            resp: Any = self._client.chat.completions.create(
                model=self.settings.model,
                messages=[{"role": "user", "content": request.task.prompt}],
                response_format={"type": "json_object"},
            )
        except openai.APITimeoutError as exc:
            if _connect_phase(exc, "ConnectTimeout"):
                return Completion(
                    error_kind="unreachable",
                    error=f"{where} could not be reached: no connection within {self.settings.timeout_s:g} s",
                )
            return Completion(
                error_kind="timeout",
                error=f"{where} gave no answer within {self.settings.timeout_s:g} s (QUEUE_ASSETS_LLM_TIMEOUT_S)",
            )
        except openai.APIStatusError as exc:
            body = exc.response.text[:300] if exc.response is not None else ""
            return Completion(
                error_kind=f"http_{exc.status_code}",
                error=self._redact(
                    f"{where} answered HTTP {exc.status_code}{_HINTS.get(exc.status_code, '')}: {body!r}"
                ),
            )
        except openai.APIConnectionError as exc:
            if _connect_phase(exc, "ConnectError"):  # the request never left
                return Completion(
                    error_kind="unreachable",
                    error=self._redact(f"{where} could not be reached: {exc.__cause__}"[:500]),
                )
            return Completion(
                error_kind="connection_lost",
                error=self._redact(f"{where} dropped the connection: {exc.__cause__ or exc}"[:500]),
            )
        except (openai.OpenAIError, ValueError, TypeError) as exc:  # a body the client cannot read
            return Completion(
                error_kind="bad_response",
                error=self._redact(f"{where} sent an unreadable answer: {type(exc).__name__}: {exc}"[:500]),
            )
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list) or not choices:
            return Completion(
                error_kind="bad_response",
                error=self._redact(f"{where} answered without choices: {str(resp)[:200]!r}"),
            )
        message = getattr(choices[0], "message", None)
        text = getattr(message, "content", None)
        model = getattr(resp, "model", None)
        return Completion(
            text=text if isinstance(text, str) else None,
            model=str(model)[:200] if model else self.settings.model,
        )


def _connect_phase(exc: BaseException, name: str) -> bool:
    """Did the client fail while opening the connection (`ConnectError`, `ConnectTimeout`)? Read by
    class name along the cause chain: the client's HTTP stack (httpx, now httpx2) names them so in
    every version, and importing one of them would tie this check to it."""
    cause = exc.__cause__
    while cause is not None:
        if type(cause).__name__ == name:
            return True
        cause = cause.__cause__
    return False


def transport_for(provider: str, *, timeout_s: float, env: Mapping[str, str] | None = None) -> Transport:
    """The transport of QUEUE_ASSETS_LLM_PROVIDER (`openai` reads its settings from `env`)."""
    if provider == "queue":
        return QueueTransport()
    if provider == "openai":
        return OpenAITransport(OpenAISettings.from_env(env, timeout_s=timeout_s))
    raise ValueError(f"QUEUE_ASSETS_LLM_PROVIDER={provider!r} has no transport; use queue, openai or off")
