"""Dagster resources: the warehouse and the landing zone, configured from `config.Settings`."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr
from sqlalchemy import Engine

from rar_pipeline.config import Settings
from rar_pipeline.ingest import LoadOptions
from rar_pipeline.months import current_month
from rar_pipeline.slack import SlackWebhook, WebhookError
from rar_pipeline.warehouse.engine import WarehouseError, open_warehouse


class WarehouseResource(dg.ConfigurableResource):
    """The RaR warehouse: a SQLite file (embedded default) or PostgreSQL.

    In production the URL is `EnvVar("RAR_DATABASE_URL")`, so Dagster shows the variable's name,
    never its value (which may hold a password).
    """

    database_url: str
    _engine: Engine | None = PrivateAttr(default=None)

    def get_engine(self) -> Engine:
        if self._engine is None:
            try:
                self._engine = open_warehouse(self.database_url)
            except WarehouseError as error:
                raise dg.Failure(description=str(error), allow_retries=False) from None
        return self._engine

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()


class LandingZoneResource(dg.ConfigurableResource):
    """Where batch files arrive, and the rules for loading them."""

    landing_dir: str
    start_month: str = "2024-01-01"
    settle_seconds: float = 5.0
    max_files_per_run: int = 100
    max_file_bytes: int = 2 * 1024**3
    reject_budget: float = 0.05

    @property
    def path(self) -> Path:
        return Path(self.landing_dir)

    def load_options(self) -> LoadOptions:
        return LoadOptions(
            first_month=date.fromisoformat(self.start_month),
            last_month=current_month(),
            max_file_bytes=self.max_file_bytes,
            reject_budget=self.reject_budget,
        )


class RarRulesResource(dg.ConfigurableResource):
    """Business settings of the RaR rules (rar-domain.md)."""

    pressure_cap: float = 100_000.0
    alert_threshold: float = 0.6
    close_days: int = 5


class SlackResource(dg.ConfigurableResource):
    """The Slack incoming webhook for RaR alerts; without one, alerts are rendered but not posted (dry run).

    `webhook_url` is `EnvVar("SLACK_WEBHOOK_RAR")`: the UI, run config and logs show only the name.
    """

    webhook_url: str | None = None
    dagster_url: str | None = None
    attempts: int = 5
    retry_after_cap_seconds: float = 30.0
    backoff_factor: float = 0.5

    def webhook(self) -> SlackWebhook | None:
        if not self.webhook_url:
            return None
        try:
            return SlackWebhook(
                self.webhook_url, attempts=self.attempts, backoff_factor=self.backoff_factor,
                retry_after_cap=self.retry_after_cap_seconds,
            )  # fmt: skip
        except WebhookError as error:
            raise dg.Failure(description=str(error), allow_retries=False) from None


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    url = dg.EnvVar("RAR_DATABASE_URL") if settings.database_url_from_env else settings.database_url
    return {
        "warehouse": WarehouseResource(database_url=url),
        "landing": LandingZoneResource(
            landing_dir=str(settings.landing_dir),
            start_month=settings.start_month.isoformat(),
            settle_seconds=settings.settle_seconds,
            max_files_per_run=settings.max_files_per_run,
            max_file_bytes=settings.max_file_bytes,
            reject_budget=settings.reject_budget,
        ),
        "rules": RarRulesResource(
            pressure_cap=settings.pressure_cap, alert_threshold=settings.alert_threshold, close_days=settings.close_days
        ),
        "slack": SlackResource(
            webhook_url=dg.EnvVar("SLACK_WEBHOOK_RAR") if settings.slack_webhook_configured else None,
            dagster_url=settings.dagster_url,
        ),
    }
