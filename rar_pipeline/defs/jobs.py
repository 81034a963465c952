"""The jobs the sensors, the schedule and the CLI launch."""

import dagster as dg

from rar_pipeline.defs.ingest import RAW_EVENTS_KEY
from rar_pipeline.defs.monthly import (
    DEALER_SCORES_KEY,
    EVENTS_KEY,
    INTENT_MONTHLY_KEY,
    MONTHLY_KEY,
    PRESSURE_KEY,
    SCORE_ADJUSTMENTS_KEY,
)

rar_ingest_job = dg.define_asset_job(
    "rar_ingest_job",
    selection=dg.AssetSelection.assets(RAW_EVENTS_KEY, DEALER_SCORES_KEY),
    description="Load every pending file of the landing zone (events and dealer scores).",
    # dagster.yaml limits runs with this tag to one at a time; the ledger makes overlap safe anyway.
    tags={"rar/writer": "ingest"},
)

rar_monthly_job = dg.define_asset_job(
    "rar_monthly_job",
    # Partitioned by the assets' shared monthly_partitions.
    selection=dg.AssetSelection.assets(EVENTS_KEY, MONTHLY_KEY, INTENT_MONTHLY_KEY, PRESSURE_KEY, SCORE_ADJUSTMENTS_KEY),
    description="Rebuild one month of the RaR lineage (events, dealer aggregates, pressure, score adjustments) and check it.",
)
