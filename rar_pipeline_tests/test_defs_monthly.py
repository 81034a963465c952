"""The monthly Dagster layer: assets, checks and metadata, `rar_month_refresh_sensor`, `rar_monthly_job`.

Everything runs for real: files are loaded by materializing the ingest assets, months are rebuilt
by `dg.materialize` or by the job the sensor targets, on an ephemeral instance, against SQLite and
PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import select, text

from rar_pipeline.config import load_settings
from rar_pipeline.definitions import build_definitions
from rar_pipeline.defs.ingest import raw_events
from rar_pipeline.defs.jobs import rar_monthly_job
from rar_pipeline.defs.monthly import (
    EVENTS_KEY,
    INTENT_MONTHLY_KEY,
    MONTHLY_KEY,
    PRESSURE_KEY,
    SCORE_ADJUSTMENTS_KEY,
    dealer_scores,
    events,
    monthly_aggregates,
    pressure,
    score_adjustments,
)
from rar_pipeline.defs.partitions import monthly_partitions
from rar_pipeline.defs.resources import LandingZoneResource, RarRulesResource, WarehouseResource
from rar_pipeline.defs.sensors import rar_month_refresh_sensor
from rar_pipeline.months import add_months, current_month
from rar_pipeline.seed import HEADER, SCORE_HEADER, demo_rows, demo_score_rows, write_batch
from rar_pipeline.warehouse.engine import open_warehouse
from rar_pipeline.warehouse.schema import rar_monthly, rar_pressure, rar_score_adjustments

OCT, NOV = date(2025, 10, 1), date(2025, 11, 1)
MONTHLY_ASSETS = [events, monthly_aggregates, pressure, score_adjustments]
GERMAIN, LOU, DEMO = "germain-toyota-naples", "lou-grubbs-motors", "demo-rooftop"


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture
def resources(warehouse_url, landing):
    return {
        "warehouse": WarehouseResource(database_url=warehouse_url),
        "landing": LandingZoneResource(landing_dir=str(landing), settle_seconds=0),
        "rules": RarRulesResource(),
    }


@pytest.fixture
def monthly_job(warehouse_url, landing, tmp_path):
    """`rar_monthly_job` as the code location defines it, on this test's warehouse."""
    settings = load_settings({"RAR_HOME": str(tmp_path / "home")}).with_overrides(
        database_url=warehouse_url, database_url_from_env=False, landing_dir=landing, settle_seconds=0.0
    )
    return build_definitions(settings).resolve_job_def("rar_monthly_job")


def deliver(landing: Path, name: str, rows, header=HEADER) -> None:
    write_batch(landing / name, iter(rows), header=header)


def ingest(resources, instance) -> dg.ExecuteInProcessResult:
    """What rar_ingest_job does: load pending files (events and dealer scores), rebuild dealer_scores."""
    result = dg.materialize([raw_events, dealer_scores], resources=resources, instance=instance)
    assert result.success
    return result


def newest_batch(warehouse_url: str) -> int:
    engine = open_warehouse(warehouse_url)
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT max(batch_id) FROM rar_batches")).scalar_one()
    finally:
        engine.dispose()


def tick(warehouse_url: str, cursor: str | None):
    # WarehouseResource tears its engine down after use, so the context must be entered.
    with dg.build_sensor_context(cursor=cursor, resources={"warehouse": WarehouseResource(database_url=warehouse_url)}) as context:
        result = rar_month_refresh_sensor(context)
        return result, context.cursor


def materializations(result: dg.ExecuteInProcessResult) -> dict[dg.AssetKey, dict]:
    found = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        found[materialization.asset_key] = {key: value.value for key, value in materialization.metadata.items()}
    return found


def query(warehouse_url: str, statement):
    engine = open_warehouse(warehouse_url)
    try:
        with engine.connect() as connection:
            return connection.execute(statement).all()
    finally:
        engine.dispose()


