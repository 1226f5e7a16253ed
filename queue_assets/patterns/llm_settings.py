"""The settings of provider `openai` (an OpenAI-compatible server): OPENAI_BASE_URL,
QUEUE_ASSETS_LLM_MODEL and OPENAI_API_KEY, read and checked in one place, like the hub's own
(`queue_assets/settings.py`) and GitHub's (`git/github.py`). The enrichment's `llm` resource reads
them when a run starts; the API key is registered with `redact` as it is loaded."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import urlsplit

from ..redact import redact, register_secret
from ..settings import SettingsError

DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class OpenAISettings:
    base_url: str
    model: str
    api_key: str = field(repr=False)
    timeout_s: float = 300.0

    ENV: ClassVar[tuple[str, ...]] = ("OPENAI_BASE_URL", "QUEUE_ASSETS_LLM_MODEL", "OPENAI_API_KEY")

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, timeout_s: float = 300.0, **overrides: str | None
    ) -> OpenAISettings:
        """The server's settings: `overrides` (base_url, model, api_key) win over OPENAI_BASE_URL,
        QUEUE_ASSETS_LLM_MODEL and OPENAI_API_KEY. Errors name the variable and never show the key."""
        env = os.environ if env is None else env
        base_url = overrides.get("base_url") or (env.get("OPENAI_BASE_URL") or "").strip() or DEFAULT_BASE_URL
        model = overrides.get("model") or (env.get("QUEUE_ASSETS_LLM_MODEL") or "").strip()
        api_key = overrides.get("api_key") or (env.get("OPENAI_API_KEY") or "").strip()
        register_secret(api_key)
        problems = []
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(
                f"OPENAI_BASE_URL={redact(base_url, (api_key,))[:100]!r}: expected an http(s) URL such as "
                f"{DEFAULT_BASE_URL} or http://127.0.0.1:11434/v1 (Ollama)"
            )
        elif "@" in parts.netloc:
            problems.append(
                f"OPENAI_BASE_URL={redact(base_url, (api_key,))[:100]!r}: must not hold credentials; "
                "the key goes in OPENAI_API_KEY"
            )
        if not model:
            problems.append(
                "QUEUE_ASSETS_LLM_MODEL is not set: QUEUE_ASSETS_LLM_PROVIDER=openai needs the name of a "
                "model the server serves, e.g. llama3.1 (Ollama) or gpt-4o-mini"
            )
        elif len(model) > 200 or any(c.isspace() or ord(c) < 32 for c in model):
            problems.append(
                f"QUEUE_ASSETS_LLM_MODEL={model[:80]!r}: not a model name (whitespace, or too long)"
            )
        if api_key and any(c.isspace() or ord(c) < 32 for c in api_key):
            problems.append("OPENAI_API_KEY: not a key (it holds whitespace); its value is not shown")
        if problems:
            raise SettingsError(problems)
        # A local server (Ollama, vLLM) takes no key; the client insists on one.
        return cls(base_url=base_url.rstrip("/"), model=model, api_key=api_key or "none", timeout_s=timeout_s)
