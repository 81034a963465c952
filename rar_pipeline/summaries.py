"""Read-side views of the monthly tables, in the old API's shapes (for the CLI and, later, HTTP)."""

from __future__ import annotations

from datetime import date, timezone

from sqlalchemy import Connection, select

from rar_pipeline.warehouse.schema import rar_monthly, rar_pressure, rar_score_adjustments


class NotFound(LookupError):
    """The dealer or month has no data; the message says what to try instead."""


def dealer_summary(connection: Connection, dealer_id: str, month: date | None = None) -> dict:
    """`dealerId, month, lostSessions, lostLeads, lostSales, rar, recoverable, topLosingIntents, eventCount, computedAt`."""
    query = select(rar_monthly).where(rar_monthly.c.dealer_id == dealer_id)
    query = query.where(rar_monthly.c.month == month) if month else query.order_by(rar_monthly.c.month.desc()).limit(1)
    row = connection.execute(query).first()
    if row is None:
        known = connection.execute(select(rar_monthly.c.month).where(rar_monthly.c.dealer_id == dealer_id).limit(1)).first()
        if known is None:
            raise NotFound(f"no RaR data for dealer {dealer_id!r}; check the id (rar-pipeline status lists loaded batches)")
        raise NotFound(f"dealer {dealer_id!r} has no RaR data for {month:%Y-%m}; omit --month for the latest month")
    return {
        "dealerId": row.dealer_id,
        "month": row.month.isoformat(),
        "lostSessions": row.lost_sessions,
        "lostLeads": row.lost_leads,
        "lostSales": float(row.lost_sales),
        "rar": float(row.rar),
        "recoverable": float(row.recoverable),
        "topLosingIntents": row.top_losing_intents,
        "eventCount": row.event_count,
        # SQLite hands back naive datetimes; every timestamp here is UTC.
        "computedAt": row.computed_at.replace(tzinfo=row.computed_at.tzinfo or timezone.utc).isoformat(),
    }


def dealer_pressure(connection: Connection, dealer_id: str) -> dict:
    """The dealer's latest month's pressure: `dealerId, month, pressure, trend`."""
    row = connection.execute(
        select(rar_pressure).where(rar_pressure.c.dealer_id == dealer_id).order_by(rar_pressure.c.month.desc()).limit(1)
    ).first()
    if row is None:
        raise NotFound(f"no pressure computed for dealer {dealer_id!r}; check the id or run the monthly job")
    return {"dealerId": row.dealer_id, "month": row.month.isoformat(), "pressure": row.pressure, "trend": row.trend}


def dealer_adjustment(connection: Connection, dealer_id: str, month: date) -> dict | None:
    """The dealer's score adjustment for the month, or None without base scores."""
    row = connection.execute(
        select(rar_score_adjustments).where(
            rar_score_adjustments.c.dealer_id == dealer_id, rar_score_adjustments.c.month == month
        )
    ).first()
    if row is None:
        return None
    return {
        "dealerId": row.dealer_id,
        "month": row.month.isoformat(),
        "pressure": row.pressure,
        "trend": row.trend,
        **{f"{name}": getattr(row, name) for name in ("aiv", "ati", "qai")},
        **{f"{name}Adjusted": getattr(row, f"{name}_adjusted") for name in ("aiv", "ati", "qai")},
        **{f"{name}Delta": getattr(row, f"{name}_delta") for name in ("aiv", "ati", "qai")},
    }