# Materializing the monthly assets ------------------------------------------------------------------------
def test_materialize_the_demo_month(warehouse_url, landing, resources, instance):
    deliver(landing, "rar-demo-2025-10.csv", demo_rows(OCT, scale=0.9))
    deliver(landing, "rar-demo-2025-11.csv", demo_rows())
    deliver(landing, "rar-demo-scores-2025-11.csv", demo_score_rows(), SCORE_HEADER)
    ingest(resources, instance)
    october = dg.materialize(MONTHLY_ASSETS, partition_key="2025-10-01", resources=resources, instance=instance)
    assert october.success

    result = dg.materialize(MONTHLY_ASSETS, partition_key="2025-11-01", resources=resources, instance=instance)

    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert {(e.asset_key, e.check_name) for e in evaluations} == {
        (EVENTS_KEY, "latest_batch_per_key"),
        (MONTHLY_KEY, "one_row_per_dealer"),
        (MONTHLY_KEY, "reconciles_with_events"),
        (MONTHLY_KEY, "recoverable_within_rar"),
        (MONTHLY_KEY, "top_intents_sorted"),
        (PRESSURE_KEY, "pressure_in_range"),
    }
    assert all(e.passed for e in evaluations), [(e.check_name, e.metadata) for e in evaluations if not e.passed]
    reconcile = next(e for e in evaluations if e.check_name == "reconciles_with_events")
    assert reconcile.metadata["dealer_rar_total"].value == pytest.approx(220894.07)

    found = materializations(result)
    assert set(found) == {EVENTS_KEY, MONTHLY_KEY, INTENT_MONTHLY_KEY, PRESSURE_KEY, SCORE_ADJUSTMENTS_KEY}
    assert all(
        event.partition == "2025-11-01" for event in result.get_asset_materialization_events()
    )
    assert found[EVENTS_KEY]["dagster/row_count"] == 15
    assert found[EVENTS_KEY]["batches_used"] == [2]  # the November file; October's is batch 1
    monthly = found[MONTHLY_KEY]
    assert monthly["dagster/row_count"] == 3 and monthly["dealers"] == 3 and monthly["events"] == 15
    assert monthly["total_rar"] == pytest.approx(89954.17 + 65667.12 + 65272.78)
    assert monthly["total_recoverable"] == pytest.approx(40479.38 + 29550.20 + 29372.75)
    assert monthly["is_complete"] is True  # 2025-11 is a closed month
    table = monthly["top_dealers"].splitlines()
    assert table[0].startswith("| dealer | RaR |")
    assert table[2] == "| germain-toyota-naples | $89,954.17 | $40,479.38 | 5,949 | service_price |"
    assert [line.split("|")[1].strip() for line in table[2:]] == [GERMAIN, LOU, DEMO]
    assert found[INTENT_MONTHLY_KEY]["dagster/row_count"] == 15
    assert found[PRESSURE_KEY]["dagster/row_count"] == 3
    assert found[PRESSURE_KEY]["trend_counts"] == {"up": 3, "stable": 0, "down": 0}
    assert found[PRESSURE_KEY]["max_pressure"] == pytest.approx(0.8995417)
    assert found[SCORE_ADJUSTMENTS_KEY]["dagster/row_count"] == 3

    rows = {row.dealer_id: row for row in query(warehouse_url, select(rar_monthly).where(rar_monthly.c.month == NOV))}
    assert rows[GERMAIN].rar == Decimal("89954.17") and rows[LOU].rar == Decimal("65667.12")
    (adjusted,) = query(warehouse_url, select(rar_score_adjustments).where(rar_score_adjustments.c.dealer_id == GERMAIN))
    assert adjusted.trend == "up" and adjusted.qai_adjusted == pytest.approx(72 * 0.98)


def test_the_running_month_is_not_complete(warehouse_url, landing, resources, instance):
    running = current_month()
    deliver(landing, "now.csv", demo_rows(running))
    ingest(resources, instance)
    result = dg.materialize(MONTHLY_ASSETS, partition_key=running.isoformat(), resources=resources, instance=instance)
    assert result.success
    assert materializations(result)[MONTHLY_KEY]["is_complete"] is False
    flags = query(warehouse_url, select(rar_monthly.c.is_complete, rar_pressure.c.is_complete).join(
        rar_pressure, (rar_pressure.c.dealer_id == rar_monthly.c.dealer_id) & (rar_pressure.c.month == rar_monthly.c.month)))  # fmt: skip
    assert flags and all(tuple(flag) == (False, False) for flag in flags)


