"""`rar-pipeline demo`, `summary`, `pressure` and `ingest --wait` refreshing months, through click's
CliRunner with a real warehouse (SQLite and PostgreSQL) and a real Dagster instance under RAR_HOME."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from rar_pipeline_tests.cli_helpers import one_line_error, run
from rar_pipeline.seed import demo_rows, write_batch

GERMAIN, LOU, DEMO = "germain-toyota-naples", "lou-grubbs-motors", "demo-rooftop"
# What the CLI reads from the environment; unset unless a test sets it, so the outer one cannot leak in.
UNSET = (
    "RAR_DATABASE_URL", "RAR_LANDING_DIR", "RAR_START_MONTH", "RAR_REJECT_BUDGET", "RAR_MAX_FILES_PER_RUN",
    "RAR_MAX_FILE_BYTES", "RAR_PRESSURE_CAP", "SLACK_WEBHOOK_RAR",
)  # fmt: skip
OLD_API_KEYS = [
    "dealerId", "month", "lostSessions", "lostLeads", "lostSales", "rar", "recoverable", "topLosingIntents",
    "eventCount", "computedAt",
]  # fmt: skip


def environment(home: Path, database_url: str | None = None) -> dict:
    env = {name: None for name in UNSET}
    env.update(RAR_HOME=str(home), DAGSTER_HOME=str(home / "dagster_home"), RAR_SETTLE_SECONDS="0")
    if database_url:
        env["RAR_DATABASE_URL"] = database_url
    return env


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def demo(request, tmp_path_factory):
    """`rar-pipeline demo` run once per backend; the tests below only read what it wrote.

    On PostgreSQL the module gets a database of its own, so the function-scoped `warehouse_url`
    fixture (which empties the shared test database) cannot interfere.
    """
    home = tmp_path_factory.mktemp("demo-home")
    url = None
    if request.param == "postgresql":
        server = make_url(request.getfixturevalue("postgres_server_url"))
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        name = f"rar_cli_{uuid.uuid4().hex[:12]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))

        def drop() -> None:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

        request.addfinalizer(drop)
        url = server.set(database=name).render_as_string(hide_password=False)
    env = environment(home, url)
    result = run(env, "demo")
    assert result.exit_code == 0, result.output
    return env, result


# demo --------------------------------------------------------------------------------------------------------
def test_demo_prints_the_three_rooftops(demo):
    _, result = demo
    out = result.stdout
    assert "Revenue at Risk, November 2025:" in out
    table = {line.split()[0]: line.split() for line in out.splitlines() if line.split() and line.split()[0] in (GERMAIN, LOU, DEMO)}
    assert set(table) == {GERMAIN, LOU, DEMO}
    # dealer, RaR, recoverable, pressure, trend, AIV→adjusted, top intents...
    assert table[GERMAIN][1:5] == ["89,954.17", "40,479.38", "0.90", "up"]
    assert table[LOU][1:5] == ["65,667.12", "29,550.20", "0.66", "up"]
    assert table[DEMO][1:5] == ["65,272.78", "29,372.75", "0.65", "up"]
    assert table[GERMAIN][5] == f"85→{85 * (1 - 0.04 * 0.8995417):.2f}"
    assert " ".join(table[GERMAIN][6:]) == "service_price, hours, oil_change"
    assert " ".join(table[DEMO][6:]) == "service_price, oil_change, hours"
    assert "http://127.0.0.1:3000" in out and "DAGSTER_HOME=" in out
    # It loaded the three files and rebuilt the months through the jobs (reported on stderr).
    assert [line.split()[0] for line in out.splitlines() if "  loaded  " in line] == [
        "rar-demo-2025-10.csv", "rar-demo-2025-11.csv", "rar-demo-scores-2025-11.csv",
    ]  # fmt: skip
    assert "rebuilt monthly lineage of 2025-10: ok" in result.stderr
    assert "rebuilt monthly lineage of 2025-11: ok" in result.stderr


def test_demo_runs_are_in_the_dagster_instance(demo):
    import dagster as dg

    env, _ = demo
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
        jobs = sorted(run.job_name for run in runs)
        assert jobs.count("rar_ingest_job") == 1
        assert jobs.count("rar_monthly_job") == 2
        assert {run.tags.get("dagster/partition") for run in runs if run.job_name == "rar_monthly_job"} == {"2025-10-01", "2025-11-01"}
        assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)


# summary and pressure -----------------------------------------------------------------------------------------
def test_summary_json_has_the_old_api_shape(demo):
    env, _ = demo
    result = run(env, "summary", "--dealer", GERMAIN, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert list(summary) == OLD_API_KEYS
    computed_at = summary.pop("computedAt")
    assert summary == {
        "dealerId": GERMAIN,
        "month": "2025-11-01",  # the latest month
        "lostSessions": 5949,
        "lostLeads": 238,
        "lostSales": 42.84,
        "rar": 89954.17,
        "recoverable": 40479.38,
        "topLosingIntents": [
            {"intent": "service_price", "rar": 30561.30},
            {"intent": "hours", "rar": 19958.40},
            {"intent": "oil_change", "rar": 18770.88},
            {"intent": "dealer_near_me", "rar": 11692.30},
            {"intent": "tire_rotation", "rar": 8971.30},
        ],
        "eventCount": 5,
    }
    assert datetime.fromisoformat(computed_at).utcoffset().total_seconds() == 0  # ISO 8601, UTC


def test_summary_of_another_dealer(demo):
    env, _ = demo
    summary = json.loads(run(env, "summary", "--dealer", LOU, "--json").stdout)
    assert (summary["rar"], summary["recoverable"], summary["lostSessions"], summary["lostLeads"], summary["lostSales"]) == (
        65667.12, 29550.20, 4677, 187, 33.68,
    )  # fmt: skip


def test_summary_of_an_older_month(demo):
    env, _ = demo
    result = run(env, "summary", "--dealer", GERMAIN, "--month", "2025-10", "--json")
    assert result.exit_code == 0, result.output
    october = json.loads(result.stdout)
    assert october["month"] == "2025-10-01" and october["eventCount"] == 5
    assert october["rar"] < 89954.17
    assert [item["intent"] for item in october["topLosingIntents"]][:2] == ["service_price", "hours"]
    # The text form of the same.
    text_result = run(env, "summary", "--dealer", GERMAIN, "--month", "2025-10")
    assert text_result.exit_code == 0
    first, second = text_result.stdout.splitlines()[:2]
    assert first.split() == [GERMAIN, "2025-10", "events", "5"]
    assert f"RaR ${october['rar']:,.2f}" in second and f"recoverable ${october['recoverable']:,.2f}" in second


def test_summary_month_accepts_a_full_date(demo):
    env, _ = demo
    summary = json.loads(run(env, "summary", "--dealer", GERMAIN, "--month", "2025-11-15", "--json").stdout)
    assert summary["month"] == "2025-11-01" and summary["rar"] == 89954.17


def test_pressure_json(demo):
    env, _ = demo
    result = run(env, "pressure", "--dealer", GERMAIN, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"dealerId": GERMAIN, "month": "2025-11-01", "pressure": 0.8995417, "trend": "up"}
    plain = run(env, "pressure", "--dealer", DEMO)
    assert plain.stdout.split() == [DEMO, "2025-11", "pressure", "0.65", "trend", "up"]


def test_unknown_dealer_is_one_line_exit_1(demo):
    env, _ = demo
    assert "nobody-motors" in one_line_error(run(env, "summary", "--dealer", "nobody-motors"))
    assert "nobody-motors" in one_line_error(run(env, "summary", "--dealer", "nobody-motors", "--json"))
    assert "nobody-motors" in one_line_error(run(env, "pressure", "--dealer", "nobody-motors"))


def test_unknown_month_is_one_line_exit_1(demo):
    env, _ = demo
    line = one_line_error(run(env, "summary", "--dealer", GERMAIN, "--month", "2024-03"))
    assert "2024-03" in line and GERMAIN in line


def test_a_month_that_is_not_a_month_is_one_line_exit_1(demo):
    env, _ = demo
    line = one_line_error(run(env, "summary", "--dealer", GERMAIN, "--month", "2025-13"))
    assert line == "Error: --month '2025-13' is not a month; use YYYY-MM, e.g. 2025-11"


# ingest --wait refreshes the months it touched ---------------------------------------------------------------
def test_ingest_wait_of_a_correction_refreshes_the_month(tmp_path, warehouse_url):
    env = environment(tmp_path / "home", warehouse_url)
    november = tmp_path / "rar-demo-2025-11.csv"
    write_batch(november, demo_rows())
    first = run(env, "ingest", "--wait", november)
    assert first.exit_code == 0, first.output
    assert "rebuilt monthly lineage of 2025-11: ok" in first.stderr
    before = json.loads(run(env, "summary", "--dealer", GERMAIN, "--json").stdout)
    assert before["rar"] == 89954.17

    # germain's five keys again, every impression count halved: a correction, not an addition.
    correction = tmp_path / "correction-2025-11.csv"
    write_batch(correction, (row[:3] + [row[3] // 2] + row[4:] for row in demo_rows() if row[0] == GERMAIN))
    second = run(env, "ingest", "--wait", correction)
    assert second.exit_code == 0, second.output
    assert "correction-2025-11.csv" in second.stdout and "loaded" in second.stdout
    assert second.stderr.count("rebuilt monthly lineage of") == 1
    assert "rebuilt monthly lineage of 2025-11: ok" in second.stderr

    after = json.loads(run(env, "summary", "--dealer", GERMAIN, "--json").stdout)
    assert after["eventCount"] == 5
    assert abs(after["rar"] - 89954.17 / 2) <= 0.01
    assert after["lostSessions"] in (2974, 2975)
    assert after["computedAt"] > before["computedAt"]
    # The other dealers keep their numbers.
    assert json.loads(run(env, "summary", "--dealer", LOU, "--json").stdout)["rar"] == 65667.12
    pressure = json.loads(run(env, "pressure", "--dealer", GERMAIN, "--json").stdout)
    assert pressure["pressure"] == pytest.approx(after["rar"] / 100_000)
