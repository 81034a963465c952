"""The RaR arithmetic of rar-domain.md, as plain unit tests of `rar_pipeline.rar_math`."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from rar_pipeline import rar_math
from rar_pipeline.rar_math import (
    adjust_scores,
    dealer_month,
    event_values,
    half_up_cents,
    half_up_whole,
    pressure,
    trend,
    zero_click_proxy,
)
from rar_pipeline.seed import DEMO_MONTH, demo_rows


def month_of(events: list[dict], dealer_id: str = "dealer") -> rar_math.DealerMonth:
    """A dealer month from event dicts (the CSV fields), through event_values + dealer_month."""
    values = [
        event_values(
            e["impressions"], e["share"], e.get("ctr", 0.055), e["drop"], e.get("lead", 0.04),
            e.get("close", 0.18), e["gross"], e.get("recoverable_share", 0.45),
        )  # fmt: skip
        for e in events
    ]
    return dealer_month(
        dealer_id,
        [e["impressions"] for e in events],
        [v.lost_sessions for v in values],
        [v.lost_leads for v in values],
        [v.lost_sales for v in values],
        [v.rar for v in values],
        [v.recoverable for v in values],
        [e.get("intent", "") for e in events],
    )


def demo_dealer_months() -> dict[str, rar_math.DealerMonth]:
    by_dealer: dict[str, list[dict]] = {}
    for dealer, month, channel, impressions, share, ctr, drop, lead, close, gross, rec, intent in demo_rows():
        assert (month, channel) == (DEMO_MONTH.strftime("%Y-%m"), "google_organic")
        by_dealer.setdefault(dealer, []).append(
            dict(impressions=impressions, share=share, ctr=ctr, drop=drop, lead=lead, close=close, gross=gross,
                 recoverable_share=rec, intent=intent)  # fmt: skip
        )
    return {dealer: month_of(events, dealer) for dealer, events in by_dealer.items()}


# The three rooftops of rar-domain.md ----------------------------------------------------------------
ROOFTOPS = {
    "germain-toyota-naples": (5949, 238, "42.84", "89954.17", "40479.38"),
    "lou-grubbs-motors": (4677, 187, "33.68", "65667.12", "29550.20"),
    "demo-rooftop": (4422, 177, "31.84", "65272.78", "29372.75"),
}


@pytest.mark.parametrize("dealer_id", sorted(ROOFTOPS))
def test_the_three_rooftops_exact_numbers(dealer_id):
    lost_sessions, lost_leads, lost_sales, rar, recoverable = ROOFTOPS[dealer_id]
    result = demo_dealer_months()[dealer_id]
    assert result.dealer_id == dealer_id
    assert result.lost_sessions == lost_sessions and isinstance(result.lost_sessions, int)
    assert result.lost_leads == lost_leads and isinstance(result.lost_leads, int)
    # Exact decimals with two places, not floats that print the same.
    assert result.lost_sales == Decimal(lost_sales) and str(result.lost_sales) == lost_sales
    assert result.rar == Decimal(rar) and str(result.rar) == rar
    assert result.recoverable == Decimal(recoverable) and str(result.recoverable) == recoverable
    assert result.event_count == 5
    assert len(result.top_losing_intents) == 5


def test_germain_top_intents_with_cents():
    top = demo_dealer_months()["germain-toyota-naples"].top_losing_intents
    assert top == [
        {"intent": "service_price", "rar": 30561.30},
        {"intent": "hours", "rar": 19958.40},
        {"intent": "oil_change", "rar": 18770.88},
        {"intent": "dealer_near_me", "rar": 11692.30},
        {"intent": "tire_rotation", "rar": 8971.30},
    ]


def test_rooftop_intents_rank_by_rar_not_by_impressions():
    # demo-rooftop: oil_change (140k impressions, high share and drop) beats hours (150k).
    top = [item["intent"] for item in demo_dealer_months()["demo-rooftop"].top_losing_intents]
    assert top == ["service_price", "oil_change", "hours", "dealer_near_me", "tire_rotation"]


def test_one_event_chain_left_to_right():
    # germain service_price: 300000 × .35 × .055 = 5775 AI sessions; × .35 = 2021.25 lost ...
    values = event_values(300000, 0.35, 0.055, 0.35, 0.04, 0.18, 2100, 0.45)
    assert values.ai_sessions == 300000 * 0.35 * 0.055
    assert values.ai_sessions == pytest.approx(5775)
    assert values.lost_sessions == pytest.approx(2021.25)
    assert values.lost_leads == pytest.approx(80.85)
    assert values.lost_sales == pytest.approx(14.553)
    assert values.rar == pytest.approx(30561.30)
    assert values.recoverable == pytest.approx(30561.30 * 0.45)
    # Float64, in exactly the spec's order (the SQL does the same operations).
    assert values.rar == ((((300000 * 0.35) * 0.055) * 0.35) * 0.04) * 0.18 * 2100


def test_monthly_values_are_rounded_once_on_the_sums_not_per_event():
    # Three events of 0.004 each: per-event rounding would give 0.00, the sum rounds to 0.01.
    events = [dict(impressions=1, share=1.0, ctr=1.0, drop=1.0, lead=1.0, close=1.0, gross=0.004, recoverable_share=1.0,
                   intent=f"i{n}") for n in range(3)]  # fmt: skip
    result = month_of(events)
    assert result.rar == Decimal("0.01")
    assert sum(half_up_cents(v) for v in [0.004] * 3) == Decimal("0.00")
    # Lost sessions: 3 × 0.4 → 1.2 → 1 (per-event rounding would give 0).
    sessions = month_of([dict(impressions=1, share=1.0, ctr=1.0, drop=0.4, gross=1.0, intent="")] * 3)
    assert sessions.lost_sessions == 1


# Half-up rounding ------------------------------------------------------------------------------------
def test_half_up_cents_of_the_spec_example():
    assert 13752.585 * 100 == 1375258.5  # the float is exactly on the half cent after ×100
    assert half_up_cents(13752.585) == Decimal("13752.59")
    assert round(13752.585, 2) == 13752.58  # what the old code's round() gave


@pytest.mark.parametrize(
    "value, expected",
    [
        (13752.585, "13752.59"),
        (0.125, "0.13"),  # round() → 0.12 (banker's)
        (2.675, "2.68"),  # 267.5 after ×100; round(2.675, 2) → 2.67
        (0.005, "0.01"),
        (0.045, "0.05"),  # 4.5 after ×100; round(0.045, 2) → 0.04
        (1.015, "1.01"),  # 101.49999999999999 after ×100: the float is below the half
        (0.0, "0.00"),
        (1e-9, "0.00"),
        (99.994999, "99.99"),
        (123456789.125, "123456789.13"),
        # On the float x × 100, not on the decimal literal: 1.005 × 100 = 100.49999999999999.
        (1.005, "1.00"),
    ],
)
def test_half_up_cents(value, expected):
    result = half_up_cents(value)
    assert result == Decimal(expected)
    assert result.as_tuple().exponent == -2  # always two places
    assert result == Decimal(math.floor(value * 100 + 0.5)) / 100


@pytest.mark.parametrize("value", [0.125, 2.675, 13752.585, 0.045, 0.015, 1.125, 8.125])
def test_cases_where_python_round_differs_from_half_up(value):
    assert float(half_up_cents(value)) != round(value, 2)


@pytest.mark.parametrize(
    "value, expected", [(2.5, 3), (0.5, 1), (1.5, 2), (3.5, 4), (2.4999, 2), (5948.6, 5949), (0.0, 0), (237.5, 238)]
)
def test_half_up_whole(value, expected):
    assert half_up_whole(value) == expected and isinstance(half_up_whole(value), int)


def test_half_up_whole_differs_from_round_on_even_halves():
    assert round(2.5) == 2 and half_up_whole(2.5) == 3
    assert round(0.5) == 0 and half_up_whole(0.5) == 1


# Top losing intents -----------------------------------------------------------------------------------
def rar_event(intent: str, rar: float, channel_count: int = 1) -> list[dict]:
    """Events whose RaR is exactly `rar` split over `channel_count` channels (all other rates 1)."""
    return [
        dict(impressions=1, share=1.0, ctr=1.0, drop=1.0, lead=1.0, close=1.0, gross=rar / channel_count,
             recoverable_share=0.5, intent=intent)  # fmt: skip
        for _ in range(channel_count)
    ]


def test_top_intents_ties_broken_by_name_ascending():
    events = rar_event("zeta", 100.0) + rar_event("alpha", 100.0) + rar_event("mid", 100.0) + rar_event("big", 150.0)
    top = month_of(events).top_losing_intents
    assert [item["intent"] for item in top] == ["big", "alpha", "mid", "zeta"]


def test_top_intents_sorted_by_unrounded_sum():
    # 10.004 and 10.001 both round to 10.00; the unrounded sums decide the order, then the name would.
    events = rar_event("a_smaller", 10.001) + rar_event("b_bigger", 10.004)
    top = month_of(events).top_losing_intents
    assert [item["intent"] for item in top] == ["b_bigger", "a_smaller"]
    assert [item["rar"] for item in top] == [10.0, 10.0]


def test_at_most_five_intents_but_the_full_breakdown_is_kept():
    events = [e for n in range(8) for e in rar_event(f"intent{n}", 100.0 + n)]
    result = month_of(events)
    assert [item["intent"] for item in result.top_losing_intents] == [f"intent{n}" for n in (7, 6, 5, 4, 3)]
    assert [intent.intent for intent in result.intents] == [f"intent{n}" for n in range(7, -1, -1)]
    assert result.event_count == 8


def test_intents_sum_over_channels():
    events = rar_event("hours", 30.0, channel_count=3) + rar_event("oil_change", 50.0)
    result = month_of(events)
    assert result.top_losing_intents == [{"intent": "oil_change", "rar": 50.0}, {"intent": "hours", "rar": 30.0}]
    hours = next(item for item in result.intents if item.intent == "hours")
    assert hours.event_count == 3 and hours.rar == pytest.approx(30.0)


def test_events_without_intent_count_in_totals_but_not_in_intents():
    events = rar_event("", 1000.0) + rar_event("hours", 10.0)
    result = month_of(events)
    assert result.rar == Decimal("1010.00")
    assert result.recoverable == Decimal("505.00")
    assert result.event_count == 2
    assert result.top_losing_intents == [{"intent": "hours", "rar": 10.0}]
    assert [item.intent for item in result.intents] == ["hours"]


def test_only_events_without_intent_give_an_empty_top_list():
    result = month_of(rar_event("", 12.5))
    assert result.top_losing_intents == [] and result.intents == []
    assert result.rar == Decimal("12.50")


def test_intent_rar_in_top_list_is_cents_half_up():
    top = month_of(rar_event("hours", 0.125)).top_losing_intents
    assert top == [{"intent": "hours", "rar": 0.13}]


# Ratios ------------------------------------------------------------------------------------------------
def test_recovery_and_zero_click_rates():
    result = demo_dealer_months()["germain-toyota-naples"]
    assert result.recovery_rate == pytest.approx(40479.38 / 89954.17)
    assert result.zero_click_rate == pytest.approx(result.lost_sessions_exact / 945000)
    assert result.impressions == 300000 + 250000 + 180000 + 120000 + 95000


def test_ratios_are_none_on_zero_denominators():
    no_impressions = month_of([dict(impressions=0, share=0.5, drop=0.5, gross=2000, intent="hours")])
    assert no_impressions.rar == Decimal("0.00")
    assert no_impressions.recovery_rate is None
    assert no_impressions.zero_click_rate is None
    # Impressions but no RaR (avgGross 0): zero-click rate is defined, recovery rate is not.
    no_gross = month_of([dict(impressions=1000, share=0.5, drop=0.5, gross=0, intent="hours")])
    assert no_gross.rar == Decimal("0.00") and no_gross.recovery_rate is None
    assert no_gross.zero_click_rate == pytest.approx(1000 * 0.5 * 0.055 * 0.5 / 1000)


def test_recovery_rate_below_half_a_cent_of_rar_is_none():
    # RaR rounds to 0.00: recoverable / rar would divide by zero.
    tiny = month_of(rar_event("hours", 0.004))
    assert tiny.rar == Decimal("0.00") and tiny.recovery_rate is None


def test_zero_click_proxy():
    assert zero_click_proxy(0) == 0.0
    assert zero_click_proxy(10_000) == 0.5
    assert zero_click_proxy(5949) == pytest.approx(5949 / 15949)


# Pressure ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rar, cap, expected",
    [
        ("45000", 100_000, 0.45),
        ("89954.17", 100_000, 0.8995417),
        ("0", 100_000, 0.0),
        ("100000", 100_000, 1.0),
        ("100000.01", 100_000, 1.0),  # capped
        ("250000", 100_000, 1.0),
        ("45000", 50_000, 0.9),  # cap is configurable
        ("45000", 40_000, 1.0),
    ],
)
def test_pressure(rar, cap, expected):
    assert pressure(Decimal(rar), cap) == pytest.approx(expected)
    assert 0.0 <= pressure(Decimal(rar), cap) <= 1.0


def test_pressure_of_45000_is_exactly_045():
    assert pressure(Decimal("45000.00"), 100_000.0) == 0.45


# Trend ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rar, previous, expected_trend, expected_pct",
    [
        ("106", "100", "up", 6.0),
        ("105.01", "100", "up", 5.01),
        ("105", "100", "stable", 5.0),  # exactly +5: stable
        ("95", "100", "stable", -5.0),  # exactly -5: stable
        ("94.99", "100", "down", -5.01),
        ("50", "100", "down", -50.0),
        ("100", "100", "stable", 0.0),
        ("100", "0", "stable", 0.0),  # previous month had no RaR
        ("100", "0.00", "stable", 0.0),
        ("100", None, "stable", 0.0),  # no previous month
        ("0", "100", "down", -100.0),
    ],
)
def test_trend(rar, previous, expected_trend, expected_pct):
    name, pct = trend(Decimal(rar), Decimal(previous) if previous is not None else None)
    assert name == expected_trend
    assert pct == pytest.approx(expected_pct)


def test_trend_of_the_demo_months():
    # 2025-10 is the same rooftops at 90 % of the impressions: RaR is ~11 % higher in 2025-11.
    name, pct = trend(Decimal("89954.17"), Decimal("80958.75"))
    assert name == "up" and pct == pytest.approx((89954.17 - 80958.75) / 80958.75 * 100)


def test_trend_exactly_five_percent_is_computed_exactly():
    # Decimal arithmetic: 5 % up from a value that is not exact in binary is still exactly 5.
    name, pct = trend(Decimal("0.21"), Decimal("0.20"))
    assert name == "stable" and pct == 5.0


# Score adjustments ------------------------------------------------------------------------------------------
def test_worked_score_example():
    p = pressure(Decimal("45000"), 100_000)
    scores = adjust_scores(85, 78, 70, p, "stable")
    assert scores.aiv == pytest.approx(83.47)
    assert scores.ati == pytest.approx(76.947)
    assert scores.qai == 70
    assert scores.aiv_delta == pytest.approx(-1.53)
    assert scores.ati_delta == pytest.approx(-1.053)
    assert scores.qai_delta == 0


@pytest.mark.parametrize("trend_value, expected_qai", [("up", 68.6), ("stable", 70.0), ("down", 70.0)])
def test_qai_only_drops_when_trending_up(trend_value, expected_qai):
    scores = adjust_scores(85, 78, 70, 0.45, trend_value)
    assert scores.qai == pytest.approx(expected_qai)
    assert scores.qai_delta == pytest.approx(expected_qai - 70)
    # AIV/ATI do not depend on the trend.
    assert scores.aiv == pytest.approx(83.47) and scores.ati == pytest.approx(76.947)


def test_zero_pressure_leaves_scores_alone():
    scores = adjust_scores(85, 78, 70, 0.0, "stable")
    assert (scores.aiv, scores.ati, scores.qai) == (85, 78, 70)
    assert (scores.aiv_delta, scores.ati_delta, scores.qai_delta) == (0, 0, 0)


def test_full_pressure():
    scores = adjust_scores(100, 100, 100, 1.0, "up")
    assert scores.aiv == pytest.approx(96.0) and scores.ati == pytest.approx(97.0) and scores.qai == pytest.approx(98.0)


def test_scores_are_clamped_to_0_100():
    high = adjust_scores(120, 150, 110, 0.1, "stable")
    assert (high.aiv, high.ati, high.qai) == (100.0, 100.0, 100.0)
    assert high.aiv_delta == -20 and high.ati_delta == -50 and high.qai_delta == -10
    negative = adjust_scores(-5, -1, -3, 0.5, "up")
    assert (negative.aiv, negative.ati, negative.qai) == (0.0, 0.0, 0.0)
    assert negative.aiv_delta == 5 and negative.qai_delta == 3


def test_out_of_range_pressure_is_clamped_too():
    # A negative pressure would raise the score above 100; a pressure of 30 would push it below 0.
    raised = adjust_scores(99, 99, 99, -2.0, "stable")
    assert raised.aiv == 100.0 and raised.ati == 100.0
    sunk = adjust_scores(50, 50, 50, 30.0, "stable")
    assert sunk.aiv == 0.0 and sunk.ati == pytest.approx(50 * (1 - 0.9))
    sunk_more = adjust_scores(50, 50, 50, 40.0, "stable")
    assert sunk_more.ati == 0.0