# The refresh sensor -------------------------------------------------------------------------------------------
def test_refresh_sensor_requests_one_run_per_touched_month_then_skips(warehouse_url, landing, resources, instance):
    first, cursor = tick(warehouse_url, None)
    assert isinstance(first, dg.SkipReason) and cursor == "0"

    deliver(landing, "rar-demo-2025-10.csv", demo_rows(OCT, scale=0.9))
    ingest(resources, instance)  # batch 1
    deliver(landing, "rar-demo-2025-11.csv", demo_rows())
    deliver(landing, "rar-demo-scores-2025-11.csv", demo_score_rows(), SCORE_HEADER)
    ingest(resources, instance)  # batches 2 (events) and 3 (scores)
    assert newest_batch(warehouse_url) == 3

    requests, cursor = tick(warehouse_url, cursor)
    assert cursor == "3"  # the newest batch id
    # One run per month; the run key names the month and the newest events batch behind it. The
    # November scores (batch 3) ride along with November's full run, which rebuilds the adjustments.
    assert [(r.partition_key, r.run_key, r.asset_selection, r.tags) for r in requests] == [
        ("2025-10-01", "refresh-2025-10-01-b1", None, {"rar/refresh": "events"}),
        ("2025-11-01", "refresh-2025-11-01-b2", None, {"rar/refresh": "events"}),
    ]
    assert all(r.job_name in (None, "rar_monthly_job") for r in requests)
    # Deterministic: the same tick evaluated again asks for the same runs (Dagster dedupes by run_key).
    again, again_cursor = tick(warehouse_url, "0")
    assert [r.run_key for r in again] == [r.run_key for r in requests] and again_cursor == cursor

    skipped, same_cursor = tick(warehouse_url, cursor)
    assert isinstance(skipped, dg.SkipReason) and same_cursor == cursor
    assert skipped.skip_message == "no batches loaded after batch 3"


def test_late_data_requests_the_old_month_and_the_following_month(warehouse_url, landing, resources, instance):
    deliver(landing, "rar-demo-2025-10.csv", demo_rows(OCT, scale=0.9))
    deliver(landing, "rar-demo-2025-11.csv", demo_rows())
    ingest(resources, instance)
    _, cursor = tick(warehouse_url, None)
    assert cursor == "2"

    deliver(landing, "late-2025-10.csv", [[GERMAIN, "2025-10", "chatgpt", 1000, 0.5, 0.05, 0.3, 0.04, 0.18, 2000, 0.45, "hours"]])
    ingest(resources, instance)
    requests, cursor = tick(warehouse_url, cursor)
    assert cursor == "3"
    assert [(r.partition_key, r.run_key) for r in requests] == [
        ("2025-10-01", "refresh-2025-10-01-b3"),
        ("2025-11-01", "refresh-2025-11-01-b3"),  # November's trend compares with October
    ]

    # Late data for a month whose following month has no data: that month alone.
    deliver(landing, "late-2025-06.csv", demo_rows(date(2025, 6, 1)))
    ingest(resources, instance)
    requests, cursor = tick(warehouse_url, cursor)
    assert [(r.partition_key, r.run_key) for r in requests] == [("2025-06-01", "refresh-2025-06-01-b4")]
    assert cursor == "4"


def test_a_rejected_file_moves_the_cursor_but_requests_nothing(warehouse_url, landing, resources, instance):
    deliver(landing, "rar-demo-2025-11.csv", demo_rows())
    ingest(resources, instance)
    _, cursor = tick(warehouse_url, None)
    (landing / "broken.csv").write_text("not,a,rar,header\n1,2,3,4\n")
    ingest(resources, instance)
    result, new_cursor = tick(warehouse_url, cursor)
    assert isinstance(result, dg.SkipReason)
    # (PostgreSQL's sequence skips the id of the rolled-back attempt: the rejected file may be 3.)
    newest = newest_batch(warehouse_url)
    assert new_cursor == str(newest) and result.skip_message == f"batches 2..{newest} touched no month"


