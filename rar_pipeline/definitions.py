"""The one place that assembles the code location: assets, checks, jobs, sensors and resources."""

import dagster as dg

from rar_pipeline.config import load_settings
from rar_pipeline.defs.alerting import (
    rar_alert_job,
    rar_alert_sweep_schedule,
    rar_nightly_schedule,
    rar_pressure_alert_sensor,
    rar_run_failure_sensor,
)
from rar_pipeline.defs.ingest import raw_events
from rar_pipeline.defs.jobs import rar_ingest_job, rar_monthly_job
from rar_pipeline.defs.monthly import dealer_scores, events, monthly_aggregates, pressure, score_adjustments
from rar_pipeline.defs.resources import build_resources
from rar_pipeline.defs.sensors import rar_landing_sensor, rar_month_refresh_sensor


def build_definitions(settings=None) -> dg.Definitions:
    return dg.Definitions(
        assets=[raw_events, dealer_scores, events, monthly_aggregates, pressure, score_adjustments],
        jobs=[rar_ingest_job, rar_monthly_job, rar_alert_job],
        sensors=[rar_landing_sensor, rar_month_refresh_sensor, rar_pressure_alert_sensor, rar_run_failure_sensor],
        schedules=[rar_nightly_schedule, rar_alert_sweep_schedule],
        resources=build_resources(settings or load_settings()),
    )


defs = build_definitions()
