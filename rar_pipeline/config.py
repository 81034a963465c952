"""The one place that reads the environment.

Everything else receives a `Settings` (or the plain values it needs), so tests can build settings
directly and nothing deep in the code depends on process state.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

from rar_pipeline.months import parse_month


class ConfigError(ValueError):
    """A user-facing configuration mistake; its message is one sentence saying how to fix it."""


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    database_url_from_env: bool
    landing_dir: Path
    dagster_home: Path
    start_month: date
    # A file must be unchanged for this long before it is loaded (writers that do not use
    # temp-name-then-rename are still being written while their mtime moves).
    settle_seconds: float = 5.0
    max_files_per_run: int = 100
    max_file_bytes: int = 2 * 1024**3
    # Share of a file's rows that may be rejected before the whole file is rejected.
    reject_budget: float = 0.05
    # RaR (USD) at which pressure reaches 1.
    pressure_cap: float = 100_000.0
    alert_threshold: float = 0.6
    # The nightly run also recomputes the previous month during the first days of a month.
    close_days: int = 5
    # Whether SLACK_WEBHOOK_RAR is set; its value is a secret and is only ever read by Dagster's EnvVar.
    slack_webhook_configured: bool = False
    dagster_url: str | None = None

    def with_overrides(self, **changes) -> Settings:
        return replace(self, **changes)


def _number(env: Mapping[str, str], name: str, default: float, kind=float):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; set it to a {kind.__name__} or unset it.") from None


def _share(env: Mapping[str, str], name: str, default: float) -> float:
    value = _number(env, name, default)
    if not 0 <= value <= 1:
        raise ConfigError(f"{name}={value} must be a share between 0 and 1, e.g. {default}.")
    return value


def _not_negative(env: Mapping[str, str], name: str, default: float, kind=float) -> float:
    value = _number(env, name, default, kind)
    if value < 0:
        raise ConfigError(f"{name}={value} must not be negative.")
    return value


def _positive(env: Mapping[str, str], name: str, default: float, kind=float) -> float:
    value = _number(env, name, default, kind)
    if value <= 0:
        raise ConfigError(f"{name}={value} must be greater than 0.")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    home = Path(env.get("RAR_HOME") or "./.rar").expanduser().absolute()
    url = env.get("RAR_DATABASE_URL") or ""
    start_raw = env.get("RAR_START_MONTH") or "2024-01"
    try:
        start_month = parse_month(start_raw)
    except ValueError:
        raise ConfigError(f"RAR_START_MONTH={start_raw!r} is not a month; use YYYY-MM, e.g. 2024-01.") from None
    budget = _share(env, "RAR_REJECT_BUDGET", 0.05)
    return Settings(
        home=home,
        database_url=url or f"sqlite:///{home / 'rar.db'}",
        database_url_from_env=bool(url),
        landing_dir=Path(env.get("RAR_LANDING_DIR") or home / "landing").expanduser().absolute(),
        dagster_home=Path(env.get("DAGSTER_HOME") or home / "dagster_home").expanduser().absolute(),
        start_month=start_month,
        settle_seconds=_not_negative(env, "RAR_SETTLE_SECONDS", 5.0),
        max_files_per_run=int(_positive(env, "RAR_MAX_FILES_PER_RUN", 100, int)),
        max_file_bytes=int(_positive(env, "RAR_MAX_FILE_BYTES", 2 * 1024**3, int)),
        reject_budget=budget,
        pressure_cap=_positive(env, "RAR_PRESSURE_CAP", 100_000.0),
        alert_threshold=_share(env, "RAR_ALERT_THRESHOLD", 0.6),
        close_days=int(_not_negative(env, "RAR_CLOSE_DAYS", 5, int)),
        slack_webhook_configured=bool((env.get("SLACK_WEBHOOK_RAR") or "").strip()),
        dagster_url=(env.get("RAR_DAGSTER_URL") or "").rstrip("/") or None,
    )


def child_environment(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a `dagster` subprocess: ours, with DAGSTER_HOME pointing at the instance."""
    return {**(os.environ if env is None else env), "DAGSTER_HOME": str(settings.dagster_home)}
