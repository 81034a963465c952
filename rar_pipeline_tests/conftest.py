"""Shared fixtures. Storage tests take `warehouse_url`/`engine` and run on SQLite and PostgreSQL.

PostgreSQL: RAR_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres) names a
server where the tests may create and drop a database of their own. Unreachable: the PostgreSQL
cases are skipped with the reason, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import uuid
from datetime import date

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from rar_pipeline.ingest import LoadOptions
from rar_pipeline_tests.fake_slack import slack  # noqa: F401  (the fixture, for every test module)
from rar_pipeline.warehouse.engine import open_warehouse
from rar_pipeline.warehouse.schema import metadata

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def postgres_server_url():
    base = make_url(os.environ.get("RAR_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    admin = create_engine(base, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:  # any failure to reach the server
        reason = f"PostgreSQL at {base.render_as_string(hide_password=True)} is not reachable ({type(error).__name__}); set RAR_TEST_POSTGRES_URL"
        admin.dispose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)", pytrace=False)
        pytest.skip(reason)
    name = f"rar_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield base.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        metadata.drop_all(connection)
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_url(request, tmp_path):
    """An empty warehouse (no tables yet) on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rar.db'}"
    url = request.getfixturevalue("postgres_server_url")
    _reset_postgres(url)
    return url


@pytest.fixture
def engine(warehouse_url):
    engine = open_warehouse(warehouse_url)
    yield engine
    engine.dispose()


@pytest.fixture
def landing(tmp_path):
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


@pytest.fixture
def load_options():
    return LoadOptions(first_month=date(2024, 1, 1), last_month=date(2026, 12, 1), max_file_bytes=10**9, reject_budget=0.05)
