"""Dagster resources for Git: the templates_data repository and the GitHub pull-request provider.

Both read the environment when a run starts, never at import: `TEMPLATES_REPO_URL` (default: the
embedded bare remote that `queue-assets init` creates), and `GITHUB_REPOSITORY`, `GITHUB_TOKEN`,
`GITHUB_API_URL`. Leaving the fields unset keeps secrets out of the resource's config (which the UI
shows); to pass the token explicitly, use `GitHubResource(token=dg.EnvVar("GITHUB_TOKEN"))`, which
the UI shows by name only. A token, or credentials inside TEMPLATES_REPO_URL, never reach a log
line, metadata or an error text (`redact.redact`).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

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
    """The `templates_data` Git repository: any Git URL or path. Unset: `TEMPLATES_REPO_URL`, else
    the embedded bare remote under the data folder (created on first use)."""

    url: str | None = None
    data_dir: str | None = None
    lock_timeout_s: float = 600.0

    def data_path(self) -> Path:
        return Path(self.data_dir) if self.data_dir else Settings.from_env().data_dir

    def remote_url(self) -> str:
        """The configured remote, validated (errors name TEMPLATES_REPO_URL and never show credentials)."""
        url = self.url or (os.environ.get("TEMPLATES_REPO_URL") or "").strip()
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
    (fields or `GITHUB_REPOSITORY` / `GITHUB_TOKEN`) there is no provider: the branch is the export."""

    repository: str | None = None
    token: str | None = None
    api_url: str | None = None
    timeout_s: float = 30.0
    retries: int = 2
    retry_backoff_s: float = 1.0

    def github_settings(self) -> GitHubSettings | None:
        return GitHubSettings.from_env(repository=self.repository, token=self.token, api_url=self.api_url)

    def provider(self) -> GitHubPullRequests | None:
        settings = self.github_settings()
        if settings is None:
            return None
        return GitHubPullRequests(
            settings, timeout_s=self.timeout_s, retries=self.retries, backoff_s=self.retry_backoff_s
        )
