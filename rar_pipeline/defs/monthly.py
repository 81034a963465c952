"""The monthly RaR lineage: rar/events → rar/monthly + rar/intent_monthly → rar/pressure → rar/score_adjustments.

Each asset body is "lock the month, rebuild it from the layer below, check it, report"; the work
is in `rar_pipeline.monthly` and `rar_pipeline.monthly_checks`.
"""

from datetime import date, datetime, timezone

import dagster as dg

from rar_pipeline import monthly, monthly_checks
from rar_pipeline.alerts import write_alert_candidates
from rar_pipeline.defs.ingest import RAW_EVENTS_KEY
from rar_pipeline.defs.partitions import monthly_partitions
from rar_pipeline.defs.resources import RarRulesResource, WarehouseResource
from rar_pipeline.months import current_month
from rar_pipeline.warehouse.engine import write_connection

EVENTS_KEY = dg.AssetKey(["rar", "events"])
MONTHLY_KEY = dg.AssetKey(["rar", "monthly"])
INTENT_MONTHLY_KEY = dg.AssetKey(["rar", "intent_monthly"])
PRESSURE_KEY = dg.AssetKey(["rar", "pressure"])
DEALER_SCORES_KEY = dg.AssetKey(["rar", "dealer_scores"])
SCORE_ADJUSTMENTS_KEY = dg.AssetKey(["rar", "score_adjustments"])

OWNERS = ["team:data-engineering"]
# dagster.yaml admits one run of this pool at a time: month M's trend reads month M-1, which a
# parallel run could be rewriting. Runs queue oldest month first.
MONTHLY_POOL = "rar_monthly"
MONTHLY_KINDS = {"python", "sql"}


