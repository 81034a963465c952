"""Read-side queries over the ledger: reconciliation, totals and the operator's status view."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date

from sqlalchemy import Connection, func, select

from rar_pipeline.months import add_months
from rar_pipeline.warehouse.schema import (
    rar_batch_months,
    rar_batches,
    rar_raw_dealer_scores,
    rar_raw_events,
    rar_rejected_rows,
)

LEDGER_COLUMNS = ("batch_id", "file_name", "status", "rows_read", "rows_accepted", "rows_rejected", "reason", "loaded_at")


def reconcile_batches(connection: Connection, batch_ids: list[int]) -> list[str]:
    """Problems where a loaded batch's ledger row disagrees with itself or with the tables (empty = fine)."""
    if not batch_ids:
        return []
    raw_counts: dict[int, int] = {}
    for raw in (rar_raw_events, rar_raw_dealer_scores):
        raw_counts.update(
            connection.execute(
                select(raw.c.batch_id, func.count()).where(raw.c.batch_id.in_(batch_ids)).group_by(raw.c.batch_id)
            ).all()
        )
    rejected_counts = dict(
        connection.execute(
            select(rar_rejected_rows.c.batch_id, func.count())
            .where(rar_rejected_rows.c.batch_id.in_(batch_ids))
            .group_by(rar_rejected_rows.c.batch_id)
        ).all()
    )
    problems = []
    ledger = connection.execute(select(rar_batches).where(rar_batches.c.batch_id.in_(batch_ids))).all()
    for batch in ledger:
        raw, rejected = raw_counts.get(batch.batch_id, 0), rejected_counts.get(batch.batch_id, 0)
        if batch.status != "loaded":
            if raw or rejected:
                problems.append(f"batch {batch.batch_id} is {batch.status} but has {raw} raw and {rejected} rejected rows")
            continue
        if batch.rows_read != batch.rows_accepted + batch.rows_rejected:
            problems.append(
                f"batch {batch.batch_id}: read {batch.rows_read} != accepted {batch.rows_accepted} + rejected {batch.rows_rejected}"
            )
        if raw != batch.rows_accepted:
            problems.append(f"batch {batch.batch_id}: ledger says {batch.rows_accepted} accepted, table has {raw}")
        if rejected != batch.rows_rejected:
            problems.append(f"batch {batch.batch_id}: ledger says {batch.rows_rejected} rejected, table has {rejected}")
    return problems


def loaded_row_total(connection: Connection) -> int:
    """Rows in rar_raw_events, from the ledger (a count(*) of the table would scan it)."""
    total = connection.execute(
        select(func.coalesce(func.sum(rar_batches.c.rows_accepted), 0)).where(rar_batches.c.status == "loaded")
    ).scalar_one()
    return int(total)


def _batch_dict(row) -> dict:
    values = {name: row._mapping[name] for name in LEDGER_COLUMNS}
    values["loaded_at"] = values["loaded_at"].isoformat() if values["loaded_at"] else None
    values["sha256"] = row.sha256
    values["detail"] = row.detail
    values["rejected_by_reason"] = json.loads(row.rejected_by_reason or "{}")
    values["months"] = json.loads(row.months or "[]")
    values["unknown_columns"] = json.loads(row.unknown_columns or "[]")
    return values


def latest_batches(connection: Connection, limit: int = 20) -> list[dict]:
    rows = connection.execute(select(rar_batches).order_by(rar_batches.c.batch_id.desc()).limit(limit)).all()
    return [_batch_dict(row) for row in rows]


def batch_for_delivery(connection: Connection, file_name: str, sha256: str) -> dict | None:
    """The newest ledger row for a file delivered under `file_name` with these bytes."""
    row = connection.execute(
        select(rar_batches)
        .where(rar_batches.c.sha256 == sha256, rar_batches.c.file_name == file_name)
        .order_by(rar_batches.c.batch_id.desc())
        .limit(1)
    ).first()
    return _batch_dict(row) if row else None


def rejected_by_reason(connection: Connection) -> dict[str, int]:
    """Rejected rows of loaded files, by reason code, over the whole ledger."""
    rows = connection.execute(
        select(rar_rejected_rows.c.reason, func.count()).group_by(rar_rejected_rows.c.reason).order_by(func.count().desc())
    ).all()
    return {reason: count for reason, count in rows}


def file_rejects_by_reason(connection: Connection) -> dict[str, int]:
    rows = connection.execute(
        select(rar_batches.c.reason, func.count()).where(rar_batches.c.status == "rejected").group_by(rar_batches.c.reason)
    ).all()
    return {reason: count for reason, count in rows}


def newest_batch_id(connection: Connection) -> int:
    return connection.execute(select(func.coalesce(func.max(rar_batches.c.batch_id), 0))).scalar_one()


@dataclass(frozen=True)
class RefreshRequest:
    month: date
    scores_only: bool  # only dealer scores changed: the score adjustments alone need a rebuild
    up_to_batch: int


def refresh_plan(connection: Connection, after_batch_id: int, last_month: date) -> tuple[list[RefreshRequest], int]:
    """Months to rebuild for the batches loaded after `after_batch_id`, and the new cursor.

    Late data for month M also rebuilds M+1 when M+1 has data, since M+1's trend compares with M.
    """
    newest = newest_batch_id(connection)
    if newest <= after_batch_id:
        return [], after_batch_id
    touched = connection.execute(
        select(rar_batch_months.c.month, rar_batch_months.c.kind, func.max(rar_batch_months.c.batch_id))
        .join(rar_batches, rar_batches.c.batch_id == rar_batch_months.c.batch_id)
        .where(rar_batch_months.c.batch_id > after_batch_id, rar_batches.c.status == "loaded")
        .group_by(rar_batch_months.c.month, rar_batch_months.c.kind)
    ).all()
    events: dict[date, int] = {}
    scores: dict[date, int] = {}
    for month, kind, batch in touched:
        (events if kind == "events" else scores)[month] = batch
    with_data = set(
        connection.execute(select(rar_batch_months.c.month).where(rar_batch_months.c.kind == "events").distinct()).scalars()
    )
    for month, batch in list(events.items()):
        following = add_months(month, 1)
        if following in with_data and following <= last_month:
            events[following] = max(batch, events.get(following, 0))
    requests = [RefreshRequest(month, False, batch) for month, batch in events.items()]
    requests += [RefreshRequest(month, True, batch) for month, batch in scores.items() if month not in events]
    return sorted(requests, key=lambda request: (request.month, request.scores_only)), newest
