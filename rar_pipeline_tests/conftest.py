"""Shared fixtures. Storage tests take `warehouse_url`/`engine` and run on SQLite and PostgreSQL.

PostgreSQL: RAR_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres) names a
server where the tests may create and drop a database of their own. Unreachable: the PostgreSQL
cases are skipped with the reason, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import uuid
from datetime import date

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from rar_pipeline.ingest import LoadOptions
from rar_pipeline.warehouse.engine import open_warehouse
from rar_pipeline.warehouse.schema import metadata

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def postgres_server_url():
    base = make_url(os.environ.get("RAR_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    admin = create_engine(base, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:  # any failure to reach the server
        reason = f"PostgreSQL at {base.render_as_string(hide_password=True)} is not reachable ({type(error).__name__}); set RAR_TEST_POSTGRES_URL"
        admin.dispose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)", pytrace=False)
        pytest.skip(reason)
    name = f"rar_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield base.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        metadata.drop_all(connection)
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_url(request, tmp_path):
    """An empty warehouse (no tables yet) on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rar.db'}"
    url = request.getfixturevalue("postgres_server_url")
    _reset_postgres(url)
    return url


@pytest.fixture
def engine(warehouse_url):
    engine = open_warehouse(warehouse_url)
    yield engine
    engine.dispose()


@pytest.fixture
def landing(tmp_path):
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


@pytest.fixture
def load_options():
    return LoadOptions(first_month=date(2024, 1, 1), last_month=date(2026, 12, 1), max_file_bytes=10**9, reject_budget=0.05)


# A local HTTP server plays Slack ---------------------------------------------------------------------
import json as _json  # noqa: E402
import threading as _threading  # noqa: E402
import time as _time  # noqa: E402
from dataclasses import dataclass as _dataclass, field as _field  # noqa: E402
from http.server import BaseHTTPRequestHandler as _BaseHandler, ThreadingHTTPServer as _ThreadingServer  # noqa: E402

SLACK_SECRET = "SECRETtoken"
SLACK_PATH = f"/services/T000/B000/{SLACK_SECRET}"


@_dataclass(frozen=True)
class Reply:
    """One scripted answer of the fake Slack: status, headers, body, and a delay before answering."""

    status: int = 200
    headers: dict = _field(default_factory=dict)
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
        self._lock = _threading.Lock()
        fake = self

        class Handler(_BaseHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                reply = fake._record(self.path, dict(self.headers), body)
                if reply.delay:
                    _time.sleep(reply.delay)
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

        class Server(_ThreadingServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request, client_address):
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = _threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
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
            payload = _json.loads(body) if body else None
        except ValueError:
            payload = None
        with self._lock:
            self.requests.append({"path": path, "headers": headers, "body": body, "json": payload, "at": _time.monotonic()})
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
