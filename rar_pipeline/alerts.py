"""Alert candidates, P0 rule, fix packs and the Slack digest (rar-domain.md, Alerts). No Dagster here.

Candidates are written into `rar_alert_outbox` in the transaction that writes `rar_pressure`, each
with a unique dedupe key, so reruns and recomputes never alert twice. Delivery is separate (the
Slack op) and only ever changes the outbox.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Connection, Engine, and_, func, insert, or_, select, update

from rar_pipeline.rar_math import FIX_PACK_INTENTS
from rar_pipeline.warehouse.engine import write_connection
from rar_pipeline.warehouse.schema import dealer_scores, rar_alert_outbox, rar_monthly, rar_pressure

P0_PRESSURE = 0.6
P0_ZERO_CLICK_COVERAGE = 0.45
P0_SCHEMA_COVERAGE = 0.70
PLAYBOOKS = {
    "service_price": ("Add FAQ schema", "Sync GBP", "Fix schema"),
    "hours": ("Update business hours", "Sync GBP", "Add structured data"),
    "oil_change": ("Create service page", "Add FAQ", "Schema markup"),
    "tire_rotation": ("Create service page", "Add FAQ", "Schema markup"),
    "dealer_near_me": ("Optimize GBP", "Location schema", "NAP consistency"),
}
DEFAULT_PLAYBOOK = ("Add FAQ", "Sync GBP", "Fix schema")
# Slack's limits for one message.
MAX_BLOCKS = 50
MAX_SECTION_CHARS = 3000
# A row claimed by a delivery that never reported back (a killed run) is retried after this.
CLAIM_TIMEOUT = timedelta(minutes=15)


def p0_status(pressure: float, zero_click_coverage: float | None, schema_coverage: float | None) -> str:
    """'true' | 'false' | 'unknown': pressure > 0.6 AND zero-click coverage > 0.45 AND schema coverage < 0.70."""
    if not pressure > P0_PRESSURE or zero_click_coverage is None or not zero_click_coverage > P0_ZERO_CLICK_COVERAGE:
        return "false"
    if schema_coverage is None:
        return "unknown"  # never silently true
    return "true" if schema_coverage < P0_SCHEMA_COVERAGE else "false"


def alert_level(pressure: float, threshold: float) -> float:
    """The pressure level an alert is for: tenths, never below the threshold (0.65 -> 0.6, 0.82 -> 0.8)."""
    return max(threshold, math.floor(pressure * 10 + 1e-9) / 10)


def fix_pack(top_losing_intents: list[dict]) -> list[dict]:
    return [
        {"intent": item["intent"], "rar": item["rar"], "actions": list(PLAYBOOKS.get(item["intent"], DEFAULT_PLAYBOOK))}
        for item in top_losing_intents[:FIX_PACK_INTENTS]
    ]


def write_alert_candidates(connection: Connection, month: date, threshold: float, now: datetime) -> int:
    """Queue alerts for the month's dealers at or above the threshold that were not alerted at that level.

    Runs inside the pressure rebuild's transaction (and its month lock).
    """
    rows = connection.execute(
        select(
            rar_pressure.c.dealer_id, rar_pressure.c.pressure, rar_pressure.c.rar, rar_pressure.c.trend,
            rar_pressure.c.zero_click_proxy, rar_monthly.c.recoverable, rar_monthly.c.top_losing_intents,
            dealer_scores.c.zero_click_coverage, dealer_scores.c.schema_coverage,
        )  # fmt: skip
        .join(rar_monthly, and_(rar_monthly.c.dealer_id == rar_pressure.c.dealer_id, rar_monthly.c.month == rar_pressure.c.month))
        .outerjoin(dealer_scores, and_(dealer_scores.c.dealer_id == rar_pressure.c.dealer_id, dealer_scores.c.month == rar_pressure.c.month))
        # P0 is an alert condition of its own (pressure > 0.6), also under a higher threshold.
        .where(rar_pressure.c.month == month, or_(rar_pressure.c.pressure >= threshold, rar_pressure.c.pressure > P0_PRESSURE))
    ).all()
    if not rows:
        return 0
    alerted = {
        (dealer, kind): level
        for dealer, kind, level in connection.execute(
            select(rar_alert_outbox.c.dealer_id, rar_alert_outbox.c.kind, func.max(rar_alert_outbox.c.level))
            .where(rar_alert_outbox.c.month == month)
            .group_by(rar_alert_outbox.c.dealer_id, rar_alert_outbox.c.kind)
        )
    }
    records = []
    for row in rows:
        level = alert_level(row.pressure, threshold)
        zero_click = row.zero_click_coverage if row.zero_click_coverage is not None else row.zero_click_proxy
        p0 = p0_status(row.pressure, zero_click, row.schema_coverage)
        common = {
            "dealer_id": row.dealer_id, "month": month, "level": level, "pressure": row.pressure, "rar": row.rar,
            "recoverable": row.recoverable, "trend": row.trend, "p0": p0, "status": "pending", "created_at": now,
        }  # fmt: skip
        if row.pressure >= threshold and alerted.get((row.dealer_id, "pressure"), -1.0) < level:
            key = f"pressure:{row.dealer_id}:{month.isoformat()}:{level:.2f}"
            records.append({**common, "kind": "pressure", "dedupe_key": key, "fix_pack": []})
        if p0 == "true" and (row.dealer_id, "p0") not in alerted:
            key = f"p0:{row.dealer_id}:{month.isoformat()}"
            p0_level = alert_level(row.pressure, P0_PRESSURE)
            records.append({**common, "kind": "p0", "level": p0_level, "dedupe_key": key, "fix_pack": fix_pack(row.top_losing_intents)})
    if records:
        connection.execute(insert(rar_alert_outbox), records)
    return len(records)


# The digest -------------------------------------------------------------------------------------------
def escape(text: str) -> str:
    """Slack mrkdwn control characters; also defuses `<!channel>`-style mentions in data."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass
