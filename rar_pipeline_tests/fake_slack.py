"""A local HTTP server that plays Slack's incoming webhook (there is no internet here).

It answers each request with the next scripted `Reply` and records every request it got.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

SLACK_SECRET = "SECRETtoken"
SLACK_PATH = f"/services/T000/B000/{SLACK_SECRET}"


@dataclass(frozen=True)
class Reply:
    """One scripted answer of the fake Slack: status, headers, body, and a delay before answering."""

    status: int = 200
    headers: dict = field(default_factory=dict)
    body: str | None = None  # None: what Slack answers for the status ("ok", "no_service", ...)
    delay: float = 0.0


SLACK_BODIES = {200: "ok", 400: "invalid_payload", 403: "invalid_token", 404: "no_service", 429: "rate_limited"}


class FakeSlack:
    """A real HTTP server on 127.0.0.1 that answers webhook POSTs from a per-test script.

    `script(429, 200)` answers the first request 429, the second 200, and every later one with
    `then` (200 unless given). Every request is recorded (path, headers, raw body, parsed JSON, time).
    """

    def __init__(self):
        self.requests: list[dict] = []
        self._script: list[Reply] = []
        self._then = Reply()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                reply = fake._record(self.path, dict(self.headers), body)
                if reply.delay:
                    time.sleep(reply.delay)
                body = reply.body if reply.body is not None else SLACK_BODIES.get(reply.status, "server_error")
                data = body.encode()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (a timeout test)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request, client_address):
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{SLACK_PATH}"

    def script(self, *replies, then=200) -> "FakeSlack":
        as_reply = lambda item: item if isinstance(item, Reply) else Reply(status=item)  # noqa: E731
        with self._lock:
            self._script = [as_reply(item) for item in replies]
            self._then = as_reply(then)
        return self

    def _record(self, path: str, headers: dict, body: bytes) -> Reply:
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = None
        with self._lock:
            self.requests.append({"path": path, "headers": headers, "body": body, "json": payload, "at": time.monotonic()})
            return self._script.pop(0) if self._script else self._then

    @property
    def payloads(self) -> list:
        return [request["json"] for request in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slack():
    """The fake Slack: `slack.url` is the webhook URL, `slack.script(...)` what it answers."""
    server = FakeSlack()
    yield server
    server.close()
