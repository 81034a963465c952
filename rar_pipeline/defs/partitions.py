"""The one monthly partitioning shared by every monthly asset and job."""

import dagster as dg

from rar_pipeline.config import load_settings

# UTC months keyed like 2025-11-01; end_offset=1 makes the running month a partition too.
monthly_partitions = dg.MonthlyPartitionsDefinition(
    start_date=load_settings().start_month.isoformat(), end_offset=1, timezone="UTC", fmt="%Y-%m-%d"
)
