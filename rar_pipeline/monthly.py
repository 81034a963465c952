"""Rebuilding one month of the RaR lineage in the warehouse (no Dagster here).

Every function takes a connection inside the caller's transaction and rewrites exactly one month:
delete the month's rows, insert the new ones. The caller holds `lock_month` first, so two runs of
the same month serialize and the later one computes from what the earlier one committed.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import numpy as np
import pyarrow as pa
from sqlalchemy import Connection, and_, delete, func, insert, literal, select, text
from sqlalchemy.exc import DataError

from rar_pipeline import rar_math
from rar_pipeline.contract import NATURAL_KEY
from rar_pipeline.months import add_months
from rar_pipeline.warehouse.bulk import read_arrow
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
    if connection.dialect.name == "postgresql":
        key = zlib.crc32(f"rar-month-{month.isoformat()}".encode())
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


# rar/events -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EventsSummary:
    events: int
    dealers: int
    batches: list[int]


def rebuild_events(connection: Connection, month: date) -> EventsSummary:
    """The month's canonical events: per natural key the row of the latest batch, with its RaR chain."""
    raw = rar_raw_events
    batches = select(rar_batch_months.c.batch_id).where(
        rar_batch_months.c.month == month, rar_batch_months.c.kind == "events"
    )
    ranked = (
        select(
            raw,
            func.row_number()
            .over(partition_by=[raw.c[name] for name in NATURAL_KEY], order_by=[raw.c.batch_id.desc(), raw.c.line_no.desc()])
            .label("version"),
        )
        .where(raw.c.month == month, raw.c.batch_id.in_(batches))
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
            connection.execute(
                insert(rar_events).from_select(
                    inputs + list(DERIVED_COLUMNS),
                    select(*(r[name] for name in inputs), *derived).where(r.version == 1),
                )
            )
    except DataError:
        # PostgreSQL raises "value out of range: underflow" where a product of two non-zero
        # float8 values rounds to 0 (valid but absurd rates such as 1e-200); IEEE float64, as
        # in Python and SQLite, gives 0. Compute such a month's chain in Python instead.
        _insert_events_in_python(connection, ranked, inputs)
    counts = connection.execute(
        select(func.count(), func.count(func.distinct(rar_events.c.dealer_id))).where(rar_events.c.month == month)
    ).one()
    used = connection.execute(
        select(rar_events.c.batch_id).where(rar_events.c.month == month).distinct().order_by(rar_events.c.batch_id)
    ).scalars().all()
    return EventsSummary(events=counts[0], dealers=counts[1], batches=list(used))


def _insert_events_in_python(connection: Connection, ranked, inputs: list[str]) -> None:
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
    query = (
        select(*(rar_events.c[name] for name in _EVENT_MEASURES))
        .where(rar_events.c.month == month)
        .order_by(rar_events.c.dealer_id)
    )
    table = read_arrow(connection, query, _EVENT_MEASURES)
    if table.num_rows == 0:
        return []
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
    records = [
        {
            "dealer_id": row.dealer_id,
            "month": month,
            "intent_cluster": intent.intent,
            "rank": rank,
            "rar": rar_math.half_up_cents(intent.rar),
            "recoverable": rar_math.half_up_cents(intent.recoverable),
            "lost_sessions": rar_math.half_up_whole(intent.lost_sessions),
            "event_count": intent.event_count,
            "is_complete": is_complete,
            "computed_at": now,
        }
        for row in rows
        for rank, intent in enumerate(row.intents, start=1)
    ]
    connection.execute(delete(rar_intent_monthly).where(rar_intent_monthly.c.month == month))
    if records:
        connection.execute(insert(rar_intent_monthly), records)
    return len(records)


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


def monthly_json(value) -> str:
    return json.dumps(value, default=str)
