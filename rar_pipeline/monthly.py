"""Rebuilding one month of the RaR lineage in the warehouse (no Dagster here).

Every function takes a connection inside the caller's transaction and rewrites exactly one month:
delete the month's rows, insert the new ones. The caller holds `lock_month` first, so two runs of
the same month serialize and the later one computes from what the earlier one committed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import numpy as np
import pyarrow as pa
from sqlalchemy import Connection, and_, delete, func, insert, literal, select
from sqlalchemy.exc import DataError

from rar_pipeline import rar_math
from rar_pipeline.contract import NATURAL_KEY
from rar_pipeline.months import add_months
from rar_pipeline.warehouse.bulk import insert_arrow, read_arrow
from rar_pipeline.warehouse.engine import CURRENT_PRESSURE_LOCK, advisory_lock
from rar_pipeline.warehouse.schema import (
    DERIVED_COLUMNS,
    dealer_scores,
    rar_batch_months,
    rar_events,
    rar_intent_monthly,
    rar_monthly,
    rar_pressure,
    rar_raw_dealer_scores,
    rar_raw_events,
    rar_score_adjustments,
    secondary_metrics,
)

PRESSURE_METRIC = "rar_pressure"


def lock_month(connection: Connection, month: date) -> None:
    """Serialize writers of one month. PostgreSQL: a transaction-scoped advisory lock per month.

    SQLite needs nothing more: writers open their transaction with BEGIN IMMEDIATE, which already
    admits one writer at a time.
    """
    advisory_lock(connection, zlib.crc32(f"rar-month-{month.isoformat()}".encode()))


# rar/events -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EventsSummary:
    events: int
    batches: list[int]  # the loaded batches with rows for the month
    up_to_batch: int  # the newest loaded batch the rebuild considered


def rebuild_events(connection: Connection, month: date) -> EventsSummary:
    """The month's canonical events: per natural key the row of the latest batch, with its RaR chain."""
    raw = rar_raw_events
    # Only the batches committed by now: one that commits while this transaction runs is left to
    # its own refresh run. PostgreSQL gives each statement a new snapshot, so without this bound
    # the check that follows (`events_latest_per_key`) could see a batch the rebuild did not.
    up_to_batch = connection.execute(select(func.coalesce(func.max(rar_batch_months.c.batch_id), 0))).scalar_one()
    considered = connection.execute(
        select(rar_batch_months.c.batch_id)
        .where(
            rar_batch_months.c.month == month,
            rar_batch_months.c.kind == "events",
            rar_batch_months.c.batch_id <= up_to_batch,
        )
        .order_by(rar_batch_months.c.batch_id)
    ).scalars().all()
    if len(considered) == 1:
        # One batch: its keys are unique already (the loader quarantines repeats), nothing to rank.
        ranked = (
            select(raw, literal(1).label("version"))
            .where(raw.c.month == month, raw.c.batch_id == considered[0])
            .subquery("ranked")
        )
    else:
        ranked = (
            select(
                raw,
                func.row_number()
                .over(partition_by=[raw.c[name] for name in NATURAL_KEY], order_by=[raw.c.batch_id.desc(), raw.c.line_no.desc()])
                .label("version"),
            )
            .where(raw.c.month == month, raw.c.batch_id.in_(considered or [-1]))
            .subquery("ranked")
        )
    r = ranked.c
    # Left to right, as rar_math.event_values does: ((impressions × share) × ctr) × drop ...
    ai_sessions = r.impressions * r.share_ai_snippet * r.ctr_baseline
    lost_sessions = ai_sessions * r.ctr_drop_when_ai
    lost_leads = lost_sessions * r.lead_cr
    lost_sales = lost_leads * r.close_rate
    rar = lost_sales * r.avg_gross
    recoverable = rar * r.recoverable_share
    inputs = [c.name for c in rar_events.columns if c.name not in DERIVED_COLUMNS]
    derived = [ai_sessions, lost_sessions, lost_leads, lost_sales, rar, recoverable]
    connection.execute(delete(rar_events).where(rar_events.c.month == month))
    try:
        with connection.begin_nested():
            inserted = connection.execute(
                insert(rar_events).from_select(
                    inputs + list(DERIVED_COLUMNS),
                    select(*(r[name] for name in inputs), *derived).where(r.version == 1),
                )
            )
        events = inserted.rowcount
    except DataError:
        # PostgreSQL raises "value out of range: underflow" where a product of two non-zero
        # float8 values rounds to 0 (valid but absurd rates such as 1e-200); IEEE float64, as
        # in Python and SQLite, gives 0. Compute such a month's chain in Python instead.
        events = _insert_events_in_python(connection, ranked, inputs)
    return EventsSummary(events=events, batches=list(considered), up_to_batch=up_to_batch)


