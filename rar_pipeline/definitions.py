"""The one place that assembles the code location: assets, checks, jobs, sensors and resources."""

import dagster as dg

from rar_pipeline.config import load_settings
from rar_pipeline.defs.ingest import rar_ingest_job, raw_events
from rar_pipeline.defs.resources import build_resources
from rar_pipeline.defs.sensors import rar_landing_sensor


def build_definitions(settings=None) -> dg.Definitions:
    return dg.Definitions(
        assets=[raw_events],
        jobs=[rar_ingest_job],
        sensors=[rar_landing_sensor],
        resources=build_resources(settings or load_settings()),
    )


defs = build_definitions()