class DealerAlert:
    dealer_id: str
    month: date
    pressure: float
    rar: Decimal
    recoverable: Decimal
    trend: str
    p0: str
    fix_pack: list[dict] = field(default_factory=list)
    alert_ids: list[int] = field(default_factory=list)

    @property
    def is_p0(self) -> bool:
        return self.p0 == "true"

    def line(self, with_month: bool = False) -> str:
        who = f"{escape(self.dealer_id)} ({self.month:%Y-%m})" if with_month else escape(self.dealer_id)
        text = (
            f"{who}: ${self.rar:,.0f} at risk; recoverable ~ ${self.recoverable:,.0f} "
            f"(pressure {self.pressure:.2f}, trend {escape(self.trend)})"
        )
        if self.is_p0:
            text = "P0 " + text
        elif self.p0 == "unknown":
            text += " — P0 unknown: schema coverage not measured"
        return text

    def fix_pack_text(self) -> str:
        return "\n".join(
            f"• {escape(item['intent'])} (${item['rar']:,.0f}): {escape(', '.join(item['actions']))}" for item in self.fix_pack
        )


def group_by_dealer(rows) -> list[DealerAlert]:
    """One entry per dealer × month (a dealer can have a pressure and a P0 alert); P0s first, then by pressure."""
    grouped: dict[tuple[str, date], list] = defaultdict(list)
    for row in rows:
        grouped[(row.dealer_id, row.month)].append(row)
    alerts = []
    for group in grouped.values():
        top = max(group, key=lambda row: row.pressure)
        p0_rows = [row for row in group if row.kind == "p0"]
        alerts.append(
            DealerAlert(
                top.dealer_id, top.month, top.pressure, Decimal(top.rar), Decimal(top.recoverable), top.trend,
                "true" if p0_rows else top.p0, p0_rows[-1].fix_pack if p0_rows else [], [row.alert_id for row in group],
            )  # fmt: skip
        )
    return sorted(alerts, key=lambda a: (not a.is_p0, -a.pressure, a.dealer_id))


def render_digest(alerts: list[DealerAlert]) -> dict:
    """One Slack message (Block Kit plus a plain-text fallback) within Slack's limits."""
    months = sorted({alert.month for alert in alerts})
    p0_count = sum(alert.is_p0 for alert in alerts)
    title = f"Revenue at Risk: {len(alerts)} " + ("dealer needs attention" if len(alerts) == 1 else "dealers need attention")
    if p0_count:
        title += f" ({p0_count} P0)"
    subtitle = "Months: " + ", ".join(f"{month:%Y-%m}" for month in months)
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": subtitle}]},
    ]
    room = MAX_BLOCKS - len(blocks) - 1  # one block kept for "+K more dealers"
    shown = alerts if len(alerts) <= room + 1 else alerts[:room]
    several_months = len(months) > 1  # then each line says its month
    for alert in shown:
        line = alert.line(several_months)
        text = f"*{line}*" if alert.is_p0 else line
        if alert.is_p0 and alert.fix_pack:
            text += "\nFix pack:\n" + alert.fix_pack_text()
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cap(text, MAX_SECTION_CHARS)}})
    hidden = len(alerts) - len(shown)
    if hidden:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"+{hidden} more dealers"}]})
    lines = [title] + [alert.line(several_months) for alert in alerts[:20]]
    if len(alerts) > 20:
        lines.append(f"+{len(alerts) - 20} more dealers")
    return {"text": _cap("\n".join(lines), MAX_SECTION_CHARS), "blocks": blocks}


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Delivery ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SendResult:
    ok: bool
    attempts: int
    error: str | None = None  # already redacted by the transport