def _insert_events_in_python(connection: Connection, ranked, inputs: list[str]) -> int:
    """The slow path of `rebuild_events`: the same rows and values, the chain from `rar_math`."""
    rows = connection.execute(select(*(ranked.c[name] for name in inputs)).where(ranked.c.version == 1)).mappings()
    records = []
    for row in rows:
        chain = rar_math.event_values(
            row["impressions"], row["share_ai_snippet"], row["ctr_baseline"], row["ctr_drop_when_ai"],
            row["lead_cr"], row["close_rate"], row["avg_gross"], row["recoverable_share"],
        )  # fmt: skip
        records.append({**row, **{name: getattr(chain, name) for name in DERIVED_COLUMNS}})
    for start in range(0, len(records), 10_000):
        connection.execute(insert(rar_events), records[start : start + 10_000])
    return len(records)


# rar/monthly and rar/intent_monthly ----------------------------------------------------------------
_EVENT_MEASURES = {
    "dealer_id": pa.string(),
    "intent_cluster": pa.string(),
    "impressions": pa.int64(),
    "lost_sessions": pa.float64(),
    "lost_leads": pa.float64(),
    "lost_sales": pa.float64(),
    "rar": pa.float64(),
    "recoverable": pa.float64(),
}


def dealer_months(connection: Connection, month: date) -> list[rar_math.DealerMonth]:
    """Aggregate the month's events per dealer (exact sums, rounded once)."""
    query = select(*(rar_events.c[name] for name in _EVENT_MEASURES)).where(rar_events.c.month == month)
    table = read_arrow(connection, query, _EVENT_MEASURES)
    if table.num_rows == 0:
        return []
    # Sorting here is cheaper than an ORDER BY that spills to disk on the server.
    table = table.sort_by([("dealer_id", "ascending")])
    dealers = table.column("dealer_id").to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.flatnonzero(dealers[1:] != dealers[:-1]) + 1, [len(dealers)]])
    arrays = {name: table.column(name).to_numpy(zero_copy_only=False) for name in _EVENT_MEASURES}
    result = []
    for start, end in zip(starts[:-1], starts[1:]):
        rows = slice(start, end)
        result.append(
            rar_math.dealer_month(
                str(dealers[start]),
                arrays["impressions"][rows],
                arrays["lost_sessions"][rows].tolist(),
                arrays["lost_leads"][rows].tolist(),
                arrays["lost_sales"][rows].tolist(),
                arrays["rar"][rows].tolist(),
                arrays["recoverable"][rows].tolist(),
                arrays["intent_cluster"][rows].tolist(),
            )
        )
    return result


def write_monthly(
    connection: Connection, month: date, rows: list[rar_math.DealerMonth], is_complete: bool, now: datetime
) -> None:
    connection.execute(delete(rar_monthly).where(rar_monthly.c.month == month))
    if rows:
        connection.execute(
            insert(rar_monthly),
            [
                {
                    "dealer_id": row.dealer_id,
                    "month": month,
                    "lost_sessions": row.lost_sessions,
                    "lost_leads": row.lost_leads,
                    "lost_sales": row.lost_sales,
                    "rar": row.rar,
                    "recoverable": row.recoverable,
                    "impressions": row.impressions,
                    "event_count": row.event_count,
                    "top_losing_intents": row.top_losing_intents,
                    "recovery_rate": row.recovery_rate,
                    "zero_click_rate": row.zero_click_rate,
                    "is_complete": is_complete,
                    "computed_at": now,
                }
                for row in rows
            ],
        )


