"""The pull-request provider: GitHub's REST API (`requests`), list-then-update-or-create.

`GitHubPullRequests.ensure(head, base, title, body)` keeps exactly one open pull request per head
branch: it lists open PRs for `owner:head`; updates the one it finds (only when title or body
differ); otherwise creates one. Two runs racing to create both get past the list; GitHub answers
the loser with 422 "A pull request already exists", which is handled by listing again and updating.

The token travels only in the Authorization header. It never appears in an error text: every
message goes through `redact` with the token as a known secret.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..redact import redact
from ..settings import SettingsError
from .repo import GitAuth

if TYPE_CHECKING:  # requests (0.2-0.5 s) loads when a pull request is opened, not with the code location
    import requests

DEFAULT_API_URL = "https://api.github.com"
_REPO_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
_RETRY_STATUSES = (502, 503, 504)


class PullRequestError(RuntimeError):
    """The provider refused or failed; the message names the call and GitHub's reason (no token)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class GitHubSettings:
    repository: str
    token: str = field(repr=False)
    api_url: str = DEFAULT_API_URL

    @property
    def owner(self) -> str:
        return self.repository.split("/", 1)[0]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: str | None) -> GitHubSettings | None:
        """The provider's settings, or None when neither GITHUB_REPOSITORY nor GITHUB_TOKEN is set.

        `overrides` (repository, token, api_url) win over the environment. Errors name the variable
        and never show the token.
        """
        env = os.environ if env is None else env

        def value(key: str, name: str) -> str:
            return (overrides.get(key) or env.get(name) or "").strip()

        repository = value("repository", "GITHUB_REPOSITORY")
        token = value("token", "GITHUB_TOKEN")
        api_url = value("api_url", "GITHUB_API_URL") or DEFAULT_API_URL
        if not repository and not token:
            return None
        problems = []
        if not repository:
            problems.append(
                "GITHUB_REPOSITORY is not set but GITHUB_TOKEN is: set it to owner/name to open "
                "pull requests, or unset GITHUB_TOKEN for a branch-only export"
            )
        elif not _REPO_RE.match(repository) or repository.split("/", 1)[1] in (".", ".."):
            problems.append(
                f"GITHUB_REPOSITORY={repository[:100]!r}: expected owner/name, e.g. acme/templates_data"
            )
        if not token:
            problems.append(
                f"GITHUB_TOKEN is not set but GITHUB_REPOSITORY={repository[:100]!r} is: set a token "
                "allowed to open pull requests, or unset GITHUB_REPOSITORY for a branch-only export"
            )
        elif any(c.isspace() or ord(c) < 32 for c in token) or len(token) < 8:
            problems.append(
                "GITHUB_TOKEN: not a token (shorter than 8 characters, or holds whitespace); "
                "its value is not shown"
            )
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(
                f"GITHUB_API_URL={redact(api_url)[:100]!r}: expected an http(s) URL such as {DEFAULT_API_URL}"
            )
        elif "@" in parts.netloc:
            problems.append(
                f"GITHUB_API_URL={redact(api_url)[:100]!r}: must not hold credentials; "
                "the token goes in GITHUB_TOKEN"
            )
        if problems:
            raise SettingsError(problems)
        return cls(repository=repository, token=token, api_url=api_url.rstrip("/"))

    def git_auth_for(self, remote_url: str) -> GitAuth | None:
        """Credentials for pushing to `remote_url` when it is an https URL on this GitHub's host."""
        parts = urlsplit(remote_url)
        if parts.scheme != "https" or "@" in parts.netloc or not parts.hostname:
            return None
        api_host = urlsplit(self.api_url).hostname or ""
        git_host = api_host[4:] if api_host.startswith("api.") else api_host
        return GitAuth("x-access-token", self.token) if parts.hostname == git_host else None


@dataclass(frozen=True)
class PullRequest:
    number: int | None
    url: str | None
    action: str
    """created | updated | unchanged | no_diff (the head has no commits beyond the base)."""


