"""`rar_pipeline.slack.SlackWebhook` against a real local HTTP server playing Slack (the `slack` fixture).

No mock of the HTTP layer: requests/urllib3 talk to a ThreadingHTTPServer on 127.0.0.1 that answers
from a per-test script and records every request.
"""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest

from rar_pipeline.slack import SlackWebhook, WebhookError, validate_webhook_url
from rar_pipeline_tests.fake_slack import SLACK_PATH, SLACK_SECRET, Reply

PAYLOAD = {"text": "Revenue at Risk: 1 dealer needs attention", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}]}


def webhook(url: str, attempts: int = 3, retry_after_cap: float = 1) -> SlackWebhook:
    return SlackWebhook(url, attempts=attempts, backoff_factor=0.01, retry_after_cap=retry_after_cap, timeout=(0.5, 0.5))


def post(url: str, **options):
    hook = webhook(url, **options)
    try:
        return hook.post(PAYLOAD)
    finally:
        hook.close()


def assert_redacted(text: str | None) -> None:
    assert text is not None
    assert SLACK_SECRET not in text
    assert SLACK_PATH not in text
    assert "/services/T000" not in text


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


# Outcomes --------------------------------------------------------------------------------------------
def test_200_is_delivered_in_one_attempt_as_a_json_post(slack):
    result = post(slack.url)

    assert (result.ok, result.attempts, result.error) == (True, 1, None)
    (request,) = slack.requests
    assert request["path"] == SLACK_PATH
    assert request["headers"]["Content-Type"] == "application/json"
    assert json.loads(request["body"]) == PAYLOAD


@pytest.mark.parametrize(("retry_after", "waited_at_least", "waited_at_most"), [("1", 1.0, 2.5), ("120", 1.0, 2.5)])
def test_429_waits_for_the_capped_retry_after_then_retries(slack, retry_after, waited_at_least, waited_at_most):
    """Retry-After 1 is honoured; Retry-After 120 is capped at retry_after_cap=1 (not two minutes)."""
    slack.script(Reply(429, {"Retry-After": retry_after}), 200)

    result = post(slack.url)

    assert (result.ok, result.attempts) == (True, 2)
    first, second = slack.requests
    waited = second["at"] - first["at"]
    assert waited_at_least - 0.05 <= waited < waited_at_most
    assert first["body"] == second["body"]


def test_5xx_twice_then_200_backs_off_and_succeeds_on_the_third_attempt(slack):
    slack.script(500, 503, 200)

    result = post(slack.url)

    assert (result.ok, result.attempts) == (True, 3)
    assert len(slack.requests) == 3
    assert len({request["body"] for request in slack.requests}) == 1  # the same digest each time


def test_5xx_forever_fails_after_the_bounded_attempts(slack):
    slack.script(then=500)

    result = post(slack.url, attempts=4)

    assert not result.ok
    assert result.attempts == 4
    assert len(slack.requests) == 4
    assert result.error.startswith("HTTP 500")
    assert_redacted(result.error)


@pytest.mark.parametrize("status", [404, 400, 403])
def test_other_4xx_is_final_without_a_retry(slack, status):
    slack.script(status)

    result = post(slack.url)

    assert (result.ok, result.attempts) == (False, 1)
    assert len(slack.requests) == 1
    assert result.error.startswith(f"HTTP {status}")
    assert_redacted(result.error)


def test_an_error_body_that_echoes_the_webhook_url_is_redacted(slack):
    slack.script(Reply(404, body=f"no_service: {slack.url} (path {SLACK_PATH})"))

    result = post(slack.url)

    assert result.error.startswith("HTTP 404: no_service")
    assert_redacted(result.error)
    assert "127.0.0.1" not in result.error  # the whole URL is replaced, not only its path


