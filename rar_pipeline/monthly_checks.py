"""Data checks of one month of the lineage, as plain SQL. Each returns (passed, facts for the UI)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import Connection, and_, func, or_, select

from rar_pipeline.contract import NATURAL_KEY
from rar_pipeline.rar_math import half_up_cents
from rar_pipeline.warehouse.schema import rar_batch_months, rar_events, rar_monthly, rar_pressure, rar_raw_events

CheckOutcome = tuple[bool, dict]


def events_latest_per_key(connection: Connection, month: date, up_to_batch: int | None = None) -> CheckOutcome:
    """One event per natural key, each from the newest batch that carries the key.

    `up_to_batch`: the newest batch the rebuild considered (`EventsSummary.up_to_batch`); later
    batches committed meanwhile are not the rebuild's to include.
    """
    raw = rar_raw_events
    loaded = select(rar_batch_months.c.batch_id).where(rar_batch_months.c.month == month, rar_batch_months.c.kind == "events")
    if up_to_batch is not None:
        loaded = loaded.where(rar_batch_months.c.batch_id <= up_to_batch)
    batches = connection.execute(loaded).scalars().all()
    events = connection.execute(select(func.count()).where(rar_events.c.month == month)).scalar_one()
    if len(batches) == 1:
        # One batch (the usual month): its keys are unique, so every raw row must be an event of it.
        keys = connection.execute(
            select(func.count()).where(raw.c.month == month, raw.c.batch_id == batches[0])
        ).scalar_one()
        current = connection.execute(
            select(func.count()).where(rar_events.c.month == month, rar_events.c.batch_id == batches[0])
        ).scalar_one()
    else:
        newest = (
            select(*(raw.c[name] for name in NATURAL_KEY), func.max(raw.c.batch_id).label("batch_id"))
            .where(raw.c.month == month, raw.c.batch_id.in_(batches or [-1]))
            .group_by(*(raw.c[name] for name in NATURAL_KEY))
            .subquery("newest")
        )
        # One pass: every key, and whether its event exists and comes from the key's newest batch.
        keys, current = connection.execute(
            select(func.count(), func.count(rar_events.c.batch_id))
            .select_from(newest)
            .outerjoin(
                rar_events,
                and_(
                    rar_events.c.month == month,
                    rar_events.c.batch_id == newest.c.batch_id,
                    *(rar_events.c[name] == newest.c[name] for name in NATURAL_KEY),
                ),
            )
        ).one()
    stale = events - current
    return keys == events == current, {"natural_keys": keys, "events": events, "stale_or_extra_events": stale}


def monthly_one_row_per_dealer(connection: Connection, month: date) -> CheckOutcome:
    """Exactly the dealers with events this month have a row (no missing, no stale rows)."""
    # One pass over the events; the few thousand dealer ids are compared here.
    with_events = set(
        connection.execute(select(rar_events.c.dealer_id).where(rar_events.c.month == month).group_by(rar_events.c.dealer_id)).scalars()
    )
    rows = connection.execute(select(rar_monthly.c.dealer_id).where(rar_monthly.c.month == month)).scalars().all()
    stale = sum(1 for dealer in rows if dealer not in with_events)
    passed = len(rows) == len(set(rows)) == len(with_events) and stale == 0
    return passed, {"dealers_with_events": len(with_events), "monthly_rows": len(rows), "stale_rows": stale}


def monthly_reconciles(connection: Connection, month: date) -> CheckOutcome:
    """Σ dealer RaR equals the rounded Σ event RaR, within half a cent per dealer."""
    dealer_total, dealers = connection.execute(
        select(func.coalesce(func.sum(rar_monthly.c.rar), 0), func.count()).where(rar_monthly.c.month == month)
    ).one()
    event_total = connection.execute(select(func.coalesce(func.sum(rar_events.c.rar), 0.0)).where(rar_events.c.month == month)).scalar_one()
    difference = abs(Decimal(dealer_total) - half_up_cents(float(event_total)))
    tolerance = Decimal("0.005") * dealers + Decimal("0.01")
    return difference <= tolerance, {
        "dealer_rar_total": float(dealer_total),
        "event_rar_total": round(float(event_total), 4),
        "difference": float(difference),
        "tolerance": float(tolerance),
    }


def recoverable_within_rar(connection: Connection, month: date) -> CheckOutcome:
    bad = connection.execute(
        select(func.count()).where(
            rar_monthly.c.month == month, or_(rar_monthly.c.recoverable < 0, rar_monthly.c.recoverable > rar_monthly.c.rar)
        )
    ).scalar_one()
    return bad == 0, {"rows_outside_0_to_rar": bad}


def top_intents_sorted(connection: Connection, month: date) -> CheckOutcome:
    bad = []
    for dealer_id, top in connection.execute(
        select(rar_monthly.c.dealer_id, rar_monthly.c.top_losing_intents).where(rar_monthly.c.month == month)
    ):
        amounts = [item["rar"] for item in top]
        if len(top) > 5 or amounts != sorted(amounts, reverse=True):
            bad.append(dealer_id)
    return not bad, {"dealers_with_bad_top_intents": len(bad), "examples": ", ".join(bad[:5]) or "none"}


def pressure_in_range(connection: Connection, month: date) -> CheckOutcome:
    bad = connection.execute(
        select(func.count()).where(rar_pressure.c.month == month, or_(rar_pressure.c.pressure < 0, rar_pressure.c.pressure > 1))
    ).scalar_one()
    return bad == 0, {"rows_outside_0_1": bad}