class GitHubPullRequests:
    """Open or update the one pull request of a head branch on `settings.repository`."""

    name = "github"

    def __init__(
        self,
        settings: GitHubSettings,
        *,
        timeout_s: float = 30.0,
        retries: int = 2,
        backoff_s: float = 1.0,
        session: requests.Session | None = None,
    ):
        self.settings = settings
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        if session is None:
            import requests

            session = requests.Session()
        self.session = session
        self.session.trust_env = False  # no ~/.netrc credentials mixed in with ours
        self._base = f"{settings.api_url}/repos/{settings.repository}"

    def _call(self, method: str, path: str, **kwargs) -> requests.Response:
        import requests

        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {self.settings.token}",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "queue-assets-export",
        }
        where = f"{method} {self.settings.api_url}/repos/{self.settings.repository}{path}"
        for attempt in range(self.retries + 1):
            problem = None
            try:
                resp = self.session.request(
                    method,
                    self._base + path,
                    headers=headers,
                    timeout=self.timeout_s,
                    allow_redirects=False,
                    **kwargs,
                )
            except requests.RequestException as exc:
                problem = f"{type(exc).__name__}: {exc}"
                resp = None
            if resp is not None and resp.status_code not in _RETRY_STATUSES:
                return resp
            if attempt < self.retries:
                time.sleep(self.backoff_s * (2**attempt))
                continue
            if resp is not None:
                return resp
            raise PullRequestError(
                redact(f"GitHub API {where} could not be reached: {problem}", (self.settings.token,))
            )
        raise AssertionError("unreachable")

    def _fail(self, resp: requests.Response, what: str) -> PullRequestError:
        reason = _github_reason(resp)
        hint = {
            401: " (the token is invalid or expired: check GITHUB_TOKEN)",
            403: " (the token lacks permission, or the rate limit is exhausted)",
            404: " (no such repository, or the token cannot see it: check GITHUB_REPOSITORY)",
        }.get(resp.status_code, "")
        return PullRequestError(
            redact(
                f"GitHub API: {what} on {self.settings.repository} failed with HTTP "
                f"{resp.status_code}: {reason}{hint}",
                (self.settings.token,),
            ),
            status=resp.status_code,
        )

    def find_open(self, head: str, base: str | None = None) -> dict | None:
        params = {"head": f"{self.settings.owner}:{head}", "state": "open", "per_page": "10"}
        if base:
            params["base"] = base
        resp = self._call("GET", "/pulls", params=params)
        if resp.status_code != 200:
            raise self._fail(resp, f"listing open pull requests for {head!r}")
        pulls = [p for p in resp.json() if (p.get("head") or {}).get("ref", head) == head]
        return min(pulls, key=lambda p: p["number"]) if pulls else None

    def _update(self, pr: dict, title: str, body: str) -> PullRequest:
        if pr.get("title") == title and (pr.get("body") or "") == body:
            return PullRequest(pr["number"], pr.get("html_url"), "unchanged")
        resp = self._call("PATCH", f"/pulls/{int(pr['number'])}", json={"title": title, "body": body})
        if resp.status_code != 200:
            raise self._fail(resp, f"updating pull request #{pr['number']}")
        data = resp.json()
        return PullRequest(data["number"], data.get("html_url"), "updated")

    def ensure(self, *, head: str, base: str, title: str, body: str) -> PullRequest:
        """The one open pull request `head` -> `base`, created or brought up to date."""
        existing = self.find_open(head, base)
        if existing is not None:
            return self._update(existing, title, body)
        resp = self._call(
            "POST",
            "/pulls",
            json={"title": title, "head": head, "base": base, "body": body, "maintainer_can_modify": True},
        )
        if resp.status_code == 201:
            data = resp.json()
            return PullRequest(data["number"], data.get("html_url"), "created")
        if resp.status_code == 422:
            reason = _github_reason(resp)
            if "already exists" in reason.lower():
                # Another run created it between our list and our create: update that one.
                existing = self.find_open(head, base)
                if existing is not None:
                    return self._update(existing, title, body)
            if "no commits between" in reason.lower():
                return PullRequest(None, None, "no_diff")
        raise self._fail(resp, f"creating a pull request {head!r} -> {base!r}")


def _github_reason(resp: requests.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return " ".join(resp.text.split())[:300] or resp.reason or "no reason given"
    if not isinstance(data, dict):
        return str(data)[:300]
    parts = [str(data.get("message") or "")]
    for err in data.get("errors") or []:
        if isinstance(err, dict):
            parts.append(str(err.get("message") or err.get("code") or ""))
        else:
            parts.append(str(err))
    return "; ".join(p for p in parts if p)[:500] or "no reason given"
