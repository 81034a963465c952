"""The code location (`build_definitions`) and the one place that reads the environment (`config`)."""

from __future__ import annotations

import importlib
from datetime import date

import dagster as dg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

# What the UI is served: a snapshot of the repository (internal API, but exactly what the webserver gets).
from dagster._core.remote_representation.external_data import RepositorySnap

from rar_pipeline.config import ConfigError, load_settings
from rar_pipeline.defs.ingest import RAW_EVENTS_KEY
from rar_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from rar_pipeline.definitions import build_definitions
from rar_pipeline.seed import demo_rows, write_batch
from rar_pipeline.warehouse.schema import metadata

PASSWORD = "s3cret-pw"


# config.load_settings --------------------------------------------------------------------------


def test_defaults_come_from_rar_home(tmp_path):
    settings = load_settings({"RAR_HOME": str(tmp_path)})
    assert settings.home == tmp_path
    assert settings.database_url == f"sqlite:///{tmp_path / 'rar.db'}"
    assert settings.database_url_from_env is False
    assert settings.landing_dir == tmp_path / "landing"
    assert settings.dagster_home == tmp_path / "dagster_home"
    assert settings.start_month == date(2024, 1, 1)
    assert settings.settle_seconds == 5.0
    assert settings.max_files_per_run == 100
    assert settings.max_file_bytes == 2 * 1024**3
    assert settings.reject_budget == 0.05


def test_default_home_is_dot_rar_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings({"RAR_HOME": "", "RAR_DATABASE_URL": ""})  # empty = unset
    assert settings.home == tmp_path / ".rar"
    assert settings.home.is_absolute()
    assert settings.database_url == f"sqlite:///{tmp_path / '.rar' / 'rar.db'}"
    assert not settings.database_url_from_env


def test_every_setting_can_be_overridden(tmp_path):
    settings = load_settings(
        {
            "RAR_HOME": str(tmp_path / "home"),
            "RAR_DATABASE_URL": "postgresql://rar@db.example:5432/rar",
            "RAR_LANDING_DIR": str(tmp_path / "drop"),
            "DAGSTER_HOME": str(tmp_path / "dh"),
            "RAR_START_MONTH": "2025-03",
            "RAR_SETTLE_SECONDS": "0",
            "RAR_MAX_FILES_PER_RUN": "7",
            "RAR_MAX_FILE_BYTES": "1000",
            "RAR_REJECT_BUDGET": "0.2",
        }
    )
    assert settings.database_url == "postgresql://rar@db.example:5432/rar"
    assert settings.database_url_from_env is True
    assert settings.landing_dir == tmp_path / "drop"
    assert settings.dagster_home == tmp_path / "dh"
    assert settings.start_month == date(2025, 3, 1)
    assert (settings.settle_seconds, settings.max_files_per_run, settings.max_file_bytes, settings.reject_budget) == (0, 7, 1000, 0.2)


@pytest.mark.parametrize(
    "name, value",
    [
        ("RAR_START_MONTH", "garbage"),
        ("RAR_START_MONTH", "2024-13"),
        ("RAR_START_MONTH", "01/2024"),
        ("RAR_REJECT_BUDGET", "lots"),
        ("RAR_REJECT_BUDGET", "1.5"),
        ("RAR_REJECT_BUDGET", "-0.1"),
        ("RAR_REJECT_BUDGET", "nan"),
        ("RAR_SETTLE_SECONDS", "soon"),
        ("RAR_MAX_FILES_PER_RUN", "1.5"),
    ],
)
def test_bad_values_are_one_sentence_config_errors(tmp_path, name, value):
    with pytest.raises(ConfigError) as raised:
        load_settings({"RAR_HOME": str(tmp_path), name: value})
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{name}=")
    assert message.endswith(".")
    error = raised.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)  # no chained traceback


# build_definitions -----------------------------------------------------------------------------


def test_definitions_load_with_the_asset_check_job_and_sensor(tmp_path):
    defs = build_definitions(load_settings({"RAR_HOME": str(tmp_path), "RAR_SETTLE_SECONDS": "2"}))
    dg.Definitions.validate_loadable(defs)

    assert RAW_EVENTS_KEY in defs.resolve_all_asset_keys()
    assert dg.AssetCheckKey(RAW_EVENTS_KEY, "ledger_reconciles") in defs.resolve_asset_graph().asset_check_keys
    job = defs.resolve_job_def("rar_ingest_job")
    assert RAW_EVENTS_KEY in job.asset_layer.selected_asset_keys
    assert not job.partitions_def  # the ingest job is not partitioned: each run loads what is pending
    assert job.tags["rar/writer"] == "ingest"
    sensor = defs.resolve_sensor_def("rar_landing_sensor")
    assert sensor.job_name == "rar_ingest_job"
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING

    warehouse, landing = defs.resources["warehouse"], defs.resources["landing"]
    assert isinstance(warehouse, WarehouseResource) and isinstance(landing, LandingZoneResource)
    assert warehouse.database_url == f"sqlite:///{tmp_path / 'rar.db'}"  # no secret in the embedded default
    assert not isinstance(warehouse.database_url, dg.EnvVar)
    assert landing.landing_dir == str(tmp_path / "landing")
    assert landing.settle_seconds == 2 and landing.start_month == "2024-01-01"


