"""Dagster resources for Git: the templates_data repository and the GitHub pull-request provider.

Their fields are what the UI shows. `git_resources` builds both from the code location's settings:
the data folder, `GITHUB_REPOSITORY` and `GITHUB_API_URL` as plain values, and what may hold a secret
by name only, resolved in the run's process: `dg.EnvVar("TEMPLATES_REPO_URL")` (a URL may carry
credentials; unset: the embedded bare remote that `queue-assets init` creates) and
`dg.EnvVar("GITHUB_TOKEN")`. The resources never read the environment themselves. A token, or
credentials inside TEMPLATES_REPO_URL, never reach a log line, metadata or an error text
(`redact.redact`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import dagster as dg
from pydantic import Field

from ..redact import redact
from ..settings import Settings, SettingsError
from .github import GitHubPullRequests, GitHubSettings
from .repo import (
    GitAuth,
    WorkCopy,
    ensure_embedded_templates_remote,
    open_work_copy,
    validate_remote_url,
)

_WORK_NAME_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,40}$")


class TemplatesRepoResource(dg.ConfigurableResource):
    """The `templates_data` Git repository: any Git URL or path (`TEMPLATES_REPO_URL`). Unset: the
    embedded bare remote under the data folder (created on first use)."""

    url: str | None = Field(
        default=None,
        description="Git URL or path; it may hold credentials: give dg.EnvVar('TEMPLATES_REPO_URL'). "
        "Unset: the embedded remote in data_dir.",
    )
    data_dir: str = Field(
        description="The hub's data folder (QUEUE_ASSETS_DATA_DIR): work copies, embedded remote."
    )
    lock_timeout_s: float = 600.0

    def data_path(self) -> Path:
        return Path(self.data_dir)

    def remote_url(self) -> str:
        """The configured remote, validated (errors name TEMPLATES_REPO_URL and never show credentials)."""
        url = (self.url or "").strip()
        if not url:
            return ensure_embedded_templates_remote(self.data_path())
        try:
            return validate_remote_url(url, "TEMPLATES_REPO_URL")
        except ValueError as exc:
            raise SettingsError([str(exc)]) from None

    def display_url(self) -> str:
        """The remote as it may be shown: credentials replaced by `***`."""
        return redact(self.remote_url())

    @contextlib.contextmanager
    def work_copy(self, name: str, auth: GitAuth | None = None) -> Iterator[WorkCopy]:
        """A locked, freshly fetched clone in `<data dir>/git/work/<name>`; one name per use
        (e.g. `export`, `distribution`) so users never share a work tree."""
        if not _WORK_NAME_RE.match(name):
            raise ValueError(f"work copy name {name!r} is not allowed (lower-case letters, digits, '_', '-')")
        with open_work_copy(
            self.remote_url(),
            self.data_path() / "git" / "work" / name,
            auth=auth,
            lock_timeout_s=self.lock_timeout_s,
        ) as wc:
            yield wc


class GitHubResource(dg.ConfigurableResource):
    """Pull requests through GitHub's REST API. With neither a repository nor a token configured
    there is no provider: the branch is the export."""

    repository: str | None = Field(default=None, description="owner/name (GITHUB_REPOSITORY).")
    token: str | None = Field(default=None, description="A secret: give dg.EnvVar('GITHUB_TOKEN').")
    api_url: str | None = Field(
        default=None, description="REST API root (GITHUB_API_URL); unset: api.github.com."
    )
    timeout_s: float = 30.0
    retries: int = 2
    retry_backoff_s: float = 1.0

    def github_settings(self) -> GitHubSettings | None:
        """Validated; errors name GITHUB_REPOSITORY / GITHUB_TOKEN / GITHUB_API_URL, never the token."""
        return GitHubSettings.from_env({}, repository=self.repository, token=self.token, api_url=self.api_url)

    def provider(self) -> GitHubPullRequests | None:
        settings = self.github_settings()
        if settings is None:
            return None
        return GitHubPullRequests(
            settings, timeout_s=self.timeout_s, retries=self.retries, backoff_s=self.retry_backoff_s
        )


def git_resources(settings: Settings, env: Mapping[str, str]) -> dict[str, dg.ConfigurableResource]:
    """`templates_repo` and `github` as the code location configures them (`env`: the environment the
    definitions load in, consulted only for which of these variables are set; the values of
    TEMPLATES_REPO_URL and GITHUB_TOKEN stay in the environment, as `dg.EnvVar`)."""

    def is_set(name: str) -> bool:
        return bool((env.get(name) or "").strip())

    return {
        "templates_repo": TemplatesRepoResource(
            url=dg.EnvVar("TEMPLATES_REPO_URL") if is_set("TEMPLATES_REPO_URL") else None,
            data_dir=str(settings.data_dir),
        ),
        "github": GitHubResource(
            repository=(env.get("GITHUB_REPOSITORY") or "").strip() or None,
            token=dg.EnvVar("GITHUB_TOKEN") if is_set("GITHUB_TOKEN") else None,
            api_url=(env.get("GITHUB_API_URL") or "").strip() or None,
        ),
    }
