"""The `llm` resource: the transport of QUEUE_ASSETS_LLM_PROVIDER for the enrichment asset.

Unset fields read the environment when a run starts, never at import: OPENAI_BASE_URL,
QUEUE_ASSETS_LLM_MODEL and OPENAI_API_KEY (provider `openai` only). Leaving `api_key` unset keeps
the key out of the resource's config, which the UI shows; to pass it explicitly use
`LlmResource(api_key=dg.EnvVar("OPENAI_API_KEY"))`, which the UI shows by name only.
"""

from __future__ import annotations

import dagster as dg

from ..redact import redact
from .enrichment import EnrichmentConfig
from .providers import OpenAISettings, OpenAITransport, Transport, transport_for


class LlmResource(dg.ConfigurableResource):
    """The OpenAI-compatible server of provider `openai` (the `queue` provider needs no settings)."""

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None

    def _settings(self, cfg: EnrichmentConfig) -> OpenAISettings:
        return OpenAISettings.from_env(
            timeout_s=cfg.timeout_s, base_url=self.base_url, model=self.model, api_key=self.api_key
        )

    def check(self, cfg: EnrichmentConfig) -> None:
        """Raise `SettingsError` (naming the variable, never the key) if the provider cannot be used."""
        if cfg.provider == "openai":
            self._settings(cfg)

    def transport(self, cfg: EnrichmentConfig) -> Transport:
        if cfg.provider != "openai":
            return transport_for(cfg.provider, timeout_s=cfg.timeout_s)
        return OpenAITransport(self._settings(cfg))

    @staticmethod
    def describe(transport: Transport) -> dict[str, str]:
        """What the UI may show about the transport: provider, model and server (never the key)."""
        if isinstance(transport, OpenAITransport):
            s = transport.settings
            return {"provider": transport.name, "model": s.model, "server": redact(s.base_url, (s.api_key,))}
        return {"provider": transport.name}
