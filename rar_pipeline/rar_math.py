"""The RaR arithmetic of rar-domain.md: per-event values, monthly rounding, pressure, trend, scores.

Plain Python on floats and Decimals; the monthly assets and the reference tests both call it.
Sums use `math.fsum`, which is exact and independent of row order, so a month recomputed from the
same events rounds to the same cents whatever order the database returns them in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

TOP_INTENTS = 5
FIX_PACK_INTENTS = 3
ZERO_CLICK_PROXY_SESSIONS = 10_000
TREND_THRESHOLD_PCT = 5.0


@dataclass(frozen=True)
class EventValues:
    ai_sessions: float
    lost_sessions: float
    lost_leads: float
    lost_sales: float
    rar: float
    recoverable: float


def event_values(
    impressions: float,
    share_ai_snippet: float,
    ctr_baseline: float,
    ctr_drop_when_ai: float,
    lead_cr: float,
    close_rate: float,
    avg_gross: float,
    recoverable_share: float,
) -> EventValues:
    """One event's chain, float64, left to right (the SQL in `monthly_sql` does the same operations)."""
    ai_sessions = impressions * share_ai_snippet * ctr_baseline
    lost_sessions = ai_sessions * ctr_drop_when_ai
    lost_leads = lost_sessions * lead_cr
    lost_sales = lost_leads * close_rate
    rar = lost_sales * avg_gross
    return EventValues(ai_sessions, lost_sessions, lost_leads, lost_sales, rar, rar * recoverable_share)


def half_up_whole(value: float) -> int:
    """2.5 -> 3; Python's round() would give 2."""
    return int(math.floor(value + 0.5))


def half_up_cents(value: float) -> Decimal:
    """floor(x × 100 + 0.5) / 100 on the float, returned as an exact Decimal with two places."""
    return Decimal(int(math.floor(value * 100 + 0.5))).scaleb(-2)


@dataclass
class IntentTotal:
    intent: str
    rar: float = 0.0
    recoverable: float = 0.0
    lost_sessions: float = 0.0
    event_count: int = 0


@dataclass
class DealerMonth:
    dealer_id: str
    lost_sessions: int
    lost_leads: int
    lost_sales: Decimal
    rar: Decimal
    recoverable: Decimal
    impressions: int
    event_count: int
    top_losing_intents: list[dict]
    intents: list[IntentTotal] = field(default_factory=list)
    lost_sessions_exact: float = 0.0

    @property
    def recovery_rate(self) -> float | None:
        return float(self.recoverable / self.rar) if self.rar else None

    @property
    def zero_click_rate(self) -> float | None:
        return self.lost_sessions_exact / self.impressions if self.impressions else None


def ranked_intents(intents: Iterable[IntentTotal]) -> list[IntentTotal]:
    """By unrounded RaR descending, ties by intent name ascending."""
    return sorted(intents, key=lambda item: (-item.rar, item.intent))


def dealer_month(
    dealer_id: str,
    impressions: Sequence[int],
    lost_sessions: Sequence[float],
    lost_leads: Sequence[float],
    lost_sales: Sequence[float],
    rar: Sequence[float],
    recoverable: Sequence[float],
    intent_clusters: Sequence[str],
) -> DealerMonth:
    """A dealer's month from its events' per-event values (rounded once, on the sums)."""
    per_intent: dict[str, list[int]] = {}
    for index, intent in enumerate(intent_clusters):
        if intent:
            per_intent.setdefault(intent, []).append(index)
    intents = [
        IntentTotal(
            intent,
            rar=math.fsum(rar[i] for i in rows),
            recoverable=math.fsum(recoverable[i] for i in rows),
            lost_sessions=math.fsum(lost_sessions[i] for i in rows),
            event_count=len(rows),
        )
        for intent, rows in per_intent.items()
    ]
    ranked = ranked_intents(intents)
    total_lost_sessions = math.fsum(lost_sessions)
    return DealerMonth(
        dealer_id=dealer_id,
        lost_sessions=half_up_whole(total_lost_sessions),
        lost_leads=half_up_whole(math.fsum(lost_leads)),
        lost_sales=half_up_cents(math.fsum(lost_sales)),
        rar=half_up_cents(math.fsum(rar)),
        recoverable=half_up_cents(math.fsum(recoverable)),
        impressions=int(sum(impressions)),
        event_count=len(rar),
        top_losing_intents=[{"intent": item.intent, "rar": float(half_up_cents(item.rar))} for item in ranked[:TOP_INTENTS]],
        intents=ranked,
        lost_sessions_exact=total_lost_sessions,
    )


def pressure(rar: Decimal, cap: float) -> float:
    """min(rar / cap, 1) on the rounded monthly RaR."""
    return min(float(rar) / cap, 1.0) if cap > 0 else 1.0


def trend(rar: Decimal, previous_rar: Decimal | None) -> tuple[str, float]:
    """('up' | 'down' | 'stable', pct) against the previous calendar month."""
    if previous_rar is None or previous_rar <= 0:
        return "stable", 0.0
    pct = float((rar - previous_rar) / previous_rar * 100)
    if pct > TREND_THRESHOLD_PCT:
        return "up", pct
    if pct < -TREND_THRESHOLD_PCT:
        return "down", pct
    return "stable", pct


def zero_click_proxy(lost_sessions: int) -> float:
    return lost_sessions / (lost_sessions + ZERO_CLICK_PROXY_SESSIONS)


def _clamp(value: float) -> float:
    return min(max(value, 0.0), 100.0)


@dataclass(frozen=True)
class AdjustedScores:
    aiv: float
    ati: float
    qai: float
    aiv_delta: float
    ati_delta: float
    qai_delta: float


def adjust_scores(aiv: float, ati: float, qai: float, pressure_value: float, trend_value: str) -> AdjustedScores:
    """AIV' = AIV × (1 − 0.04 p), ATI' = ATI × (1 − 0.03 p), QAI' = QAI × 0.98 when trending up; 0..100."""
    new_aiv = _clamp(aiv * (1 - 0.04 * pressure_value))
    new_ati = _clamp(ati * (1 - 0.03 * pressure_value))
    new_qai = _clamp(qai * 0.98 if trend_value == "up" else qai)
    return AdjustedScores(new_aiv, new_ati, new_qai, new_aiv - aiv, new_ati - ati, new_qai - qai)