def write_intent_monthly(
    connection: Connection, month: date, rows: list[rar_math.DealerMonth], is_complete: bool, now: datetime
) -> int:
    """The full per-intent breakdown, bulk-written (200k rows for 2,000 dealers × 100 intents)."""
    columns: dict[str, list] = {name: [] for name in ("dealer_id", "intent_cluster", "rank", "rar", "recoverable", "lost_sessions", "event_count")}
    for row in rows:
        for rank, intent in enumerate(row.intents, start=1):
            columns["dealer_id"].append(row.dealer_id)
            columns["intent_cluster"].append(intent.intent)
            columns["rank"].append(rank)
            columns["rar"].append(rar_math.half_up_cents(intent.rar))
            columns["recoverable"].append(rar_math.half_up_cents(intent.recoverable))
            columns["lost_sessions"].append(rar_math.half_up_whole(intent.lost_sessions))
            columns["event_count"].append(intent.event_count)
    count = len(columns["rank"])
    connection.execute(delete(rar_intent_monthly).where(rar_intent_monthly.c.month == month))
    if count:
        money = pa.decimal128(14, 2)
        table = pa.table(
            {
                "dealer_id": pa.array(columns["dealer_id"], pa.string()),
                "month": pa.array([month] * count, pa.date32()),
                "intent_cluster": pa.array(columns["intent_cluster"], pa.string()),
                "rank": pa.array(columns["rank"], pa.int32()),
                "rar": pa.array(columns["rar"], money),
                "recoverable": pa.array(columns["recoverable"], money),
                "lost_sessions": pa.array(columns["lost_sessions"], pa.int64()),
                "event_count": pa.array(columns["event_count"], pa.int32()),
                "is_complete": pa.array([is_complete] * count, pa.bool_()),
                "computed_at": pa.array([now] * count, pa.timestamp("us", tz="UTC")),
            }
        )
        insert_arrow(connection, rar_intent_monthly.name, table.column_names, [table])
    return count


# rar/pressure ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PressureRow:
    dealer_id: str
    rar: Decimal
    pressure: float
    trend: str
    trend_pct: float
    previous_rar: Decimal | None
    lost_sessions: int
    zero_click_proxy: float


def rebuild_pressure(
    connection: Connection, month: date, cap: float, is_complete: bool, now: datetime
) -> list[PressureRow]:
    """Pressure and trend per dealer of the month; then each affected dealer's current pressure."""
    current = connection.execute(
        select(rar_monthly.c.dealer_id, rar_monthly.c.rar, rar_monthly.c.lost_sessions).where(rar_monthly.c.month == month)
    ).all()
    previous = dict(
        connection.execute(
            select(rar_monthly.c.dealer_id, rar_monthly.c.rar).where(rar_monthly.c.month == add_months(month, -1))
        ).all()
    )
    rows = []
    for dealer_id, rar, lost_sessions in current:
        rar = Decimal(rar)
        before = Decimal(previous[dealer_id]) if dealer_id in previous else None
        trend, pct = rar_math.trend(rar, before)
        rows.append(
            PressureRow(
                dealer_id, rar, rar_math.pressure(rar, cap), trend, pct, before, lost_sessions,
                rar_math.zero_click_proxy(lost_sessions),
            )  # fmt: skip
        )
    connection.execute(delete(rar_pressure).where(rar_pressure.c.month == month))
    if rows:
        connection.execute(
            insert(rar_pressure),
            [
                {
                    "dealer_id": row.dealer_id, "month": month, "rar": row.rar, "pressure": row.pressure, "cap": cap,
                    "trend": row.trend, "trend_pct": row.trend_pct, "previous_rar": row.previous_rar,
                    "lost_sessions": row.lost_sessions, "zero_click_proxy": row.zero_click_proxy,
                    "is_complete": is_complete, "computed_at": now,
                }  # fmt: skip
                for row in rows
            ],
        )
    _refresh_current_pressure(connection, month, [row.dealer_id for row in rows], now)
    return rows


