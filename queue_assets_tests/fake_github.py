"""A GitHub-shaped REST server for tests, served on 127.0.0.1 in a thread (GitHub itself is off-machine).

Implements the three pull-request calls the export makes (list, create, update) with GitHub's
shapes and status codes, records every request, and can be told to fail: answer a call with a
given status, or simulate the create race (another run opens the PR between our list and create).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: dict | None
    headers: dict[str, str]


@dataclass
class FakeGitHub:
    owner: str = "acme"
    repo: str = "templates_data"
    token: str = "test-token-0000"
    pulls: list[dict] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    fail: dict[str, tuple[int, dict]] = field(default_factory=dict)
    """method -> (status, JSON body) answered instead of the real thing, until removed."""
    race_on_create: bool = False
    """The next POST finds that another run just opened the PR: it gets GitHub's 422."""
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def calls(self, method: str) -> list[Request]:
        return [r for r in self.requests if r.method == method]

    def open_pulls(self) -> list[dict]:
        return [p for p in self.pulls if p["state"] == "open"]

    def _new_pull(self, title: str, body: str, head: str, base: str) -> dict:
        number = len(self.pulls) + 1
        pr = {
            "number": number,
            "title": title,
            "body": body,
            "state": "open",
            "head": {"ref": head, "label": f"{self.owner}:{head}"},
            "base": {"ref": base},
            "html_url": f"https://github.example/{self.owner}/{self.repo}/pull/{number}",
        }
        self.pulls.append(pr)
        return pr

    def handle(
        self, method: str, path: str, query: dict, body: dict | None, headers: dict
    ) -> tuple[int, object]:
        with self._lock:
            self.requests.append(Request(method, path, query, body, headers))
            if headers.get("authorization") != f"Bearer {self.token}":
                return 401, {"message": "Bad credentials"}
            if method in self.fail:
                return self.fail[method]
            prefix = f"/repos/{self.owner}/{self.repo}/pulls"
            if method == "GET" and path == prefix:
                head = query.get("head", [""])[0]
                state = query.get("state", ["open"])[0]
                base = query.get("base", [None])[0]
                found = [
                    p
                    for p in self.pulls
                    if p["head"]["label"] == head
                    and p["state"] == state
                    and (base is None or p["base"]["ref"] == base)
                ]
                return 200, found
            if method == "POST" and path == prefix:
                label = f"{self.owner}:{body['head']}"
                if self.race_on_create:
                    self.race_on_create = False
                    self._new_pull("opened by a concurrent run", "", body["head"], body["base"])
                if any(p["head"]["label"] == label and p["state"] == "open" for p in self.pulls):
                    return 422, {
                        "message": "Validation Failed",
                        "errors": [
                            {
                                "resource": "PullRequest",
                                "code": "custom",
                                "message": f"A pull request already exists for {label}.",
                            }
                        ],
                        "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
                    }
                return 201, self._new_pull(body["title"], body.get("body") or "", body["head"], body["base"])
            if method == "PATCH" and path.startswith(prefix + "/"):
                number = int(path.rsplit("/", 1)[1])
                for p in self.pulls:
                    if p["number"] == number:
                        p.update({k: v for k, v in body.items() if k in ("title", "body", "state")})
                        return 200, p
                return 404, {"message": "Not Found"}
            return 404, {"message": "Not Found"}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeGitHub

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, payload = self.server.fake.handle(
            self.command, parts.path, parse_qs(parts.query), body, headers
        )
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = _serve

    def log_message(self, *args) -> None:  # keep test output quiet
        pass


class serve_fake_github:
    """Context manager: start a `FakeGitHub` on an ephemeral loopback port; `fake.url` is its API URL."""

    def __init__(self, fake: FakeGitHub | None = None):
        self.fake = fake or FakeGitHub()

    def __enter__(self) -> FakeGitHub:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.fake = self.fake
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.fake.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        return self.fake

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
