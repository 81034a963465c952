"""The monthly lineage in the warehouse (`rar_pipeline.monthly` and `monthly_checks`), without Dagster.

Every test loads real batch files through `ingest_landing` and rebuilds months inside
`with write_connection(engine) as c, c.begin():`, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, insert, select, update

from rar_pipeline import monthly, monthly_checks, rar_math
from rar_pipeline.ingest import ingest_landing
from rar_pipeline.ledger import refresh_plan
from rar_pipeline.seed import HEADER, SCORE_HEADER, demo_rows, demo_score_rows, write_batch
from rar_pipeline.warehouse.engine import write_connection
from rar_pipeline.warehouse.schema import (
    dealer_scores,
    rar_batch_months,
    rar_batches,
    rar_events,
    rar_intent_monthly,
    rar_monthly,
    rar_pressure,
    rar_raw_dealer_scores,
    rar_raw_events,
    rar_rejected_rows,
    rar_score_adjustments,
    secondary_metrics,
)

SEP, OCT, NOV, DEC = date(2025, 9, 1), date(2025, 10, 1), date(2025, 11, 1), date(2025, 12, 1)
NOW = datetime(2025, 12, 2, 3, 0, tzinfo=timezone.utc)
CAP = 100_000.0
GERMAIN, LOU, DEMO = "germain-toyota-naples", "lou-grubbs-motors", "demo-rooftop"
DEMO_RAR = {GERMAIN: Decimal("89954.17"), LOU: Decimal("65667.12"), DEMO: Decimal("65272.78")}

# The lineage tables a month rebuild writes, with the columns that only hold "when".
LINEAGE = {
    rar_events: (),
    rar_monthly: ("computed_at",),
    rar_intent_monthly: ("computed_at",),
    rar_pressure: ("computed_at",),
    secondary_metrics: ("updated_at",),
    dealer_scores: ("updated_at",),
    rar_score_adjustments: ("computed_at",),
}


# Helpers -----------------------------------------------------------------------------------------------
def event(dealer, month, channel="google_organic", intent="", impressions=100_000, share=0.3, ctr=0.05, drop=0.3,
          lead=0.04, close=0.18, gross=2000, rec=0.45) -> list:  # fmt: skip
    """One CSV row in the template's column order (HEADER)."""
    return [dealer, month.strftime("%Y-%m"), channel, impressions, share, ctr, drop, lead, close, gross, rec, intent]


def exact_rar(dealer, month, rar, channel="google_organic", intent="", rec=0.5) -> list:
    """An event whose RaR is exactly `rar` (every rate 1, one impression, avgGross = rar)."""
    return event(dealer, month, channel, intent, 1, 1, 1, 1, 1, 1, rar, rec)


def load(engine, landing: Path, options, name: str, rows, header=HEADER) -> int:
    """Deliver one file and load it; returns its batch id."""
    write_batch(landing / name, iter(rows), header=header)
    reports = ingest_landing(engine, landing, options, settle_seconds=0, max_files=10)
    assert [(report.file_name, report.status) for report in reports] == [(name, "loaded")], reports
    assert reports[0].rows_rejected == 0, reports[0].rejected_by_reason
    return reports[0].batch_id


def load_demo(engine, landing, options, scores=False) -> dict[str, int]:
    batches = {
        "oct": load(engine, landing, options, "rar-demo-2025-10.csv", demo_rows(OCT, scale=0.9)),
        "nov": load(engine, landing, options, "rar-demo-2025-11.csv", demo_rows()),
    }
    if scores:
        batches["scores"] = load(engine, landing, options, "scores-2025-11.csv", demo_score_rows(), SCORE_HEADER)
    return batches


def full_rebuild(connection, month: date, cap: float = CAP, now: datetime = NOW, is_complete: bool = True) -> None:
    """What one run of rar_monthly_job does for a month, in one transaction."""
    monthly.lock_month(connection, month)
    monthly.rebuild_events(connection, month)
    rows = monthly.dealer_months(connection, month)
    monthly.write_monthly(connection, month, rows, is_complete, now)
    monthly.write_intent_monthly(connection, month, rows, is_complete, now)
    monthly.rebuild_pressure(connection, month, cap, is_complete, now)
    monthly.rebuild_dealer_scores(connection, now)
    monthly.rebuild_score_adjustments(connection, month, now)


def rebuild(engine, *months: date, **kwargs) -> None:
    for month in months:
        with write_connection(engine) as connection, connection.begin():
            full_rebuild(connection, month, **kwargs)


def monthly_rows(engine, month: date) -> dict:
    with engine.connect() as connection:
        return {row.dealer_id: row for row in connection.execute(select(rar_monthly).where(rar_monthly.c.month == month))}


def pressure_rows(engine, month: date) -> dict:
    with engine.connect() as connection:
        return {row.dealer_id: row for row in connection.execute(select(rar_pressure).where(rar_pressure.c.month == month))}


def current_pressure(engine) -> dict:
    with engine.connect() as connection:
        rows = connection.execute(select(secondary_metrics).where(secondary_metrics.c.key == "rar_pressure"))
        return {row.dealer_id: (row.month, row.value_num) for row in rows}


def snapshot(engine) -> dict:
    """Every lineage table's rows, sorted, without the timestamp columns."""
    result = {}
    with engine.connect() as connection:
        for table, skip in LINEAGE.items():
            columns = [column for column in table.columns if column.name not in skip]
            rows = connection.execute(select(*columns)).all()
            result[table.name] = sorted((tuple(map(repr, row)) for row in rows))
    return result


def check(engine, function, month: date):
    with engine.connect() as connection:
        return function(connection, month)


ALL_CHECKS = (
    monthly_checks.events_latest_per_key,
    monthly_checks.monthly_one_row_per_dealer,
    monthly_checks.monthly_reconciles,
    monthly_checks.recoverable_within_rar,
    monthly_checks.top_intents_sorted,
    monthly_checks.pressure_in_range,
)


def stale_count(facts: dict) -> int:
    """The events check's count of events that are not their key's newest version."""
    (value,) = [value for key, value in facts.items() if key.startswith("stale")]
    return value


def assert_checks_pass(engine, month: date) -> None:
    for function in ALL_CHECKS:
        passed, facts = check(engine, function, month)
        assert passed, (function.__name__, facts)