def test_a_dealer_score_file_requests_a_score_adjustments_run(warehouse_url, landing, resources, instance, monthly_job):
    deliver(landing, "rar-demo-2025-10.csv", demo_rows(OCT, scale=0.9))
    deliver(landing, "rar-demo-2025-11.csv", demo_rows())
    ingest(resources, instance)
    requests, cursor = tick(warehouse_url, None)
    for request in requests:
        run = monthly_job.execute_in_process(partition_key=request.partition_key, instance=instance, tags=request.tags)
        assert run.success
    assert query(warehouse_url, select(rar_score_adjustments)) == []  # no scores yet

    deliver(landing, "rar-demo-scores-2025-11.csv", demo_score_rows(), SCORE_HEADER)
    ingest(resources, instance)  # loads the file and rebuilds rar/dealer_scores
    (request,), cursor = tick(warehouse_url, cursor)
    assert request.partition_key == "2025-11-01"
    assert request.run_key == "scores-2025-11-01-b3"
    # New scores can make a P0 true: pressure (which queues alerts) is rebuilt with the adjustments.
    assert request.asset_selection == [PRESSURE_KEY, SCORE_ADJUSTMENTS_KEY]
    assert request.tags == {"rar/refresh": "dealer_scores"}

    run = monthly_job.execute_in_process(
        partition_key=request.partition_key, asset_selection=request.asset_selection, instance=instance, tags=request.tags
    )
    assert run.success
    assert {event.asset_key for event in run.get_asset_materialization_events()} == {PRESSURE_KEY, SCORE_ADJUSTMENTS_KEY}
    adjusted = {row.dealer_id: row for row in query(warehouse_url, select(rar_score_adjustments))}
    assert set(adjusted) == {GERMAIN, LOU, DEMO}
    assert adjusted[GERMAIN].aiv_adjusted == pytest.approx(85 * (1 - 0.04 * 0.8995417))


# Partitions and the job ----------------------------------------------------------------------------------------
def test_monthly_partitions_start_in_2024_and_include_the_running_month(tmp_path):
    settings = load_settings({"RAR_HOME": str(tmp_path)})
    job = build_definitions(settings).resolve_job_def(rar_monthly_job.name)
    assert job.partitions_def == monthly_partitions  # inferred from the assets
    assert monthly_partitions.timezone == "UTC"
    keys = monthly_partitions.get_partition_keys()
    assert keys[0] == "2024-01-01"
    assert keys[-1] == current_month().isoformat()  # end_offset=1: the running month exists
    assert keys[-2] == add_months(current_month(), -1).isoformat()
    assert len(keys) >= 24  # a 24-month backfill has its partitions
    assert all(keys[n + 1] == add_months(date.fromisoformat(keys[n]), 1).isoformat() for n in range(len(keys) - 1))
    for asset in (events, pressure, score_adjustments):
        assert asset.partitions_def == monthly_partitions
    assert monthly_aggregates.partitions_def == monthly_partitions


