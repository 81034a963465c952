"""Posting to a Slack incoming webhook: timeouts, urllib3 retries, and a URL that never leaks.

429 waits for Retry-After (capped); 5xx, timeouts and connection errors back off exponentially
with jitter; other 4xx are final. The webhook URL is a credential: errors are redacted before they
leave this module, and the URL is never part of a message.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from rar_pipeline.alerts import SendResult

RETRY_STATUSES = (429, 500, 502, 503, 504)
_ANY_URL = re.compile(r"https?://[^\s'\"<>]+")


class _RedactWebhooks(logging.Filter):
    """urllib3 logs request paths: every request at DEBUG, connection retries at WARNING (which reach
    stderr, hence Dagster's captured logs). Replace the webhook's URL and path in those records."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = ()  # replaced, never mutated: logging threads read it without a lock
        self._adding = threading.Lock()

    def add(self, *secrets: str) -> None:
        with self._adding:
            known = {*self.secrets, *(secret for secret in secrets if len(secret) > 1)}
            self.secrets = tuple(sorted(known, key=len, reverse=True))  # the whole URL before its path

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        if secrets:
            message = record.getMessage()
            redacted = message
            for secret in secrets:
                redacted = redacted.replace(secret, "<webhook>")
            if redacted != message:
                record.msg, record.args = redacted, ()
        return True


_REDACT_WEBHOOKS = _RedactWebhooks()
for _name in ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry", "urllib3.poolmanager", "urllib3.response"):
    logging.getLogger(_name).addFilter(_REDACT_WEBHOOKS)


class WebhookError(ValueError):
    """The webhook URL is unusable; the message never contains the URL."""


def validate_webhook_url(url: str) -> None:
    """https only, except http to a loopback address (a local test server standing in for Slack)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:  # e.g. "Invalid IPv6 URL": unusable, and the message must stay free of the URL
        parts = urlsplit("")
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return
    raise WebhookError(
        "SLACK_WEBHOOK_RAR must be an https:// Slack incoming-webhook URL (plain http only to 127.0.0.1/localhost)."
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _CappedRetry(Retry):
    """urllib3's Retry, but a server's Retry-After is honoured only up to `RETRY_AFTER_CAP` seconds."""

    RETRY_AFTER_CAP = 30.0

    def get_retry_after(self, response):
        wait = super().get_retry_after(response)
        return None if wait is None else min(wait, self.RETRY_AFTER_CAP)


class SlackWebhook:
    def __init__(
        self,
        url: str,
        attempts: int = 5,
        timeout: tuple[float, float] = (3.05, 10.0),
        backoff_factor: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_cap: float = 30.0,
    ):
        validate_webhook_url(url)
        self._url = url.strip()
        parts = urlsplit(self._url)
        _REDACT_WEBHOOKS.add(self._url, parts.path + (f"?{parts.query}" if parts.query else ""))
        self._attempts = attempts
        self._timeout = timeout
        retry_class = type("CappedRetry", (_CappedRetry,), {"RETRY_AFTER_CAP": retry_after_cap})
        retry = retry_class(
            total=attempts - 1,
            connect=attempts - 1,
            read=attempts - 1,
            status=attempts - 1,
            other=0,
            allowed_methods=frozenset({"POST"}),  # Slack webhooks are safe to repeat: a digest at most twice
            status_forcelist=RETRY_STATUSES,
            backoff_factor=backoff_factor,
            backoff_max=backoff_max,
            backoff_jitter=backoff_factor,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        self._session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)

    def redact(self, text: str) -> str:
        parts = urlsplit(self._url)
        secret_path = parts.path + (f"?{parts.query}" if parts.query else "")
        text = text.replace(self._url, "<webhook>")
        if len(secret_path) > 1:
            text = text.replace(secret_path, "<webhook path>")
        return _ANY_URL.sub("<url>", text)

    def post(self, payload: dict) -> SendResult:
        try:
            response = self._session.post(self._url, json=payload, timeout=self._timeout)
        except requests.RequestException as error:
            return SendResult(False, self._attempts, self.redact(f"{type(error).__name__}: {error}")[:500])
        history = getattr(getattr(response.raw, "retries", None), "history", ())
        attempts = len(history) + 1
        if 200 <= response.status_code < 300:
            return SendResult(True, attempts)
        body = self.redact(response.text.strip().replace("\n", " "))[:200]
        return SendResult(False, attempts, f"HTTP {response.status_code}: {body}")

    def close(self) -> None:
        self._session.close()