# The demo month ------------------------------------------------------------------------------------------
def test_demo_month_exact_values(engine, landing, load_options):
    batches = load_demo(engine, landing, load_options)
    with write_connection(engine) as connection, connection.begin():
        summary = monthly.rebuild_events(connection, NOV)
        rows = monthly.dealer_months(connection, NOV)
        monthly.write_monthly(connection, NOV, rows, False, NOW)
        intents = monthly.write_intent_monthly(connection, NOV, rows, False, NOW)
    assert summary.events == 15 and summary.batches == [batches["nov"]] and summary.up_to_batch == batches["nov"]
    assert intents == 15

    stored = monthly_rows(engine, NOV)
    assert set(stored) == {GERMAIN, LOU, DEMO}
    expected = {
        GERMAIN: (5949, 238, "42.84", "89954.17", "40479.38"),
        LOU: (4677, 187, "33.68", "65667.12", "29550.20"),
        DEMO: (4422, 177, "31.84", "65272.78", "29372.75"),
    }
    for dealer, (sessions, leads, sales, rar, recoverable) in expected.items():
        row = stored[dealer]
        assert (row.lost_sessions, row.lost_leads) == (sessions, leads)
        # NUMERIC(14,2) comes back as exact Decimals with two places on both backends.
        for column, value in (("lost_sales", sales), ("rar", rar), ("recoverable", recoverable)):
            assert isinstance(row._mapping[column], Decimal)
            assert row._mapping[column] == Decimal(value)
        assert row.event_count == 5 and row.is_complete is False
        computed = next(item for item in rows if item.dealer_id == dealer)
        assert row.recovery_rate == computed.recovery_rate == float(Decimal(recoverable) / Decimal(rar))
        assert row.zero_click_rate == computed.zero_click_rate == computed.lost_sessions_exact / row.impressions
    assert stored[GERMAIN].impressions == 945_000
    assert stored[GERMAIN].top_losing_intents == [
        {"intent": "service_price", "rar": 30561.30},
        {"intent": "hours", "rar": 19958.40},
        {"intent": "oil_change", "rar": 18770.88},
        {"intent": "dealer_near_me", "rar": 11692.30},
        {"intent": "tire_rotation", "rar": 8971.30},
    ]
    computed_at = stored[GERMAIN].computed_at
    assert computed_at.replace(tzinfo=computed_at.tzinfo or timezone.utc) == NOW

    with engine.connect() as connection:
        intent_rows = connection.execute(
            select(rar_intent_monthly).where(rar_intent_monthly.c.dealer_id == GERMAIN).order_by(rar_intent_monthly.c.rank)
        ).all()
        events = connection.execute(
            select(rar_events).where(rar_events.c.dealer_id == GERMAIN, rar_events.c.intent_cluster == "service_price")
        ).one()
    assert [(row.intent_cluster, row.rar) for row in intent_rows] == [
        ("service_price", Decimal("30561.30")), ("hours", Decimal("19958.40")), ("oil_change", Decimal("18770.88")),
        ("dealer_near_me", Decimal("11692.30")), ("tire_rotation", Decimal("8971.30")),
    ]  # fmt: skip
    # The per-event chain is stored beside the canonical event, unrounded.
    chain = rar_math.event_values(300000, 0.35, 0.055, 0.35, 0.04, 0.18, 2100, 0.45)
    assert (events.ai_sessions, events.lost_sessions, events.rar, events.recoverable) == (
        chain.ai_sessions, chain.lost_sessions, chain.rar, chain.recoverable,
    )  # fmt: skip
    assert events.batch_id == batches["nov"]
    assert_checks_pass(engine, NOV)


def test_demo_pressure_trend_and_score_adjustments(engine, landing, load_options):
    load_demo(engine, landing, load_options, scores=True)
    rebuild(engine, OCT, NOV)

    october = monthly_rows(engine, OCT)
    assert october[GERMAIN].rar < DEMO_RAR[GERMAIN]
    pressures = pressure_rows(engine, NOV)
    for dealer, rar in DEMO_RAR.items():
        row = pressures[dealer]
        assert row.rar == rar and row.pressure == pytest.approx(float(rar) / CAP) and row.cap == CAP
        assert row.previous_rar == october[dealer].rar
        assert row.trend == "up"
        assert row.trend_pct == pytest.approx(float((rar - october[dealer].rar) / october[dealer].rar * 100))
        assert row.lost_sessions == monthly_rows(engine, NOV)[dealer].lost_sessions
        assert row.zero_click_proxy == pytest.approx(row.lost_sessions / (row.lost_sessions + 10_000))
    assert {row.trend for row in pressure_rows(engine, OCT).values()} == {"stable"}  # no September

    assert current_pressure(engine) == {dealer: (NOV, pytest.approx(float(rar) / CAP)) for dealer, rar in DEMO_RAR.items()}

    with engine.connect() as connection:
        adjusted = {row.dealer_id: row for row in connection.execute(select(rar_score_adjustments))}
    assert set(adjusted) == {GERMAIN, LOU, DEMO}
    germain = adjusted[GERMAIN]
    p = float(DEMO_RAR[GERMAIN]) / CAP
    assert (germain.aiv, germain.ati, germain.qai) == (85, 78, 72)
    assert germain.aiv_adjusted == pytest.approx(85 * (1 - 0.04 * p))
    assert germain.ati_adjusted == pytest.approx(78 * (1 - 0.03 * p))
    assert germain.qai_adjusted == pytest.approx(72 * 0.98)  # trend up
    assert germain.aiv_delta == pytest.approx(germain.aiv_adjusted - 85)
    assert germain.scores_month == NOV and germain.trend == "up"
    assert_checks_pass(engine, NOV)
    assert_checks_pass(engine, OCT)


def test_worked_score_example_through_the_tables(engine, landing, load_options):
    load(engine, landing, load_options, "events.csv", [exact_rar("dealer-a", NOV, 45000, intent="hours")])
    load(engine, landing, load_options, "scores.csv", [["dealer-a", "2025-11", 85, 78, 70, "", ""]], SCORE_HEADER)
    rebuild(engine, NOV)
    assert monthly_rows(engine, NOV)["dealer-a"].rar == Decimal("45000.00")
    with engine.connect() as connection:
        row = connection.execute(select(rar_score_adjustments)).one()
    assert row.pressure == 0.45 and row.trend == "stable"
    assert row.aiv_adjusted == pytest.approx(83.47)
    assert row.ati_adjusted == pytest.approx(76.947)
    assert row.qai_adjusted == 70 and row.qai_delta == 0