def test_the_module_level_definitions_load(tmp_path, monkeypatch):
    monkeypatch.setenv("RAR_HOME", str(tmp_path))
    monkeypatch.delenv("RAR_DATABASE_URL", raising=False)
    module = importlib.reload(importlib.import_module("rar_pipeline.definitions"))
    assert isinstance(module.defs, dg.Definitions)
    assert module.defs.resources["landing"].landing_dir == str(tmp_path / "landing")


def test_database_url_from_the_environment_is_an_env_var_and_never_shown(tmp_path, monkeypatch):
    url = f"postgresql://rar:{PASSWORD}@db.example:5432/rar"
    monkeypatch.setenv("RAR_DATABASE_URL", url)
    defs = build_definitions(load_settings({"RAR_HOME": str(tmp_path), "RAR_DATABASE_URL": url}))

    warehouse = defs.resources["warehouse"]
    assert isinstance(warehouse.database_url, dg.EnvVar)
    assert warehouse.database_url.env_var_name == "RAR_DATABASE_URL"
    assert warehouse.database_url.get_value() == url  # resolved only when the resource runs

    assert PASSWORD not in repr(defs)
    assert PASSWORD not in repr(defs.resources)
    snapshot = dg.serialize_value(RepositorySnap.from_def(defs.get_repository_def()))
    assert '{\\"env\\": \\"RAR_DATABASE_URL\\"}' in snapshot  # the UI shows the variable's name
    assert PASSWORD not in snapshot and "db.example" not in snapshot


# A real run with a password-bearing URL --------------------------------------------------------


@pytest.fixture
def postgres_url_with_password(postgres_server_url):
    """An empty warehouse on the test server, addressed with a password (trust auth ignores it)."""
    engine = create_engine(postgres_server_url)
    with engine.begin() as connection:
        metadata.drop_all(connection)
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
    return make_url(postgres_server_url).set(password=PASSWORD).render_as_string(hide_password=False)


def everything_stored_about(instance: dg.DagsterInstance, run_id: str) -> str:
    run = instance.get_run_by_id(run_id)
    parts = [repr(run.run_config), repr(run.tags), dg.serialize_value(run)]
    parts += [dg.serialize_value(instance.get_job_snapshot(run.job_snapshot_id))]
    parts += [dg.serialize_value(entry) for entry in instance.all_logs(run_id)]
    return "\n".join(parts)


def test_a_run_never_records_the_password(tmp_path, monkeypatch, postgres_url_with_password):
    assert PASSWORD in postgres_url_with_password
    monkeypatch.setenv("RAR_HOME", str(tmp_path))
    monkeypatch.setenv("RAR_DATABASE_URL", postgres_url_with_password)
    monkeypatch.setenv("RAR_SETTLE_SECONDS", "0")
    settings = load_settings()
    write_batch(settings.landing_dir / "rar-demo-2025-11.csv", demo_rows())
    job = build_definitions(settings).resolve_job_def("rar_ingest_job")

    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance)
        assert result.success
        (materialization,) = result.asset_materializations_for_node("rar__raw_events")
        assert materialization.metadata["rows_accepted"].value == 15
        stored = everything_stored_about(instance, result.run_id)

    assert "rows_accepted" in stored and "rar-demo-2025-11.csv" in stored  # the log is really there
    assert PASSWORD not in stored


def test_a_failed_run_names_the_server_but_not_the_password(tmp_path, monkeypatch):
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/nowhere"
    monkeypatch.setenv("RAR_HOME", str(tmp_path))
    monkeypatch.setenv("RAR_DATABASE_URL", url)
    job = build_definitions(load_settings()).resolve_job_def("rar_ingest_job")

    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        (failure,) = result.get_step_failure_events()
        message = failure.step_failure_data.user_failure_data.description
        stored = everything_stored_about(instance, result.run_id)

    assert message.startswith("cannot reach the warehouse at postgresql://postgres:***@127.0.0.1:1/nowhere")
    assert PASSWORD not in message
    assert "cannot reach the warehouse" in stored
    assert PASSWORD not in stored


def test_control_a_literal_url_would_leak_so_the_scans_above_can_fail(tmp_path):
    """Why the EnvVar matters: configured with the literal URL, the password is in what the UI and
    the run storage keep, and the same scans as above find it."""
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/nowhere"
    defs = build_definitions(load_settings({"RAR_HOME": str(tmp_path)}).with_overrides(database_url=url))
    assert PASSWORD in dg.serialize_value(RepositorySnap.from_def(defs.get_repository_def()))
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("rar_ingest_job").execute_in_process(instance=instance, raise_on_error=False)
        assert PASSWORD in everything_stored_about(instance, result.run_id)