def test_the_start_month_comes_from_rar_start_month(tmp_path):
    code = "from rar_pipeline.defs.partitions import monthly_partitions as p; print(p.get_first_partition_key())"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RAR_", "DAGSTER_"))}
    env.update(RAR_START_MONTH="2023-05", RAR_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "2023-05-01"


def test_monthly_job_selects_the_monthly_assets_and_their_checks(monthly_job):
    assert monthly_job.partitions_def == monthly_partitions
    assert monthly_job.asset_layer.selected_asset_keys == {
        EVENTS_KEY, MONTHLY_KEY, INTENT_MONTHLY_KEY, PRESSURE_KEY, SCORE_ADJUSTMENTS_KEY,
    }  # fmt: skip
    checks = {(key.asset_key, key.name) for key in monthly_job.asset_layer.asset_graph.asset_check_keys}
    assert (MONTHLY_KEY, "one_row_per_dealer") in checks and (PRESSURE_KEY, "pressure_in_range") in checks


def install_ghost_row_trigger(warehouse_url: str, month: str) -> None:
    """A trigger that slips a stale row into rar_monthly whenever month `month` is written."""
    columns = ("dealer_id, month, lost_sessions, lost_leads, lost_sales, rar, recoverable, impressions, event_count, "
               "top_losing_intents, recovery_rate, zero_click_rate, is_complete, computed_at")  # fmt: skip
    values = "'ghost-dealer', NEW.month, 0, 0, 0, 0, 0, 0, 0, '[]', NULL, NULL, NEW.is_complete, NEW.computed_at"
    engine = open_warehouse(warehouse_url)
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql(
                f"CREATE TRIGGER ghost_row AFTER INSERT ON rar_monthly "
                f"WHEN NEW.month = '{month}' AND NEW.dealer_id <> 'ghost-dealer' "
                f"BEGIN INSERT OR IGNORE INTO rar_monthly ({columns}) VALUES ({values}); END"
            )
        else:
            connection.exec_driver_sql(
                f"CREATE OR REPLACE FUNCTION ghost_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.month = DATE '{month}' AND NEW.dealer_id <> 'ghost-dealer' THEN "
                f"INSERT INTO rar_monthly ({columns}) VALUES ({values}) ON CONFLICT DO NOTHING; END IF; "
                f"RETURN NULL; END $$"
            )
            connection.exec_driver_sql(
                "CREATE TRIGGER ghost_row AFTER INSERT ON rar_monthly FOR EACH ROW EXECUTE FUNCTION ghost_row()"
            )
    engine.dispose()


def test_one_failing_month_does_not_fail_the_other(warehouse_url, landing, resources, instance, monthly_job):
    deliver(landing, "rar-demo-2025-10.csv", demo_rows(OCT, scale=0.9))
    deliver(landing, "rar-demo-2025-11.csv", demo_rows())
    ingest(resources, instance)
    install_ghost_row_trigger(warehouse_url, "2025-10-01")

    runs = {}
    for key in ("2025-10-01", "2025-11-01"):
        runs[key] = monthly_job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False)

    october, november = runs["2025-10-01"], runs["2025-11-01"]
    assert not october.success and november.success
    assert october.run_id != november.run_id
    assert instance.get_run_by_id(october.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(november.run_id).status == dg.DagsterRunStatus.SUCCESS

    # October: the blocking check failed, so nothing downstream of rar/monthly ran.
    failed = {e.check_name: e for e in october.get_asset_check_evaluations() if not e.passed}
    assert set(failed) == {"one_row_per_dealer"}  # the ghost row has rar 0: the totals still reconcile
    assert failed["one_row_per_dealer"].metadata["stale_rows"].value == 1
    october_assets = {event.asset_key for event in october.get_asset_materialization_events()}
    assert PRESSURE_KEY not in october_assets and SCORE_ADJUSTMENTS_KEY not in october_assets
    assert query(warehouse_url, select(rar_pressure).where(rar_pressure.c.month == OCT)) == []

    # November: every asset and check of its own run.
    assert {event.asset_key for event in november.get_asset_materialization_events()} == {
        EVENTS_KEY, MONTHLY_KEY, INTENT_MONTHLY_KEY, PRESSURE_KEY, SCORE_ADJUSTMENTS_KEY,
    }  # fmt: skip
    assert all(e.passed for e in november.get_asset_check_evaluations())
    november_rows = query(warehouse_url, select(rar_monthly.c.dealer_id).where(rar_monthly.c.month == NOV))
    assert sorted(row.dealer_id for row in november_rows) == sorted([GERMAIN, LOU, DEMO])
    # The partition status the UI shows: November materialized, October not fully.
    assert instance.get_latest_materialization_event(PRESSURE_KEY).asset_materialization.partition == "2025-11-01"


def test_a_month_without_data_succeeds_with_no_rows(warehouse_url, landing, resources, instance, monthly_job):
    deliver(landing, "rar-demo-2025-11.csv", demo_rows())
    ingest(resources, instance)
    run = monthly_job.execute_in_process(partition_key="2024-01-01", instance=instance)
    assert run.success
    found = materializations(run)
    assert found[MONTHLY_KEY]["dagster/row_count"] == 0 and found[MONTHLY_KEY]["total_rar"] == 0
    assert found[EVENTS_KEY]["batches_used"] == []