def _refresh_current_pressure(connection: Connection, month: date, dealers: list[str], now: datetime) -> None:
    """secondary_metrics.rar_pressure = the pressure of each dealer's latest month with data.

    Only dealers that have data in this month, or whose current value came from this month, can
    change; recomputing an old month leaves a newer month's value alone.
    """
    # Writers of different months hold different month locks but share each dealer's current
    # value: one refresh at a time, each reading (fresh snapshot per statement) what the one
    # before committed. Otherwise an older month's refresh that overlaps a newer one's fails
    # on the newer one's uncommitted rows, or overwrites them with the older month's value.
    advisory_lock(connection, CURRENT_PRESSURE_LOCK)
    affected = set(dealers) | set(
        connection.execute(
            select(secondary_metrics.c.dealer_id).where(
                secondary_metrics.c.key == PRESSURE_METRIC, secondary_metrics.c.month == month
            )
        ).scalars()
    )
    if not affected:
        return
    affected_list = sorted(affected)
    latest = (
        select(rar_pressure.c.dealer_id, func.max(rar_pressure.c.month).label("month"))
        .where(rar_pressure.c.dealer_id.in_(affected_list))
        .group_by(rar_pressure.c.dealer_id)
        .subquery("latest")
    )
    current = connection.execute(
        select(rar_pressure.c.dealer_id, rar_pressure.c.month, rar_pressure.c.pressure).join(
            latest, and_(rar_pressure.c.dealer_id == latest.c.dealer_id, rar_pressure.c.month == latest.c.month)
        )
    ).all()
    connection.execute(
        delete(secondary_metrics).where(
            secondary_metrics.c.key == PRESSURE_METRIC, secondary_metrics.c.dealer_id.in_(affected_list)
        )
    )
    if current:
        connection.execute(
            insert(secondary_metrics),
            [
                {"dealer_id": dealer, "key": PRESSURE_METRIC, "value_num": value, "month": latest_month, "updated_at": now}
                for dealer, latest_month, value in current
            ],
        )


# rar/dealer_scores and rar/score_adjustments ----------------------------------------------------------
def rebuild_dealer_scores(connection: Connection, now: datetime) -> int:
    """The score snapshot per dealer × month: the latest loaded file wins."""
    raw = rar_raw_dealer_scores
    ranked = select(
        raw,
        func.row_number()
        .over(partition_by=[raw.c.dealer_id, raw.c.month], order_by=[raw.c.batch_id.desc(), raw.c.line_no.desc()])
        .label("version"),
    ).subquery("ranked")
    names = ["dealer_id", "month", "aiv", "ati", "qai", "zero_click_coverage", "schema_coverage", "batch_id"]
    connection.execute(delete(dealer_scores))
    connection.execute(
        insert(dealer_scores).from_select(
            names + ["updated_at"],
            select(*(ranked.c[name] for name in names), literal(now, dealer_scores.c.updated_at.type)).where(
                ranked.c.version == 1
            ),
        )
    )
    return connection.execute(select(func.count()).select_from(dealer_scores)).scalar_one()


def rebuild_score_adjustments(connection: Connection, month: date, now: datetime) -> int:
    """AIV/ATI/QAI adjusted by the month's pressure, for dealers with a score snapshot of that month."""
    rows = connection.execute(
        select(
            rar_pressure.c.dealer_id, rar_pressure.c.pressure, rar_pressure.c.trend,
            dealer_scores.c.aiv, dealer_scores.c.ati, dealer_scores.c.qai,
        )  # fmt: skip
        .join(
            dealer_scores,
            and_(dealer_scores.c.dealer_id == rar_pressure.c.dealer_id, dealer_scores.c.month == rar_pressure.c.month),
        )
        .where(rar_pressure.c.month == month)
    ).all()
    records = []
    for dealer_id, pressure, trend, aiv, ati, qai in rows:
        adjusted = rar_math.adjust_scores(aiv, ati, qai, pressure, trend)
        records.append(
            {
                "dealer_id": dealer_id, "month": month, "scores_month": month, "pressure": pressure, "trend": trend,
                "aiv": aiv, "ati": ati, "qai": qai,
                "aiv_adjusted": adjusted.aiv, "ati_adjusted": adjusted.ati, "qai_adjusted": adjusted.qai,
                "aiv_delta": adjusted.aiv_delta, "ati_delta": adjusted.ati_delta, "qai_delta": adjusted.qai_delta,
                "computed_at": now,
            }  # fmt: skip
        )
    connection.execute(delete(rar_score_adjustments).where(rar_score_adjustments.c.month == month))
    if records:
        connection.execute(insert(rar_score_adjustments), records)
    return len(records)


def top_dealers_markdown(rows: list[rar_math.DealerMonth], limit: int = 10) -> str:
    ranked = sorted(rows, key=lambda row: (-row.rar, row.dealer_id))[:limit]
    lines = ["| dealer | RaR | recoverable | lost sessions | top intent |", "|---|---:|---:|---:|---|"]
    for row in ranked:
        top = row.top_losing_intents[0]["intent"] if row.top_losing_intents else "-"
        lines.append(f"| {row.dealer_id} | ${row.rar:,.2f} | ${row.recoverable:,.2f} | {row.lost_sessions:,} | {top} |")
    return "\n".join(lines)