# Property: the monthly table equals a plain-Python reference -------------------------------------------
DEALERS = ("d-alpha", "d-beta", "Dealer.7_x")
CHANNELS = ("google_organic", "chatgpt", "bing")
INTENTS = ("", "hours", "oil_change", "service_price")
MONTHS = (OCT, NOV)
KEYS = st.tuples(st.sampled_from(DEALERS), st.sampled_from(MONTHS), st.sampled_from(CHANNELS), st.sampled_from(INTENTS))
RATE = st.one_of(
    st.floats(0, 1, allow_nan=False, allow_subnormal=False),
    st.sampled_from([0.0, 1.0, 0.5, 0.125, 0.045, 0.055, 0.35]),
)
VALUES = st.tuples(
    st.integers(0, 3_000_000), RATE, RATE, RATE, RATE, RATE,
    st.one_of(st.floats(0, 5_000, allow_nan=False, allow_subnormal=False), st.integers(0, 5_000)), RATE,
)  # fmt: skip


def reference_months(events: dict) -> dict[tuple[date, str], rar_math.DealerMonth]:
    """The monthly rows a plain-Python implementation of rar-domain.md gives for canonical events."""
    grouped: dict[tuple[date, str], list] = {}
    for (dealer, month, _channel, intent), values in events.items():
        grouped.setdefault((month, dealer), []).append((intent, values))
    result = {}
    for (month, dealer), items in grouped.items():
        chains = [rar_math.event_values(*values) for _, values in items]
        result[(month, dealer)] = rar_math.dealer_month(
            dealer,
            [values[0] for _, values in items],
            [c.lost_sessions for c in chains],
            [c.lost_leads for c in chains],
            [c.lost_sales for c in chains],
            [c.rar for c in chains],
            [c.recoverable for c in chains],
            [intent for intent, _ in items],
        )
    return result


def wipe(engine) -> None:
    with write_connection(engine) as connection, connection.begin():
        for table in (
            rar_rejected_rows, rar_batch_months, rar_raw_events, rar_raw_dealer_scores, *LINEAGE, rar_batches,
        ):  # fmt: skip
            connection.execute(delete(table))


def as_row(key, values) -> list:
    dealer, month, channel, intent = key
    return [dealer, month.strftime("%Y-%m"), channel, *values, intent]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_monthly_table_matches_a_plain_python_reference(engine, landing, load_options, data):
    wipe(engine)
    folder = landing / uuid.uuid4().hex  # a landing zone of this example's own
    first = data.draw(st.dictionaries(KEYS, VALUES, min_size=1, max_size=20), label="first batch")
    repeated = data.draw(st.lists(st.sampled_from(sorted(first, key=repr)), unique=True, max_size=len(first)), label="corrected keys")
    second = {key: data.draw(VALUES, label=f"correction {key}") for key in repeated}
    second.update(data.draw(st.dictionaries(KEYS, VALUES, max_size=10), label="new keys"))

    load(engine, folder, load_options, "first.csv", [as_row(key, values) for key, values in first.items()])
    if second:
        # An extra column (ignored by the loader) keeps a correction with equal values from being the
        # same bytes as the first file, which the ledger would rightly refuse as a duplicate delivery.
        rows = [as_row(key, values) + ["second"] for key, values in second.items()]
        load(engine, folder, load_options, "second.csv", rows, header=HEADER + ["note"])
    rebuild(engine, *MONTHS)

    canonical = {**first, **second}  # the latest batch wins per natural key
    expected = reference_months(canonical)
    with engine.connect() as connection:
        stored = {(row.month, row.dealer_id): row for row in connection.execute(select(rar_monthly))}
        intent_rows = {
            (row.month, row.dealer_id, row.intent_cluster): row for row in connection.execute(select(rar_intent_monthly))
        }
        event_count = connection.execute(select(func.count()).select_from(rar_events)).scalar_one()
    assert event_count == len(canonical)
    assert set(stored) == set(expected)
    for key, reference in expected.items():
        row = stored[key]
        assert (row.lost_sessions, row.lost_leads) == (reference.lost_sessions, reference.lost_leads), key
        assert (row.lost_sales, row.rar, row.recoverable) == (reference.lost_sales, reference.rar, reference.recoverable), key
        assert (row.impressions, row.event_count) == (reference.impressions, reference.event_count), key
        assert row.top_losing_intents == reference.top_losing_intents, key
        assert row.recovery_rate == reference.recovery_rate, key
        assert row.zero_click_rate == reference.zero_click_rate, key
        for rank, intent in enumerate(reference.intents, start=1):
            stored_intent = intent_rows.pop((key[0], key[1], intent.intent))
            assert stored_intent.rank == rank
            assert stored_intent.rar == rar_math.half_up_cents(intent.rar)
            assert stored_intent.event_count == intent.event_count
    assert intent_rows == {}  # no intent row the reference does not have
    for month in MONTHS:
        assert_checks_pass(engine, month)


def test_rates_so_small_that_the_chain_underflows(engine, landing, load_options):
    """Valid (0..1) but tiny rates: float64 underflows to 0, where PostgreSQL's float8 raised an error."""
    tiny = event("tiny", NOV, intent="hours", lead=1e-200, close=1e-200)
    load(engine, landing, load_options, "tiny.csv", [tiny, exact_rar("normal", NOV, 100, intent="hours")])
    rebuild(engine, NOV)
    with engine.connect() as connection:
        stored = connection.execute(select(rar_events).where(rar_events.c.dealer_id == "tiny")).one()
    chain = rar_math.event_values(*tiny[3:11])
    assert chain.lost_sales == 0.0 and chain.lost_leads > 0
    assert tuple(stored._mapping[name] for name in ("ai_sessions", "lost_sessions", "lost_leads", "lost_sales", "rar", "recoverable")) == (
        chain.ai_sessions, chain.lost_sessions, chain.lost_leads, chain.lost_sales, chain.rar, chain.recoverable,
    )  # fmt: skip
    rows = monthly_rows(engine, NOV)
    assert rows["tiny"].rar == Decimal("0.00") and rows["normal"].rar == Decimal("100.00")
    assert_checks_pass(engine, NOV)