def test_a_server_slower_than_the_timeout_fails_after_the_bounded_attempts(slack):
    slack.script(then=Reply(200, delay=1.5))  # longer than the 0.5 s read timeout, every time

    started = time.monotonic()
    result = post(slack.url)
    elapsed = time.monotonic() - started

    assert not result.ok
    assert result.attempts == 3
    assert len(slack.requests) == 3  # each attempt reached the server and was abandoned
    assert elapsed < 3.5  # 3 × 0.5 s timeouts plus tiny backoffs: bounded, never hangs
    assert "timed out" in result.error.lower() or "timeout" in result.error.lower()
    assert_redacted(result.error)


def test_connection_refused_fails_after_the_bounded_attempts():
    url = f"http://127.0.0.1:{closed_port()}{SLACK_PATH}"

    started = time.monotonic()
    result = post(url)

    assert not result.ok
    assert result.attempts == 3
    assert time.monotonic() - started < 3
    assert "ConnectionError" in result.error
    assert_redacted(result.error)


def test_post_never_raises_and_errors_are_one_bounded_string(slack):
    slack.script(Reply(500, body="x" * 5000 + SLACK_SECRET))

    result = post(slack.url, attempts=1)

    assert not result.ok
    assert len(result.error) <= 220
    assert_redacted(result.error)


# URL validation --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.slack.com/services/T000/B000/SECRETtoken",
        "  https://hooks.slack.com/services/T000/B000/SECRETtoken\n",
        "http://127.0.0.1/services/T000/B000/SECRETtoken",
        "http://127.0.0.1:8123/services/T000/B000/SECRETtoken",
        "http://localhost:8123/services/T000/B000/SECRETtoken",
        "http://[::1]:8123/services/T000/B000/SECRETtoken",
    ],
)
def test_https_and_loopback_http_are_accepted(url):
    validate_webhook_url(url)
    SlackWebhook(url).close()


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/services/T000/B000/SECRETtoken",
        "http://hooks.slack.com/services/T000/B000/SECRETtoken",
        "http://127.0.0.1.example.com/services/T000/B000/SECRETtoken",
        "http://localhost.example.com/services/T000/B000/SECRETtoken",
        "http://127.0.0.1@example.com/services/T000/B000/SECRETtoken",
        "ftp://hooks.slack.com/services/T000/B000/SECRETtoken",
        "file:///etc/SECRETtoken",
        "hooks.slack.com/services/T000/B000/SECRETtoken",
        "https:///services/T000/B000/SECRETtoken",
        "SECRETtoken garbage",
        "http://[::1/services/SECRETtoken",
        "",
    ],
)
def test_other_urls_are_rejected_without_echoing_them(url):
    with pytest.raises(WebhookError) as raised:
        validate_webhook_url(url)
    message = str(raised.value)
    assert "SLACK_WEBHOOK_RAR" in message
    assert SLACK_SECRET not in message and "example.com" not in message
    with pytest.raises(WebhookError) as raised:
        SlackWebhook(url)
    assert SLACK_SECRET not in str(raised.value) and SLACK_SECRET not in repr(raised.value)


# Library logs ---------------------------------------------------------------------------------------------
def test_urllib3_logs_of_retries_and_requests_never_show_the_webhook_path(slack, caplog):
    """urllib3 logs each request's path (DEBUG) and connection retries (WARNING, shown by any basicConfig)."""
    caplog.set_level(logging.DEBUG)
    slack.script(500, Reply(200, delay=1.0), 200)
    assert post(slack.url).attempts == 3  # a 500, a read timeout, then 200
    refused = post(f"http://127.0.0.1:{closed_port()}{SLACK_PATH}")

    assert not refused.ok
    assert any("Retrying" in record.getMessage() for record in caplog.records)  # urllib3 really logged
    assert any(record.name.startswith("urllib3") and record.levelno == logging.DEBUG for record in caplog.records)
    assert SLACK_SECRET not in caplog.text
    assert all(SLACK_SECRET not in record.getMessage() for record in caplog.records)
