"""`rar/raw_events` and its `ledger_reconciles` check, materialized with `dg.materialize` on an
ephemeral instance against a real warehouse (SQLite and PostgreSQL)."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, select, text, update

from rar_pipeline.defs.ingest import RAW_EVENTS_KEY, raw_events
from rar_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from rar_pipeline.ledger import reconcile_batches
from rar_pipeline.seed import HEADER, SeedSpec, demo_rows, synthetic_rows, write_batch
from rar_pipeline.warehouse.schema import rar_batches, rar_raw_events, rar_rejected_rows

NODE = "rar__raw_events"


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def materialize_raw_events(warehouse_url: str, landing: Path, instance: dg.DagsterInstance, **landing_config):
    return dg.materialize(
        [raw_events],
        resources={
            "warehouse": WarehouseResource(database_url=warehouse_url),
            "landing": LandingZoneResource(landing_dir=str(landing), settle_seconds=0, **landing_config),
        },
        instance=instance,
        raise_on_error=False,
    )


def run_metadata(result: dg.ExecuteInProcessResult) -> dict:
    (materialization,) = result.asset_materializations_for_node(NODE)
    assert materialization.asset_key == RAW_EVENTS_KEY
    return {key: value.value for key, value in materialization.metadata.items()}


def check_evaluation(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.asset_key == RAW_EVENTS_KEY and evaluation.check_name == "ledger_reconciles"
    return evaluation


def count(engine, table, **where) -> int:
    query = select(func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    with engine.connect() as connection:
        return connection.execute(query).scalar_one()


def demo_file(folder: Path, name: str = "rar-demo-2025-11.csv") -> Path:
    path = folder / name
    write_batch(path, demo_rows())
    return path


def csv_line(values) -> str:
    return ",".join(map(str, values))


def file_with_bad_rows(folder: Path) -> Path:
    """200 good rows, then one bad row per reason (and a repeated key: both copies are rejected)."""
    good = list(synthetic_rows(SeedSpec(dealers=10, months=3, rows=200, seed=7)))
    template = next(demo_rows())
    bad = {
        "invalid_number": ["bad-number", *template[1:3], "lots", *template[4:]],
        "month_out_of_range": ["old-month", "2019-01", *template[2:]],
        "invalid_dealer_id": ["bad dealer!", *template[1:]],
        "missing_field": ["no-impressions", *template[1:3], "", *template[4:]],
        "out_of_range": ["big-share", *template[1:4], 1.5, *template[5:]],
    }
    lines = [",".join(HEADER)] + [csv_line(row) for row in good]
    lines += [csv_line(row) for row in bad.values()]
    lines.append(csv_line(good[0]))  # a second copy of the first row's key
    lines.append("too,few,fields")  # malformed_row
    path = folder / "mixed.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------------------------


def test_asset_shape():
    spec = raw_events.specs_by_key[RAW_EVENTS_KEY]
    assert spec.group_name == "ingest"
    assert spec.description and "landing zone" in spec.description.lower()
    assert raw_events.partitions_def is None
    assert {check.name for check in raw_events.check_specs} == {"ledger_reconciles"}
    assert set(raw_events.required_resource_keys) >= {"warehouse", "landing"}


def test_demo_batch_loads_with_metadata_and_a_passing_check(warehouse_url, engine, landing, instance):
    demo_file(landing)

    result = materialize_raw_events(warehouse_url, landing, instance)

    assert result.success
    metadata = run_metadata(result)
    assert metadata["files_loaded"] == 1
    assert metadata["files_duplicate"] == 0
    assert metadata["files_rejected"] == 0
    assert metadata["files_skipped"] == 0
    assert metadata["rows_accepted"] == 15
    assert metadata["rows_rejected"] == 0
    assert metadata["rejected_by_reason"] == {}
    assert metadata["months_touched"] == ["2025-11-01"]
    assert metadata["dagster/row_count"] == 15
    assert len(metadata["batch_ids"]) == 1
    assert "| rar-demo-2025-11.csv | loaded | 15 | 15 | 0 |" in metadata["files"]

    evaluation = check_evaluation(result)
    assert evaluation.passed
    assert evaluation.metadata["files_checked"].value == 1
    assert evaluation.metadata["problems"].value == "none"

    # The warehouse and the landing folder agree with the metadata.
    assert count(engine, rar_raw_events) == 15
    assert count(engine, rar_batches, status="loaded") == 1
    assert list(landing.glob("*.csv")) == []
    assert [p.name.endswith("-rar-demo-2025-11.csv") for p in (landing / ".processed").iterdir()] == [True]

    # The instance recorded the materialization and the check, as the UI would show them.
    latest = instance.get_latest_materialization_event(RAW_EVENTS_KEY)
    assert latest is not None and latest.asset_materialization.metadata["dagster/row_count"].value == 15


def test_same_bytes_under_another_name_is_a_duplicate_adding_no_rows(warehouse_url, engine, landing, tmp_path, instance):
    original = demo_file(tmp_path / "outbox")
    shutil.copyfile(original, landing / "first.csv")
    assert materialize_raw_events(warehouse_url, landing, instance).success

    shutil.copyfile(original, landing / "same-bytes-new-name.csv")
    result = materialize_raw_events(warehouse_url, landing, instance)

    assert result.success
    metadata = run_metadata(result)
    assert metadata["files_duplicate"] == 1
    assert metadata["files_loaded"] == 0
    assert metadata["rows_accepted"] == 0
    assert metadata["months_touched"] == []
    assert metadata["batch_ids"] == []
    assert metadata["dagster/row_count"] == 15  # the table total, unchanged
    assert "| same-bytes-new-name.csv | duplicate | 0 | 0 | 0 | same bytes as batch" in metadata["files"]
    assert check_evaluation(result).passed

    assert count(engine, rar_raw_events) == 15
    assert count(engine, rar_batches, status="duplicate") == 1
    assert len(list((landing / ".duplicates").iterdir())) == 1


def test_bad_rows_are_reported_by_reason(warehouse_url, engine, landing, instance):
    file_with_bad_rows(landing)

    result = materialize_raw_events(warehouse_url, landing, instance)

    assert result.success
    metadata = run_metadata(result)
    assert metadata["files_loaded"] == 1
    assert metadata["rejected_by_reason"] == {
        "duplicate_key_in_batch": 2,
        "invalid_dealer_id": 1,
        "invalid_number": 1,
        "malformed_row": 1,
        "missing_field": 1,
        "month_out_of_range": 1,
        "out_of_range": 1,
    }
    assert metadata["rows_rejected"] == 8
    assert metadata["rows_accepted"] == 199  # 200 good rows minus the first, whose key was repeated
    assert metadata["months_touched"] == ["2025-09-01", "2025-10-01", "2025-11-01"]
    assert metadata["dagster/row_count"] == 199
    assert "| mixed.csv | loaded | 207 | 199 | 8 |" in metadata["files"]
    assert check_evaluation(result).passed
    assert count(engine, rar_raw_events) == 199
    assert count(engine, rar_rejected_rows) == 8


def test_whole_file_rejects_show_in_metadata(warehouse_url, engine, landing, instance):
    (landing / "header-only.csv").write_text(",".join(HEADER) + "\n")
    lines = [",".join(HEADER)] + [csv_line(row) for row in demo_rows()] + ["a,b"] * 5  # 5 of 20 rows bad
    (landing / "too-many-bad.csv").write_text("\n".join(lines) + "\n")

    result = materialize_raw_events(warehouse_url, landing, instance)

    assert result.success
    metadata = run_metadata(result)
    assert metadata["files_rejected"] == 2
    assert metadata["files_loaded"] == 0
    assert metadata["rows_accepted"] == 0
    assert metadata["dagster/row_count"] == 0
    assert "| header-only.csv | rejected | 0 | 0 | 0 | header_only |" in metadata["files"]
    assert "| too-many-bad.csv | rejected | 0 | 0 | 0 | too_many_rejects |" in metadata["files"]
    evaluation = check_evaluation(result)
    assert evaluation.passed and evaluation.metadata["files_checked"].value == 2
    assert count(engine, rar_raw_events) == 0 and count(engine, rar_rejected_rows) == 0
    assert len(list((landing / ".rejected").iterdir())) == 2


def test_empty_landing_zone_materializes_with_nothing_loaded(warehouse_url, landing, instance):
    result = materialize_raw_events(warehouse_url, landing, instance)
    assert result.success
    metadata = run_metadata(result)
    assert metadata["files_loaded"] == 0 and metadata["dagster/row_count"] == 0
    assert metadata["files"] == "no pending files"
    assert check_evaluation(result).passed


def test_files_per_run_are_bounded(warehouse_url, landing, instance):
    demo_file(landing, "a.csv")
    write_batch(landing / "b.jsonl", synthetic_rows(SeedSpec(rows=30)), "jsonl")

    first = run_metadata(materialize_raw_events(warehouse_url, landing, instance, max_files_per_run=1))
    second = run_metadata(materialize_raw_events(warehouse_url, landing, instance, max_files_per_run=1))

    assert (first["files_loaded"], second["files_loaded"]) == (1, 1)
    assert first["rows_accepted"] + second["rows_accepted"] == 45
    assert second["dagster/row_count"] == 45


# The check can fail ------------------------------------------------------------------------------


def test_reconcile_batches_reports_a_corrupted_ledger(warehouse_url, engine, landing, instance):
    demo_file(landing)
    file_with_bad_rows(landing)
    result = materialize_raw_events(warehouse_url, landing, instance)
    assert result.success
    demo_batch, mixed_batch = run_metadata(result)["batch_ids"]

    with engine.connect() as connection:
        assert reconcile_batches(connection, [demo_batch, mixed_batch]) == []

    with engine.begin() as connection:
        connection.execute(
            update(rar_batches).where(rar_batches.c.batch_id == demo_batch).values(rows_accepted=rar_batches.c.rows_accepted + 1)
        )
        connection.execute(
            rar_rejected_rows.delete().where(rar_rejected_rows.c.batch_id == mixed_batch, rar_rejected_rows.c.reason == "malformed_row")
        )
    with engine.connect() as connection:
        problems = reconcile_batches(connection, [demo_batch, mixed_batch])

    assert sorted(problems) == sorted(
        [
            f"batch {demo_batch}: read 15 != accepted 16 + rejected 0",
            f"batch {demo_batch}: ledger says 16 accepted, table has 15",
            f"batch {mixed_batch}: ledger says 8 rejected, table has 7",
        ]
    )


def test_reconcile_batches_reports_rows_under_a_batch_that_is_not_loaded(warehouse_url, engine, landing, instance):
    demo_file(landing)
    batch_id = run_metadata(materialize_raw_events(warehouse_url, landing, instance))["batch_ids"][0]
    with engine.begin() as connection:
        connection.execute(update(rar_batches).where(rar_batches.c.batch_id == batch_id).values(status="rejected", reason="test"))
    with engine.connect() as connection:
        assert reconcile_batches(connection, [batch_id]) == [f"batch {batch_id} is rejected but has 15 raw and 0 rejected rows"]


def _install_row_losing_trigger(engine) -> None:
    """Something else writing to the warehouse drops one row of a file as its ledger row is finalised."""
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.execute(
                text(
                    "CREATE TRIGGER rar_test_lose_row AFTER UPDATE OF rows_accepted ON rar_batches "
                    "WHEN NEW.rows_accepted > 0 BEGIN "
                    "DELETE FROM rar_raw_events WHERE batch_id = NEW.batch_id AND line_no = 2; END"
                )
            )
        else:
            connection.execute(
                text(
                    "CREATE OR REPLACE FUNCTION rar_test_lose_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "DELETE FROM rar_raw_events WHERE batch_id = NEW.batch_id AND line_no = 2; RETURN NEW; END $$"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER rar_test_lose_row AFTER UPDATE OF rows_accepted ON rar_batches "
                    "FOR EACH ROW WHEN (NEW.rows_accepted > 0) EXECUTE FUNCTION rar_test_lose_row()"
                )
            )


def test_check_fails_and_blocks_when_the_ledger_disagrees_with_the_table(warehouse_url, engine, landing, instance):
    _install_row_losing_trigger(engine)
    demo_file(landing)

    result = materialize_raw_events(warehouse_url, landing, instance)

    evaluation = check_evaluation(result)
    assert not evaluation.passed
    assert evaluation.blocking and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "ledger says 15 accepted, table has 14" in evaluation.metadata["problems"].value
    # A failed blocking check fails the step, so nothing downstream would run on bad data.
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert failure.step_failure_data.error.cls_name == "DagsterAssetCheckFailedError"
    assert count(engine, rar_raw_events) == 14