def _columns(*columns: tuple[str, str, str]) -> dict:
    return {"dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn(n, t, description=d) for n, t, d in columns])}


def _month(context: dg.AssetExecutionContext) -> tuple[date, bool, datetime]:
    month = date.fromisoformat(context.partition_key)
    return month, month < current_month(), datetime.now(timezone.utc)


def _check(name: str, outcome: monthly_checks.CheckOutcome, asset_key: dg.AssetKey) -> dg.AssetCheckResult:
    passed, facts = outcome
    return dg.AssetCheckResult(asset_key=asset_key, check_name=name, passed=passed, metadata=facts)


@dg.asset(
    key=EVENTS_KEY,
    deps=[RAW_EVENTS_KEY],
    partitions_def=monthly_partitions,
    group_name="monthly",
    kinds=MONTHLY_KINDS,
    owners=OWNERS,
    pool=MONTHLY_POOL,
    metadata={"dagster/table_name": "rar_events"}
    | _columns(
        ("dealer_id", "varchar(128)", ""), ("month", "date", "first day of the month"), ("channel", "text", ""),
        ("intent_cluster", "text", "empty = none"), ("impressions", "bigint", ""),
        ("lost_sessions", "double", "zero-click sessions"), ("rar", "double", "gross profit at risk, USD (unrounded)"),
        ("recoverable", "double", "share of rar recoverable by fixes"), ("batch_id", "integer", "the batch the row comes from"),
    ),  # fmt: skip
    check_specs=[
        dg.AssetCheckSpec(
            "latest_batch_per_key", asset=EVENTS_KEY, blocking=True,
            description="One event per dealer × channel × intent, each from the newest batch carrying that key.",
        )  # fmt: skip
    ],
)
def events(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The canonical RaR events of the month, one per dealer × channel × intent.

    Built from every loaded batch with rows for the month; when batches carry the same key, the
    latest batch wins (a later file is a correction, never an addition). Each event carries its
    RaR chain: AI-answer sessions, zero-click (lost) sessions, lost leads, lost sales, gross profit
    at risk (`rar`) and the recoverable part, unrounded, for BI tools to chart.
    """
    month, _, _ = _month(context)
    with write_connection(warehouse.get_engine()) as connection, connection.begin():
        monthly.lock_month(connection, month)
        summary = monthly.rebuild_events(connection, month)
        check = monthly_checks.events_latest_per_key(connection, month, summary.up_to_batch)
    return dg.MaterializeResult(
        metadata={"dagster/row_count": summary.events, "batches_used": summary.batches, "month": context.partition_key},
        check_results=[_check("latest_batch_per_key", check, EVENTS_KEY)],
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            MONTHLY_KEY, deps=[EVENTS_KEY], group_name="monthly", kinds=MONTHLY_KINDS, owners=OWNERS,
            description="Monthly gross profit at risk per dealer: one row per dealer × month with lost "
            "sessions/leads (whole numbers), lost sales, RaR and recoverable (cents, rounded half up once on "
            "the monthly sums) and the top 5 losing intents. A dealer without events in the month has no row.",
            metadata={"dagster/table_name": "rar_monthly"}
            | _columns(
                ("dealer_id", "varchar(128)", ""), ("month", "date", ""), ("lost_sessions", "bigint", ""),
                ("lost_leads", "bigint", ""), ("lost_sales", "numeric(14,2)", ""),
                ("rar", "numeric(14,2)", "gross profit at risk, USD"), ("recoverable", "numeric(14,2)", ""),
                ("top_losing_intents", "json", "[{intent, rar}] by RaR, at most 5"),
                ("recovery_rate", "double", "recoverable / rar, NULL when rar = 0"),
                ("zero_click_rate", "double", "lost sessions / impressions"),
                ("is_complete", "boolean", "false for the running month"),
            ),
        ),  # fmt: skip
        dg.AssetSpec(
            INTENT_MONTHLY_KEY, deps=[EVENTS_KEY], group_name="monthly", kinds=MONTHLY_KINDS, owners=OWNERS,
            description="The full per-intent RaR breakdown per dealer and month, ranked (BI charts the top 10). "
            "Events without an intent count in the dealer totals but not here.",
            metadata={"dagster/table_name": "rar_intent_monthly"}
            | _columns(
                ("dealer_id", "varchar(128)", ""), ("month", "date", ""), ("intent_cluster", "text", ""),
                ("rank", "integer", "1 = the dealer's biggest losing intent"), ("rar", "numeric(14,2)", ""),
                ("recoverable", "numeric(14,2)", ""), ("lost_sessions", "bigint", ""), ("event_count", "integer", ""),
            ),
        ),  # fmt: skip
    ],
    partitions_def=monthly_partitions,
    pool=MONTHLY_POOL,
    check_specs=[
        dg.AssetCheckSpec("one_row_per_dealer", asset=MONTHLY_KEY, blocking=True,
                          description="Exactly the dealers with events in the month have a row."),
        dg.AssetCheckSpec("reconciles_with_events", asset=MONTHLY_KEY, blocking=True,
                          description="Σ dealer RaR = rounded Σ event RaR, within half a cent per dealer."),
        dg.AssetCheckSpec("recoverable_within_rar", asset=MONTHLY_KEY, description="0 ≤ recoverable ≤ rar."),
        dg.AssetCheckSpec("top_intents_sorted", asset=MONTHLY_KEY, description="At most 5, by RaR descending."),
    ],  # fmt: skip
)
def monthly_aggregates(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    month, is_complete, now = _month(context)
    with write_connection(warehouse.get_engine()) as connection, connection.begin():
        monthly.lock_month(connection, month)
        rows = monthly.dealer_months(connection, month)
        monthly.write_monthly(connection, month, rows, is_complete, now)
        intent_rows = monthly.write_intent_monthly(connection, month, rows, is_complete, now)
        checks = [
            _check("one_row_per_dealer", monthly_checks.monthly_one_row_per_dealer(connection, month), MONTHLY_KEY),
            _check("reconciles_with_events", monthly_checks.monthly_reconciles(connection, month), MONTHLY_KEY),
            _check("recoverable_within_rar", monthly_checks.recoverable_within_rar(connection, month), MONTHLY_KEY),
            _check("top_intents_sorted", monthly_checks.top_intents_sorted(connection, month), MONTHLY_KEY),
        ]
    yield dg.MaterializeResult(
        asset_key=MONTHLY_KEY,
        metadata={
            "dagster/row_count": len(rows),
            "dealers": len(rows),
            "events": sum(row.event_count for row in rows),
            "total_rar": float(sum(row.rar for row in rows)),
            "total_recoverable": float(sum(row.recoverable for row in rows)),
            "is_complete": is_complete,
            "top_dealers": dg.MetadataValue.md(monthly.top_dealers_markdown(rows)),
        },
        check_results=checks,
    )
    yield dg.MaterializeResult(asset_key=INTENT_MONTHLY_KEY, metadata={"dagster/row_count": intent_rows})


@dg.asset(
    key=PRESSURE_KEY,
    deps=[MONTHLY_KEY],
    partitions_def=monthly_partitions,
    group_name="monthly",
    kinds=MONTHLY_KINDS,
    owners=OWNERS,
    pool=MONTHLY_POOL,
    metadata={"dagster/table_name": "rar_pressure"}
    | _columns(
        ("pressure", "double", "min(rar / cap, 1)"), ("trend", "varchar(8)", "up | down | stable vs the previous month"),
        ("trend_pct", "double", ""), ("zero_click_proxy", "double", "lost_sessions / (lost_sessions + 10,000)"),
    ),  # fmt: skip
    check_specs=[dg.AssetCheckSpec("pressure_in_range", asset=PRESSURE_KEY, blocking=True, description="0 ≤ pressure ≤ 1.")],
)
def pressure(context: dg.AssetExecutionContext, warehouse: WarehouseResource, rules: RarRulesResource) -> dg.MaterializeResult:
    """How hard zero-click losses press on each dealer this month: min(RaR / cap, 1), 0..1.

    With the trend against the previous calendar month (up/down beyond ±5 %, else stable) and a
    zero-click coverage proxy. The history stays in `rar_pressure`; the dashboard's current value
    (`secondary_metrics` key `rar_pressure`) is that of the dealer's latest month with data, so
    recomputing an old month never overwrites a newer month's pressure. Dealers at or above the
    alert threshold (and P0s) are queued in `rar_alert_outbox` for the Slack digest, once per level.
    """
    month, is_complete, now = _month(context)
    with write_connection(warehouse.get_engine()) as connection, connection.begin():
        monthly.lock_month(connection, month)
        rows = monthly.rebuild_pressure(connection, month, rules.pressure_cap, is_complete, now)
        check = monthly_checks.pressure_in_range(connection, month)
        # Written with the data (same transaction): a rerun finds them and adds nothing.
        queued = write_alert_candidates(connection, month, rules.alert_threshold, now)
    trends = {name: sum(1 for row in rows if row.trend == name) for name in ("up", "stable", "down")}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(rows),
            "cap": rules.pressure_cap,
            "max_pressure": max((row.pressure for row in rows), default=0.0),
            "dealers_at_full_pressure": sum(1 for row in rows if row.pressure >= 1),
            "trend_counts": trends,
            "alerts_queued": queued,
        },
        check_results=[_check("pressure_in_range", check, PRESSURE_KEY)],
    )


@dg.asset(
    key=DEALER_SCORES_KEY,
    deps=[RAW_EVENTS_KEY],
    group_name="ingest",
    kinds={"python", "sql"},
    owners=OWNERS,
    metadata={"dagster/table_name": "dealer_scores"}
    | _columns(
        ("dealer_id", "varchar(128)", ""), ("month", "date", ""), ("aiv", "double", "AI visibility, 0..100"),
        ("ati", "double", "AI trust, 0..100"), ("qai", "double", "quality index, 0..100"),
        ("zero_click_coverage", "double", "0..1 or NULL"), ("schema_coverage", "double", "0..1 or NULL"),
        ("batch_id", "integer", "the score file it comes from"),
    ),  # fmt: skip
)
def dealer_scores(warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Base AI visibility (AIV), AI trust (ATI) and quality (QAI) scores per dealer × month, 0..100.

    Delivered as score files (header `dealerId,month,aiv,ati,qai[,zeroClickCoverage,schemaCoverage]`)
    through the same landing zone, ledger and validation as events; the latest file wins per dealer
    × month. Coverage fractions feed the P0 alert rule.
    """
    with write_connection(warehouse.get_engine()) as connection, connection.begin():
        count = monthly.rebuild_dealer_scores(connection, datetime.now(timezone.utc))
    return dg.MaterializeResult(metadata={"dagster/row_count": count})


@dg.asset(
    key=SCORE_ADJUSTMENTS_KEY,
    deps=[PRESSURE_KEY, DEALER_SCORES_KEY],
    partitions_def=monthly_partitions,
    group_name="monthly",
    kinds=MONTHLY_KINDS,
    owners=OWNERS,
    pool=MONTHLY_POOL,
    metadata={"dagster/table_name": "rar_score_adjustments"}
    | _columns(
        ("dealer_id", "varchar(128)", ""), ("month", "date", ""), ("pressure", "double", ""), ("trend", "varchar(8)", ""),
        ("aiv", "double", "base"), ("aiv_adjusted", "double", "AIV × (1 − 0.04 × pressure)"), ("aiv_delta", "double", "points"),
        ("ati", "double", "base"), ("ati_adjusted", "double", "ATI × (1 − 0.03 × pressure)"), ("ati_delta", "double", "points"),
        ("qai", "double", "base"), ("qai_adjusted", "double", "QAI × 0.98 when trending up"), ("qai_delta", "double", "points"),
    ),  # fmt: skip
)
def score_adjustments(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The dealer's AI scores after RaR pressure (the learning loop), for dealers with base scores that month.

    AIV' = AIV × (1 − 0.04 × pressure), ATI' = ATI × (1 − 0.03 × pressure), QAI' = QAI × 0.98 when
    RaR trends up; each clamped to 0..100, with deltas in points.
    """
    month, _, now = _month(context)
    with write_connection(warehouse.get_engine()) as connection, connection.begin():
        monthly.lock_month(connection, month)
        count = monthly.rebuild_score_adjustments(connection, month, now)
    return dg.MaterializeResult(metadata={"dagster/row_count": count})