@dataclass
class DeliveryReport:
    dealers: int = 0
    alerts: int = 0
    status: str = "nothing_pending"  # nothing_pending | sent | failed | dry_run
    digest: dict | None = None
    error: str | None = None


def deliver_pending(
    engine: Engine, send: Callable[[dict], SendResult] | None, now: datetime, month: date | None = None
) -> DeliveryReport:
    """Send pending (and earlier failed) alerts as one digest; `send=None` is a dry run.

    Rows are claimed first (status `sending`) in a short transaction, so two deliveries never send
    the same alert and no transaction stays open while Slack is called.
    """
    outbox = rar_alert_outbox
    waiting = or_(
        outbox.c.status.in_(("pending", "failed")),
        and_(outbox.c.status == "sending", outbox.c.delivered_at < now - CLAIM_TIMEOUT),
    )
    if month is not None:
        waiting = and_(waiting, outbox.c.month == month)
    with write_connection(engine) as connection, connection.begin():
        # FOR UPDATE (PostgreSQL): a concurrent delivery waits, then re-reads the rows as `sending` and skips them.
        rows = connection.execute(select(outbox).where(waiting).order_by(outbox.c.alert_id).with_for_update()).all()
        if not rows:
            return DeliveryReport()
        ids = [row.alert_id for row in rows]
        # delivered_at doubles as the claim time while a row is `sending`.
        connection.execute(update(outbox).where(outbox.c.alert_id.in_(ids)).values(status="sending", delivered_at=now))
    alerts = group_by_dealer(rows)
    digest = render_digest(alerts)
    report = DeliveryReport(dealers=len(alerts), alerts=len(ids), digest=digest)
    if send is None:
        report.status = "dry_run"
        values = {"status": "dry_run", "delivered_at": now}
    else:
        result = send(digest)
        report.status, report.error = ("sent", None) if result.ok else ("failed", result.error)
        values = {
            "status": report.status,
            "attempts": outbox.c.attempts + result.attempts,
            "last_error": result.error,
            "delivered_at": now if result.ok else None,
        }
    with write_connection(engine) as connection, connection.begin():
        connection.execute(update(outbox).where(outbox.c.alert_id.in_(ids)).values(**values))
    return report


def outbox_rows(connection: Connection, limit: int = 50) -> list[dict]:
    rows = connection.execute(select(rar_alert_outbox).order_by(rar_alert_outbox.c.alert_id.desc()).limit(limit)).all()
    return [
        {
            "alertId": row.alert_id, "kind": row.kind, "dealerId": row.dealer_id, "month": row.month.isoformat(),
            "level": row.level, "pressure": row.pressure, "p0": row.p0, "status": row.status,
            "attempts": row.attempts, "lastError": row.last_error,
        }  # fmt: skip
        for row in rows
    ]


def month_alerts(connection: Connection, month: date) -> tuple[dict[str, int], str]:
    """(alerts per status, the digest text they make) for one month, for the command line."""
    rows = connection.execute(select(rar_alert_outbox).where(rar_alert_outbox.c.month == month)).all()
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return counts, render_digest(group_by_dealer(rows))["text"] if rows else ""


def failure_text(job: str, partition: str | None, step: str | None, error: str, link: str | None) -> str:
    """The Slack message for a failed run (one per run)."""
    where = f"{job}" + (f" [{partition}]" if partition else "") + (f", step {step}" if step else "")
    lines = (error or "").strip().splitlines()
    first_line = lines[0][:300] if lines else "unknown error"  # a blank error has no first line
    # "dagster._core.definitions.events.Failure: the reason" -> "the reason"
    first_line = re.sub(r"^[A-Za-z_][\w.]*(Error|Failure|Exception): ", "", first_line) or first_line
    text = f":rotating_light: RaR pipeline run failed: {escape(where)}\n{escape(first_line)}"
    return text + (f"\n<{link}|Open the run>" if link else "")
