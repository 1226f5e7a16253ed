"""An OpenAI-compatible chat server for tests, on 127.0.0.1 in a thread (a hosted LLM is off-machine).

Speaks `POST /v1/chat/completions` with the API's response shape, checks the bearer key (401 when
it differs; a test may change `api_key` while serving, e.g. once the deployment is "fixed"),
answers 404 on any other path, records every request (headers, body, time), and answers with what
the test queued: a model's text, an HTTP status with a body (403, 404, 500...), a body that is not
JSON at all, or a delay longer than the client waits.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: dict
    at: float

    @property
    def prompt(self) -> str:
        return self.body["messages"][-1]["content"]


@dataclass
class Reply:
    content: str | None = None
    """The model's text (choices[0].message.content)."""
    status: int = 200
    raw: bytes | None = None
    """Sent as the body instead of a chat completion (e.g. not JSON at all)."""
    delay_s: float = 0.0


@dataclass
class FakeOpenAI:
    api_key: str = "sk-test-0000"
    model: str = "stand-in-1"
    answer: Callable[[Call], Reply] = field(default=lambda call: Reply(content="{}"))
    calls: list[Call] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, call: Call) -> tuple[int, bytes, float]:
        with self._lock:
            self.calls.append(call)
        if call.path != "/v1/chat/completions":
            return 404, json.dumps({"error": {"message": f"no route {call.path}"}}).encode(), 0.0
        if call.headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, json.dumps({"error": {"message": "Incorrect API key provided"}}).encode(), 0.0
        reply = self.answer(call)
        if reply.raw is not None or reply.status != 200:
            return reply.status, reply.raw or b'{"error": {"message": "boom"}}', reply.delay_s
        body = {
            "id": f"chatcmpl-{len(self.calls)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        return 200, json.dumps(body).encode(), reply.delay_s


@contextlib.contextmanager
def serve_fake_openai(fake: FakeOpenAI | None = None) -> Iterator[FakeOpenAI]:
    """The stand-in on an ephemeral loopback port, `fake.url` its base URL (…/v1)."""
    fake = fake or FakeOpenAI()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, body, delay = fake.handle(
                Call(self.path, headers, json.loads(raw or b"{}"), time.monotonic())
            )
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the timeout tests)

        def log_message(self, *args):  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