# Late data, corrections, vanishing dealers -----------------------------------------------------------------
def test_late_data_for_an_old_month(engine, landing, load_options):
    batches = load_demo(engine, landing, load_options)
    rebuild(engine, OCT, NOV)
    october_before, november_before = monthly_rows(engine, OCT), monthly_rows(engine, NOV)

    late = load(engine, landing, load_options, "late-october.csv", [exact_rar(GERMAIN, OCT, 1234.56, channel="chatgpt", intent="hours")])
    # The refresh plan asks for October and for November (whose trend compares with October).
    with engine.connect() as connection:
        plan, cursor = refresh_plan(connection, batches["nov"], date(2026, 12, 1))
    assert [(request.month, request.scores_only, request.up_to_batch) for request in plan] == [
        (OCT, False, late), (NOV, False, late),
    ]  # fmt: skip
    assert cursor == late

    rebuild(engine, OCT)
    october = monthly_rows(engine, OCT)
    assert october[GERMAIN].rar == october_before[GERMAIN].rar + Decimal("1234.56")
    assert october[GERMAIN].event_count == 6
    assert october[LOU] == october_before[LOU]
    # Nothing in November changed by rebuilding October.
    assert monthly_rows(engine, NOV) == november_before
    with engine.connect() as connection:
        used = connection.execute(select(rar_events.c.batch_id).where(rar_events.c.month == OCT).distinct()).scalars().all()
    assert sorted(used) == sorted([batches["oct"], late])

    rebuild(engine, NOV)
    assert pressure_rows(engine, NOV)[GERMAIN].previous_rar == october[GERMAIN].rar
    assert monthly_rows(engine, NOV)[GERMAIN].rar == DEMO_RAR[GERMAIN]
    assert_checks_pass(engine, OCT)
    assert_checks_pass(engine, NOV)


def test_a_correction_batch_replaces_never_adds(engine, landing, load_options):
    load_demo(engine, landing, load_options)
    rebuild(engine, NOV)
    # The same 5 keys of germain again with every impression count halved: a correction carries the
    # same natural keys with new values.
    corrected = [row[:3] + [row[3] // 2] + row[4:] for row in demo_rows() if row[0] == GERMAIN]
    correction = load(engine, landing, load_options, "correction.csv", corrected)
    rebuild(engine, NOV)

    stored = monthly_rows(engine, NOV)
    assert stored[GERMAIN].event_count == 5  # not 10
    assert stored[GERMAIN].impressions == 945_000 // 2  # each count halved exactly (all even)
    expected = reference_months({(GERMAIN, NOV, "google_organic", row[11]): (row[3], *row[4:11]) for row in corrected})
    assert stored[GERMAIN].rar == expected[(NOV, GERMAIN)].rar
    assert abs(stored[GERMAIN].rar - DEMO_RAR[GERMAIN] / 2) <= Decimal("0.01")  # and not the sum of both versions
    assert stored[LOU].rar == DEMO_RAR[LOU] and stored[DEMO].rar == DEMO_RAR[DEMO]
    with engine.connect() as connection:
        batches = connection.execute(
            select(rar_events.c.batch_id).where(rar_events.c.dealer_id == GERMAIN, rar_events.c.month == NOV).distinct()
        ).scalars().all()
        raw_rows = connection.execute(select(func.count()).select_from(rar_raw_events)).scalar_one()
    assert batches == [correction]
    assert raw_rows == 15 + 15 + 5  # both versions stay in the raw layer; the canonical layer has one
    assert_checks_pass(engine, NOV)

    # Correcting back to the original values restores the original cents exactly.
    load(engine, landing, load_options, "correction-undo.csv", [row for row in demo_rows() if row[0] == GERMAIN])
    rebuild(engine, NOV)
    assert monthly_rows(engine, NOV)[GERMAIN].rar == DEMO_RAR[GERMAIN]


def test_a_correction_to_zero_keeps_the_dealer_with_zero_rar_and_null_ratios(engine, landing, load_options):
    load(engine, landing, load_options, "a.csv", [event("dealer-a", NOV, intent="hours"), event("dealer-b", NOV)])
    rebuild(engine, NOV)
    load(engine, landing, load_options, "fix.csv", [event("dealer-a", NOV, intent="hours", impressions=0)])
    rebuild(engine, NOV)
    row = monthly_rows(engine, NOV)["dealer-a"]
    assert row.rar == Decimal("0.00") and row.impressions == 0 and row.event_count == 1
    assert row.recovery_rate is None and row.zero_click_rate is None
    assert row.top_losing_intents == [{"intent": "hours", "rar": 0.0}]
    assert pressure_rows(engine, NOV)["dealer-a"].pressure == 0.0
    assert_checks_pass(engine, NOV)


def test_a_dealer_disappearing_from_a_month_leaves_no_stale_rows(engine, landing, load_options):
    """A dealer with no events left in a month has no row for it, in any table of the lineage.

    Through the ledger a dealer cannot vanish: batches are never unloaded, and a later batch only
    replaces the keys it carries (a correction file that omits the dealer leaves its events alone;
    checked first below). What can happen is that the month's canonical events lose a dealer while
    the tables below still hold its rows from an earlier build: here the dealer's rows are removed
    from `rar_events` (as a dealer-scoped purge of the canonical layer, or an older rebuild of the
    events with a different selection, would leave it) and the aggregates are rebuilt from that
    layer, exactly as the `rar/monthly` and `rar/pressure` assets do after `rar/events`.
    """
    load(engine, landing, load_options, "oct.csv", [exact_rar(d, OCT, 10_000 * (n + 1), intent="hours") for n, d in enumerate(DEALERS)])
    load(engine, landing, load_options, "nov.csv", [exact_rar(d, NOV, 20_000 * (n + 1), intent="hours") for n, d in enumerate(DEALERS)])
    rebuild(engine, OCT, NOV)
    assert set(monthly_rows(engine, NOV)) == set(DEALERS)
    assert current_pressure(engine)["d-beta"] == (NOV, 0.4)

    # A correction file without d-beta does not remove d-beta.
    load(engine, landing, load_options, "nov-fix.csv", [exact_rar("d-alpha", NOV, 5, intent="hours")])
    rebuild(engine, NOV)
    assert set(monthly_rows(engine, NOV)) == set(DEALERS)

    with write_connection(engine) as connection, connection.begin():
        monthly.lock_month(connection, NOV)
        connection.execute(delete(rar_events).where(rar_events.c.dealer_id == "d-beta", rar_events.c.month == NOV))
        rows = monthly.dealer_months(connection, NOV)
        assert {row.dealer_id for row in rows} == set(DEALERS) - {"d-beta"}
        monthly.write_monthly(connection, NOV, rows, True, NOW)
        monthly.write_intent_monthly(connection, NOV, rows, True, NOW)
        monthly.rebuild_pressure(connection, NOV, CAP, True, NOW)
        monthly.rebuild_score_adjustments(connection, NOV, NOW)

    assert set(monthly_rows(engine, NOV)) == set(DEALERS) - {"d-beta"}
    assert "d-beta" not in pressure_rows(engine, NOV)
    with engine.connect() as connection:
        intents = connection.execute(select(rar_intent_monthly.c.dealer_id).where(rar_intent_monthly.c.month == NOV)).scalars().all()
    assert "d-beta" not in intents
    # Its current pressure falls back to its latest month that still has data.
    assert current_pressure(engine)["d-beta"] == (OCT, 0.2)
    assert current_pressure(engine)["d-alpha"] == (NOV, pytest.approx(0.00005))
    assert check(engine, monthly_checks.monthly_one_row_per_dealer, NOV)[0]
    assert check(engine, monthly_checks.monthly_reconciles, NOV)[0]

    # And a dealer whose only month loses it has no current pressure at all.
    with write_connection(engine) as connection, connection.begin():
        connection.execute(delete(rar_events).where(rar_events.c.dealer_id == "d-beta", rar_events.c.month == OCT))
        rows = monthly.dealer_months(connection, OCT)
        monthly.write_monthly(connection, OCT, rows, True, NOW)
        monthly.rebuild_pressure(connection, OCT, CAP, True, NOW)
    assert "d-beta" not in current_pressure(engine)
    assert "d-beta" not in monthly_rows(engine, OCT)


def test_write_monthly_replaces_the_whole_month(engine, landing, load_options):
    load_demo(engine, landing, load_options)
    rebuild(engine, OCT, NOV)
    with write_connection(engine) as connection, connection.begin():
        rows = [row for row in monthly.dealer_months(connection, NOV) if row.dealer_id != LOU]
        monthly.write_monthly(connection, NOV, rows, True, NOW)
        monthly.write_intent_monthly(connection, NOV, rows, True, NOW)
    assert set(monthly_rows(engine, NOV)) == {GERMAIN, DEMO}
    assert set(monthly_rows(engine, OCT)) == {GERMAIN, LOU, DEMO}  # other months untouched
    with write_connection(engine) as connection, connection.begin():
        monthly.write_monthly(connection, NOV, [], True, NOW)
        assert monthly.write_intent_monthly(connection, NOV, [], True, NOW) == 0
    assert monthly_rows(engine, NOV) == {}


# Pressure and trend ------------------------------------------------------------------------------------------
def test_pressure_moves_to_a_newer_month_and_stays_when_an_older_one_is_recomputed(engine, landing, load_options):
    load(engine, landing, load_options, "oct.csv", demo_rows(OCT, scale=0.9))
    rebuild(engine, OCT)
    october = pressure_rows(engine, OCT)
    assert current_pressure(engine)[GERMAIN] == (OCT, october[GERMAIN].pressure)

    load(engine, landing, load_options, "nov.csv", demo_rows())
    rebuild(engine, NOV)
    assert current_pressure(engine)[GERMAIN] == (NOV, pytest.approx(0.8995417))

    # Late October data, October recomputed: the history changes, the current value does not.
    load(engine, landing, load_options, "oct-late.csv", [exact_rar(GERMAIN, OCT, 5_000, channel="bing")])
    rebuild(engine, OCT)
    assert pressure_rows(engine, OCT)[GERMAIN].pressure == pytest.approx(october[GERMAIN].pressure + 0.05)
    assert current_pressure(engine)[GERMAIN] == (NOV, pytest.approx(0.8995417))
    assert current_pressure(engine)[LOU] == (NOV, pytest.approx(0.6566712))

    # A month built out of order (a backfill of September after November) changes nothing either.
    load(engine, landing, load_options, "sep.csv", demo_rows(SEP, scale=0.5))
    rebuild(engine, SEP)
    assert {month for month, _ in current_pressure(engine).values()} == {NOV}
    # A dealer that only has the old month gets that month's value.
    load(engine, landing, load_options, "sep-new.csv", [exact_rar("only-september", SEP, 30_000)])
    rebuild(engine, SEP)
    assert current_pressure(engine)["only-september"] == (SEP, 0.3)
    assert current_pressure(engine)[GERMAIN][0] == NOV


def test_pressure_cap_is_configurable_and_caps_at_one(engine, landing, load_options):
    load_demo(engine, landing, load_options)
    rebuild(engine, NOV, cap=70_000.0)
    rows = pressure_rows(engine, NOV)
    assert rows[GERMAIN].pressure == 1.0 and rows[GERMAIN].cap == 70_000.0
    assert rows[LOU].pressure == pytest.approx(65667.12 / 70_000)
    assert check(engine, monthly_checks.pressure_in_range, NOV)[0]


def test_trend_across_a_gap_month_is_stable(engine, landing, load_options):
    load(engine, landing, load_options, "sep.csv", demo_rows(SEP, scale=0.5))
    load(engine, landing, load_options, "nov.csv", demo_rows())
    rebuild(engine, SEP, NOV)
    for row in pressure_rows(engine, NOV).values():
        # September is two months back: November has no previous calendar month.
        assert (row.trend, row.trend_pct, row.previous_rar) == ("stable", 0.0, None)

    # October arrives: rebuilding November (as the refresh plan asks) compares with it.
    load(engine, landing, load_options, "oct.csv", demo_rows(OCT, scale=1.0 / 1.03))
    rebuild(engine, OCT, NOV)
    november = pressure_rows(engine, NOV)
    assert november[GERMAIN].previous_rar == monthly_rows(engine, OCT)[GERMAIN].rar
    assert november[GERMAIN].trend == "stable"  # +3 %
    assert november[GERMAIN].trend_pct == pytest.approx(3.0, abs=0.01)
    assert pressure_rows(engine, OCT)[GERMAIN].trend == "up"  # September had half the impressions


def test_trend_thresholds_through_the_tables(engine, landing, load_options):
    # October 100,000 for each; November +5 (stable), +5.01 (up), -5 (stable), -5.01 (down).
    cases = {"plus-five": 105_000, "plus-more": 105_010, "minus-five": 95_000, "minus-more": 94_990, "zero-before": 1}
    load(engine, landing, load_options, "oct.csv",
         [exact_rar(d, OCT, 0 if d == "zero-before" else 100_000) for d in cases])  # fmt: skip
    load(engine, landing, load_options, "nov.csv", [exact_rar(d, NOV, rar) for d, rar in cases.items()])
    rebuild(engine, OCT, NOV)
    trends = {dealer: (row.trend, row.trend_pct) for dealer, row in pressure_rows(engine, NOV).items()}
    assert trends == {
        "plus-five": ("stable", 5.0),
        "plus-more": ("up", pytest.approx(5.01)),
        "minus-five": ("stable", -5.0),
        "minus-more": ("down", pytest.approx(-5.01)),
        "zero-before": ("stable", 0.0),  # the previous month has rar 0
    }


# Scores ------------------------------------------------------------------------------------------------------
def test_score_clamping_through_the_tables(engine, landing, load_options):
    load(engine, landing, load_options, "events.csv",
         [exact_rar("over", NOV, 250_000), exact_rar("under", NOV, 10_000), exact_rar("plain", NOV, 45_000)])  # fmt: skip
    load(engine, landing, load_options, "scores.csv", [["plain", "2025-11", 100, 100, 100, "", ""]], SCORE_HEADER)
    # A score file cannot carry out-of-range scores (the row is rejected) ...
    write_batch(landing / "bad-scores.csv", iter([["over", "2025-11", 120, 50, 50, "", ""]] * 1), header=SCORE_HEADER)
    (report,) = ingest_landing(engine, landing, load_options, settle_seconds=0, max_files=10)
    assert (report.status, report.reason) == ("rejected", "too_many_rejects")
    assert "out_of_range 1" in report.detail
    rebuild(engine, NOV)
    # ... but a snapshot written straight into dealer_scores (e.g. migrated from the old system) can,
    # and the adjustment still lands in 0..100.
    with write_connection(engine) as connection, connection.begin():
        connection.execute(
            insert(dealer_scores),
            [
                {"dealer_id": "over", "month": NOV, "aiv": 120.0, "ati": 150.0, "qai": 250.0, "batch_id": 0, "updated_at": NOW},
                {"dealer_id": "under", "month": NOV, "aiv": -10.0, "ati": -0.5, "qai": -3.0, "batch_id": 0, "updated_at": NOW},
            ],
        )
        monthly.rebuild_score_adjustments(connection, NOV, NOW)
    with engine.connect() as connection:
        rows = {row.dealer_id: row for row in connection.execute(select(rar_score_adjustments))}
    assert rows["over"].pressure == 1.0
    assert (rows["over"].aiv_adjusted, rows["over"].ati_adjusted, rows["over"].qai_adjusted) == (100.0, 100.0, 100.0)
    assert (rows["over"].aiv_delta, rows["over"].ati_delta, rows["over"].qai_delta) == (-20.0, -50.0, -150.0)
    assert (rows["under"].aiv_adjusted, rows["under"].ati_adjusted, rows["under"].qai_adjusted) == (0.0, 0.0, 0.0)
    assert rows["under"].aiv_delta == 10.0
    assert rows["plain"].aiv_adjusted == pytest.approx(100 * (1 - 0.04 * 0.45))
    for row in rows.values():
        for name in ("aiv", "ati", "qai"):
            assert 0 <= getattr(row, f"{name}_adjusted") <= 100


def test_latest_score_file_wins_and_dealers_without_scores_get_no_adjustment(engine, landing, load_options):
    load_demo(engine, landing, load_options, scores=True)
    load(engine, landing, load_options, "scores-fix.csv", [[GERMAIN, "2025-11", 90, 80, 75, 0.5, 0.8]], SCORE_HEADER)
    load(engine, landing, load_options, "more-events.csv", [exact_rar("no-scores", NOV, 1000)])
    rebuild(engine, NOV)
    with engine.connect() as connection:
        rows = {row.dealer_id: row for row in connection.execute(select(rar_score_adjustments))}
        germain_scores = connection.execute(select(dealer_scores).where(dealer_scores.c.dealer_id == GERMAIN)).one()
    assert set(rows) == {GERMAIN, LOU, DEMO}
    assert (rows[GERMAIN].aiv, rows[GERMAIN].ati, rows[GERMAIN].qai) == (90, 80, 75)
    assert (germain_scores.zero_click_coverage, germain_scores.schema_coverage) == (0.5, 0.8)
    assert rows[DEMO].aiv == 76  # only germain was corrected


# Idempotency and concurrency -----------------------------------------------------------------------------------
def test_rebuilding_a_month_twice_gives_identical_rows(engine, landing, load_options):
    load_demo(engine, landing, load_options, scores=True)
    load(engine, landing, load_options, "extra.csv", [event("x-dealer", NOV, channel=c, intent=i) for c, i in
                                                      itertools.product(("bing", "chatgpt"), ("", "hours", "a", "b", "c", "d"))])  # fmt: skip
    rebuild(engine, OCT, NOV)
    first = snapshot(engine)
    rebuild(engine, NOV, now=NOW + timedelta(hours=1))
    rebuild(engine, OCT, now=NOW + timedelta(hours=2))
    assert snapshot(engine) == first
    with engine.connect() as connection:
        stamps = set(connection.execute(select(rar_monthly.c.computed_at).where(rar_monthly.c.month == NOV)).scalars())
    assert len(stamps) == 1 and stamps != {NOW}  # rewritten, not left alone


def test_concurrent_rebuilds_of_one_month_end_like_a_serial_run(engine, landing, load_options):
    load_demo(engine, landing, load_options, scores=True)
    load(engine, landing, load_options, "more.csv", [event(f"dealer-{n:03d}", NOV, channel=c, intent=i, impressions=1000 + n)
                                                     for n in range(40) for c in ("bing", "chatgpt") for i in ("", "hours", "oil")])  # fmt: skip
    rebuild(engine, OCT)
    barrier = threading.Barrier(2)
    errors = []

    def worker(index: int) -> None:
        try:
            with write_connection(engine) as connection:
                barrier.wait(timeout=30)
                with connection.begin():
                    full_rebuild(connection, NOV, now=NOW + timedelta(minutes=index))
        except Exception as error:  # reported below
            errors.append(error)

    for _ in range(3):
        threads = [threading.Thread(target=worker, args=(index,)) for index in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
    concurrent = snapshot(engine)
    rebuild(engine, NOV)
    assert snapshot(engine) == concurrent
    assert len(monthly_rows(engine, NOV)) == 43
    assert monthly_rows(engine, NOV)[GERMAIN].rar == DEMO_RAR[GERMAIN]
    assert_checks_pass(engine, NOV)


def test_concurrent_step_by_step_runs_of_one_month_end_like_a_serial_run(engine, landing, load_options):
    """As two overlapping rar_monthly_job runs do it: one transaction per asset, interleaved."""
    load_demo(engine, landing, load_options, scores=True)
    rebuild(engine, OCT, NOV)
    serial = snapshot(engine)
    load(engine, landing, load_options, "fix.csv", [exact_rar(GERMAIN, NOV, 1000, channel="bing")])
    barrier = threading.Barrier(2)
    errors = []

    def steps(connection):
        monthly.rebuild_events(connection, NOV)
        yield
        rows = monthly.dealer_months(connection, NOV)
        monthly.write_monthly(connection, NOV, rows, True, NOW)
        monthly.write_intent_monthly(connection, NOV, rows, True, NOW)
        yield
        monthly.rebuild_pressure(connection, NOV, CAP, True, NOW)
        yield
        monthly.rebuild_score_adjustments(connection, NOV, NOW)
        yield

    def worker() -> None:
        try:
            with write_connection(engine) as connection:
                runner = steps(connection)
                barrier.wait(timeout=30)
                for _ in range(4):  # one transaction per asset, each holding the month's lock
                    with connection.begin():
                        monthly.lock_month(connection, NOV)
                        next(runner)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert monthly_rows(engine, NOV)[GERMAIN].rar == DEMO_RAR[GERMAIN] + 1000
    after = snapshot(engine)
    rebuild(engine, NOV)
    assert snapshot(engine) == after != serial


def test_a_batch_loaded_during_the_rebuild_is_left_to_its_own_run(engine, landing, load_options):
    """The events check sees the batches the rebuild saw, even if a new one commits in between.

    PostgreSQL: loading takes the ingest lock, not the month's, so a file can commit between the
    rebuild's INSERT and the check (each statement has its own snapshot); the check used to count
    the new batch's keys and fail a correct month. SQLite: the load waits for the month's commit.
    """
    batches = load_demo(engine, landing, load_options)
    write_batch(landing / "late.csv", iter([exact_rar(GERMAIN, NOV, 5, channel="bing")]))
    loaded = threading.Event()

    def load_meanwhile() -> None:
        ingest_landing(engine, landing, load_options, settle_seconds=0, max_files=10)
        loaded.set()

    thread = threading.Thread(target=load_meanwhile)
    with write_connection(engine) as connection, connection.begin():
        monthly.lock_month(connection, NOV)
        summary = monthly.rebuild_events(connection, NOV)
        thread.start()
        loaded.wait(3 if engine.dialect.name == "postgresql" else 0.5)
        outcome = monthly_checks.events_latest_per_key(connection, NOV, summary.up_to_batch)
    thread.join(timeout=60)
    assert loaded.is_set()
    passed, facts = outcome
    assert passed and (facts["natural_keys"], facts["events"], stale_count(facts)) == (15, 15, 0)
    assert summary.up_to_batch == batches["nov"] and summary.batches == [batches["nov"]]

    # The late batch's own refresh picks it up.
    rebuild(engine, NOV)
    assert monthly_rows(engine, NOV)[GERMAIN].event_count == 6
    assert_checks_pass(engine, NOV)


def test_pressure_of_two_months_rebuilt_at_once_keeps_the_newest_month_current(engine, landing, load_options):
    """Writers of different months run at once (a backfill); both refresh secondary_metrics.

    November's rebuild is still open when October's starts. October must neither fail on the
    rows November is inserting nor leave October's pressure as the dealers' current value.
    """
    load_demo(engine, landing, load_options)
    with write_connection(engine) as connection, connection.begin():
        for month in (OCT, NOV):
            monthly.rebuild_events(connection, month)
            rows = monthly.dealer_months(connection, month)
            monthly.write_monthly(connection, month, rows, True, NOW)
    errors, finished = [], threading.Event()

    def october() -> None:
        try:
            with write_connection(engine) as connection, connection.begin():
                monthly.lock_month(connection, OCT)
                monthly.rebuild_pressure(connection, OCT, CAP, True, NOW)
        except Exception as error:  # reported below
            errors.append(error)
        finished.set()

    thread = threading.Thread(target=october)
    with write_connection(engine) as connection, connection.begin():
        monthly.lock_month(connection, NOV)
        monthly.rebuild_pressure(connection, NOV, CAP, True, NOW)
        thread.start()
        finished.wait(1.0)  # October gets as far as it can while November is open
    thread.join(timeout=60)
    assert not errors, errors
    assert current_pressure(engine) == {dealer: (NOV, pytest.approx(float(rar) / CAP)) for dealer, rar in DEMO_RAR.items()}
    assert set(pressure_rows(engine, OCT)) == set(DEMO_RAR)


def test_a_second_writer_of_the_month_waits_for_the_first(engine):
    """lock_month (PostgreSQL advisory lock) / BEGIN IMMEDIATE (SQLite): writers of a month serialize."""
    order = []
    holding = threading.Event()

    def first() -> None:
        with write_connection(engine) as connection, connection.begin():
            monthly.lock_month(connection, NOV)
            holding.set()
            time.sleep(0.5)
            order.append("first commits")

    thread = threading.Thread(target=first)
    thread.start()
    assert holding.wait(10)
    with write_connection(engine) as connection, connection.begin():
        monthly.lock_month(connection, NOV)
        order.append("second holds the lock")
    thread.join()
    assert order == ["first commits", "second holds the lock"]


def test_writers_of_different_months_do_not_wait_on_postgresql(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite admits one writer at a time, whatever the month")
    holding, done = threading.Event(), threading.Event()

    def first() -> None:
        with write_connection(engine) as connection, connection.begin():
            monthly.lock_month(connection, NOV)
            holding.set()
            assert done.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    assert holding.wait(10)
    started = time.monotonic()
    with write_connection(engine) as connection, connection.begin():
        monthly.lock_month(connection, OCT)
    assert time.monotonic() - started < 2
    done.set()
    thread.join()


# Checks -----------------------------------------------------------------------------------------------------
@pytest.fixture
def built_month(engine, landing, load_options):
    load_demo(engine, landing, load_options)
    rebuild(engine, OCT, NOV)
    assert_checks_pass(engine, NOV)
    return engine


def corrupt(engine, *statements) -> None:
    with write_connection(engine) as connection, connection.begin():
        for statement in statements:
            connection.execute(statement)


def test_check_recoverable_within_rar_fails(built_month):
    lou = (rar_monthly.c.dealer_id == LOU) & (rar_monthly.c.month == NOV)
    corrupt(built_month, update(rar_monthly).where(lou).values(recoverable=rar_monthly.c.rar + 1))
    passed, facts = check(built_month, monthly_checks.recoverable_within_rar, NOV)
    assert not passed and facts["rows_outside_0_to_rar"] == 1
    corrupt(built_month, update(rar_monthly).where(lou).values(recoverable=-1))
    assert not check(built_month, monthly_checks.recoverable_within_rar, NOV)[0]
    assert check(built_month, monthly_checks.recoverable_within_rar, OCT)[0]  # per month


def test_check_pressure_in_range_fails(built_month):
    corrupt(built_month, update(rar_pressure).where(rar_pressure.c.dealer_id == GERMAIN, rar_pressure.c.month == NOV).values(pressure=1.5))
    passed, facts = check(built_month, monthly_checks.pressure_in_range, NOV)
    assert not passed and facts["rows_outside_0_1"] == 1
    corrupt(built_month, update(rar_pressure).where(rar_pressure.c.month == NOV).values(pressure=-0.01))
    assert check(built_month, monthly_checks.pressure_in_range, NOV) == (False, {"rows_outside_0_1": 3})


def test_check_one_row_per_dealer_fails_on_a_stale_row(built_month):
    stale = monthly_rows(built_month, NOV)[LOU]._asdict() | {"dealer_id": "gone-dealer"}
    corrupt(built_month, insert(rar_monthly).values(**stale))
    passed, facts = check(built_month, monthly_checks.monthly_one_row_per_dealer, NOV)
    assert not passed and facts == {"dealers_with_events": 3, "monthly_rows": 4, "stale_rows": 1}


def test_check_one_row_per_dealer_fails_on_a_missing_row(built_month):
    corrupt(built_month, delete(rar_monthly).where(rar_monthly.c.dealer_id == DEMO, rar_monthly.c.month == NOV))
    passed, facts = check(built_month, monthly_checks.monthly_one_row_per_dealer, NOV)
    assert not passed and facts["monthly_rows"] == 2


def test_check_reconciliation_fails_on_a_wrong_total(built_month):
    corrupt(built_month, update(rar_monthly).where(rar_monthly.c.dealer_id == GERMAIN, rar_monthly.c.month == NOV).values(rar=rar_monthly.c.rar + 1))
    passed, facts = check(built_month, monthly_checks.monthly_reconciles, NOV)
    assert not passed and facts["difference"] == pytest.approx(1.0, abs=0.011)
    assert check(built_month, monthly_checks.monthly_reconciles, OCT)[0]


def test_check_reconciliation_tolerates_rounding(built_month):
    # One cent off over three dealers is within half a cent per dealer plus a cent.
    corrupt(built_month, update(rar_monthly).where(rar_monthly.c.dealer_id == GERMAIN, rar_monthly.c.month == NOV).values(rar=rar_monthly.c.rar + Decimal("0.01")))
    assert check(built_month, monthly_checks.monthly_reconciles, NOV)[0]


def test_check_top_intents_sorted_fails_when_unsorted_or_too_long(built_month):
    top = monthly_rows(built_month, NOV)[GERMAIN].top_losing_intents
    corrupt(built_month, update(rar_monthly).where(rar_monthly.c.dealer_id == GERMAIN, rar_monthly.c.month == NOV).values(top_losing_intents=list(reversed(top))))
    passed, facts = check(built_month, monthly_checks.top_intents_sorted, NOV)
    assert not passed and facts == {"dealers_with_bad_top_intents": 1, "examples": GERMAIN}
    six = top + [{"intent": "extra", "rar": 0.0}]
    corrupt(built_month, update(rar_monthly).where(rar_monthly.c.dealer_id == GERMAIN, rar_monthly.c.month == NOV).values(top_losing_intents=six))
    assert not check(built_month, monthly_checks.top_intents_sorted, NOV)[0]


def test_check_events_latest_per_key_fails(built_month, landing, load_options):
    engine = built_month
    load(engine, landing, load_options, "fix.csv", [row for row in demo_rows() if row[0] == LOU])
    rebuild(engine, NOV)
    assert check(engine, monthly_checks.events_latest_per_key, NOV)[0]
    with engine.connect() as connection:
        newest, older = connection.execute(select(rar_batches.c.batch_id).order_by(rar_batches.c.batch_id.desc()).limit(2)).scalars().all()
    # An event row from an older batch than the newest one carrying its key.
    corrupt(engine, update(rar_events).where(rar_events.c.dealer_id == LOU, rar_events.c.intent_cluster == "hours").values(batch_id=older))
    passed, facts = check(engine, monthly_checks.events_latest_per_key, NOV)
    assert not passed and stale_count(facts) == 1
    # A natural key with no event.
    rebuild(engine, NOV)
    corrupt(engine, delete(rar_events).where(rar_events.c.dealer_id == DEMO, rar_events.c.intent_cluster == "hours", rar_events.c.month == NOV))
    passed, facts = check(engine, monthly_checks.events_latest_per_key, NOV)
    assert not passed and facts["natural_keys"] == 15 and facts["events"] == 14


def test_checks_pass_on_an_empty_month(engine):
    assert_checks_pass(engine, DEC)
