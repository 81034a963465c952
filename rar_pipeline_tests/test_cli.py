"""`rar-pipeline` end to end through click's CliRunner: real warehouse (SQLite and PostgreSQL),
real Dagster instance under a temporary DAGSTER_HOME."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url

from rar_pipeline_tests.cli_helpers import run
from rar_pipeline.seed import HEADER

PASSWORD = "s3cret-pw"
# Variables the CLI reads; unset unless a test sets them, so the outer environment cannot leak in.
RAR_VARIABLES = (
    "RAR_DATABASE_URL", "RAR_LANDING_DIR", "RAR_START_MONTH", "RAR_REJECT_BUDGET",
    "RAR_MAX_FILES_PER_RUN", "RAR_MAX_FILE_BYTES",
)  # fmt: skip


def error_line(result) -> str:
    """The CLI's complaint: exactly one `Error:` line on stderr, and no traceback anywhere."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def one_line_error(result) -> str:
    line = error_line(result)
    assert result.exit_code == 1
    assert result.stderr.strip() == line, result.stderr  # nothing but that one line
    return line


@pytest.fixture(scope="module")
def shared_dagster_home(tmp_path_factory):
    """One Dagster instance for the module's runs (creating its storage costs most of a second)."""
    return tmp_path_factory.mktemp("dagster_home")


@pytest.fixture
def base_env(tmp_path, shared_dagster_home):
    env = {name: None for name in RAR_VARIABLES}
    env.update(RAR_HOME=str(tmp_path / "home"), DAGSTER_HOME=str(shared_dagster_home), RAR_SETTLE_SECONDS="0")
    return env


@pytest.fixture
def env(base_env, warehouse_url):
    """The CLI's environment on each backend: the embedded SQLite default, or PostgreSQL addressed
    with a password in RAR_DATABASE_URL (the test server trusts any password)."""
    if warehouse_url.startswith("postgresql"):
        base_env["RAR_DATABASE_URL"] = make_url(warehouse_url).set(password=PASSWORD).render_as_string(hide_password=False)
    return base_env


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def seeded(env: dict, out: Path, *options: str) -> Path:
    result = run(env, "seed", "--out", out, *options)
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().rsplit(" to ", 1)[1])


# seed ------------------------------------------------------------------------------------------


def test_seed_demo_writes_the_three_rooftops(base_env, tmp_path):
    result = run(base_env, "seed", "--demo", "--out", tmp_path / "out")
    assert result.exit_code == 0
    path = tmp_path / "out" / "rar-demo-2025-11.csv"
    assert result.stdout == f"wrote 15 rows to {path}\n"
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(HEADER) == (
        "dealerId,month,channel,impressions,shareAISnippet,ctrBaseline,ctrDropWhenAI,leadCR,closeRate,avgGross,"
        "recoverableShare,intentCluster"
    )
    assert len(lines) == 16
    assert {line.split(",")[0] for line in lines[1:]} == {"germain-toyota-naples", "lou-grubbs-motors", "demo-rooftop"}
    assert list(path.parent.iterdir()) == [path]  # no leftover temporary file


def test_seed_synthetic_jsonl_is_deterministic(base_env, tmp_path):
    first = seeded(base_env, tmp_path / "a", "--rows", "50", "--format", "jsonl")
    second = seeded(base_env, tmp_path / "b", "--rows", "50", "--format", "jsonl")
    other_seed = seeded(base_env, tmp_path / "c", "--rows", "50", "--format", "jsonl", "--seed", "1")

    assert first.name == "rar-synthetic-2025-11-s0-50.jsonl"
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other_seed.read_bytes()
    records = [json.loads(line) for line in first.read_text().splitlines()]
    assert len(records) == 50
    assert all(list(record) == HEADER for record in records)
    assert {record["month"] for record in records} == {"2025-09", "2025-10", "2025-11"}
    assert len({(r["dealerId"], r["month"], r["channel"], r["intentCluster"]) for r in records}) == 50
    assert all(0 <= r["shareAISnippet"] <= 1 and r["impressions"] >= 0 for r in records)


def test_seed_rejects_a_bad_last_month(base_env, tmp_path):
    line = one_line_error(run(base_env, "seed", "--out", tmp_path, "--last-month", "November"))
    assert line == "Error: --last-month 'November' is not a month; use YYYY-MM, e.g. 2025-11"


# ingest / status / db upgrade, on both backends --------------------------------------------------


def test_ingest_wait_json_reports_every_file(env, tmp_path):
    demo = seeded(env, tmp_path / "in", "--demo")
    # One month only (2025-11), so --wait rebuilds one month of the lineage after loading.
    jsonl = seeded(env, tmp_path / "in", "--rows", "50", "--format", "jsonl", "--months", "1")
    mixed = seeded(env, tmp_path / "in", "--rows", "60", "--seed", "3", "--months", "1")
    with open(mixed, "a") as out:
        out.write("late-dealer,2025-13,google_organic,1000,0.3,0.05,0.3,0.04,0.18,2000,0.45,hours\n")

    result = run(env, "ingest", "--wait", "--json", demo, jsonl, mixed)

    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)
    by_name = {report["file_name"]: report for report in reports}
    assert [report["file_name"] for report in reports] == [demo.name, jsonl.name, mixed.name]
    for path, rows, accepted, rejected in ((demo, 15, 15, {}), (jsonl, 50, 50, {}), (mixed, 61, 60, {"invalid_month": 1})):
        report = by_name[path.name]
        assert report["sha256"] == sha256(path)
        assert report["status"] == "loaded"
        assert (report["rows_read"], report["rows_accepted"]) == (rows, accepted)
        assert report["rows_rejected"] == sum(rejected.values())
        assert report["rejected_by_reason"] == rejected
    assert by_name[demo.name]["months"] == ["2025-11-01"]

    # The same bytes again: reported as a duplicate delivery, nothing added.
    again = run(env, "ingest", "--wait", "--json", demo)
    assert again.exit_code == 0, again.output
    (duplicate,) = json.loads(again.stdout)
    assert duplicate["status"] == "duplicate"
    assert duplicate["sha256"] == sha256(demo)
    assert duplicate["detail"] == f"same bytes as batch {by_name[demo.name]['batch_id']}"

    status = json.loads(run(env, "status", "--json").stdout)
    assert [batch["status"] for batch in status["batches"]] == ["duplicate", "loaded", "loaded", "loaded"]
    assert sum(batch["rows_accepted"] for batch in status["batches"]) == 125


def test_ingest_wait_prints_one_line_per_file(env, tmp_path):
    demo = seeded(env, tmp_path / "in", "--demo")
    result = run(env, "ingest", "--wait", demo)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{demo.name}  sha256 {sha256(demo)[:12]}  loaded  rows 15  accepted 15  rejected 0\n"


def test_status_lists_batches_and_rejects(env, tmp_path):
    assert run(env, "status").stdout.startswith("no batches yet")
    empty = json.loads(run(env, "status", "--json").stdout)
    assert empty == {"batches": [], "rejected_rows_by_reason": {}, "rejected_files_by_reason": {}}

    header_only = tmp_path / "in" / "header-only.csv"
    header_only.parent.mkdir()
    header_only.write_text(",".join(HEADER) + "\n")
    mixed = seeded(env, tmp_path / "in", "--rows", "40", "--months", "1")
    with open(mixed, "a") as out:
        out.write("bad dealer!,2025-11,google_organic,1000,0.3,0.05,0.3,0.04,0.18,2000,0.45,hours\n")
    assert run(env, "ingest", "--wait", header_only, mixed).exit_code == 0

    summary = json.loads(run(env, "status", "--json").stdout)
    assert summary["rejected_rows_by_reason"] == {"invalid_dealer_id": 1}
    assert summary["rejected_files_by_reason"] == {"header_only": 1}
    newest, oldest = summary["batches"]
    assert (oldest["file_name"], oldest["status"], oldest["reason"]) == ("header-only.csv", "rejected", "header_only")
    assert (newest["file_name"], newest["status"], newest["rows_read"], newest["rows_rejected"]) == (mixed.name, "loaded", 41, 1)
    assert set(newest) >= {"batch_id", "sha256", "loaded_at", "rejected_by_reason", "months", "unknown_columns"}

    text = run(env, "status").stdout.splitlines()
    assert text[0].split() == ["batch", "status", "rows", "accepted", "rejected", "file"]
    assert "header-only.csv  (header_only)" in text[2]
    assert "rejected rows: invalid_dealer_id 1" in text
    assert "rejected files: header_only 1" in text


def test_db_upgrade_creates_the_schema_and_is_idempotent(env):
    first = run(env, "db", "upgrade")
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("warehouse ") and first.stdout.endswith(" is up to date\n")
    assert PASSWORD not in first.output
    url = env["RAR_DATABASE_URL"] or f"sqlite:///{Path(env['RAR_HOME']) / 'rar.db'}"
    if url.startswith("postgresql"):
        assert ":***@" in first.stdout

    engine = create_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"rar_batches", "rar_raw_events", "rar_rejected_rows", "alembic_version"} <= tables

    second = run(env, "db", "upgrade")
    assert second.exit_code == 0 and second.stdout == first.stdout


# ingest without --wait: delivery only ---------------------------------------------------------------


def test_ingest_without_wait_only_copies_into_the_landing_zone(base_env, tmp_path):
    demo = seeded(base_env, tmp_path / "in", "--demo")
    landing = Path(base_env["RAR_HOME"]) / "landing"

    result = run(base_env, "ingest", demo)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"delivered {demo.name} (sha256 {sha256(demo)[:12]}) to {landing}"
    assert sorted(p.name for p in landing.iterdir()) == [demo.name]  # no temporary file left behind
    landed = landing / demo.name
    assert landed.read_bytes() == demo.read_bytes()
    assert landed.stat().st_mtime_ns == demo.stat().st_mtime_ns  # keeps the source's mtime
    assert demo.exists()  # a copy, not a move
    assert not (Path(base_env["RAR_HOME"]) / "rar.db").exists()  # the warehouse was not touched

    # The same name again does not overwrite the waiting file.
    assert run(base_env, "ingest", demo).exit_code == 0
    names = sorted(p.name for p in landing.iterdir())
    assert len(names) == 2 and demo.name in names
    assert all((landing / name).read_bytes() == demo.read_bytes() for name in names)


def test_delivery_is_atomic_for_a_watcher(base_env, tmp_path):
    """A scanner listing the landing folder during the copy only ever sees the complete file."""
    big = tmp_path / "in" / "big.csv"
    big.parent.mkdir()
    with open(big, "w") as out:
        out.write(",".join(HEADER) + "\n")
        out.write("demo-rooftop,2025-11,google_organic,1000,0.3,0.05,0.3,0.04,0.18,2000,0.45,hours\n" * 200_000)
    size = big.stat().st_size
    landing = Path(base_env["RAR_HOME"]) / "landing"
    landing.mkdir(parents=True)
    seen: list[tuple[str, int]] = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            for entry in os.scandir(landing):
                try:
                    seen.append((entry.name, entry.stat().st_size))
                except FileNotFoundError:
                    pass  # the temporary name, renamed between listing and stat

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = run(base_env, "ingest", big)
    finally:
        done.set()
        watcher.join()

    assert result.exit_code == 0
    partial = {size for name, size in seen if name.startswith(".")}
    assert partial and min(partial) < size, "the watcher did not look while the copy was being written"
    assert {(name, size) for name, size in seen if not name.startswith(".")} <= {("big.csv", size)}
    assert [(e.name, e.stat().st_size) for e in os.scandir(landing)] == [("big.csv", size)]


# user mistakes: one line, no traceback -------------------------------------------------------------


def test_nonexistent_file(base_env, tmp_path):
    line = one_line_error(run(base_env, "ingest", tmp_path / "missing.csv"))
    assert line == f"Error: {tmp_path / 'missing.csv'}: no such file; check the path"


def test_folder_instead_of_a_file(base_env, tmp_path):
    (tmp_path / "folder.csv").mkdir()
    line = one_line_error(run(base_env, "ingest", tmp_path / "folder.csv"))
    assert line == f"Error: {tmp_path / 'folder.csv'}: not a regular file"


def test_unsupported_file_type(base_env, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    line = one_line_error(run(base_env, "ingest", notes))
    assert line == f"Error: {notes}: only .csv, .jsonl, .csv.gz and .jsonl.gz files can be ingested"
    assert not (Path(base_env["RAR_HOME"]) / "landing").exists()


@pytest.mark.parametrize("command", [["status"], ["db", "upgrade"], ["ingest", "--wait", "DEMO"]])
def test_a_url_that_is_not_a_url(base_env, tmp_path, command):
    base_env["RAR_DATABASE_URL"] = "not a url"
    if "DEMO" in command:
        command[-1] = seeded(base_env, tmp_path / "in", "--demo")
    line = one_line_error(run(base_env, *command))
    assert line.startswith("Error: RAR_DATABASE_URL is not a database URL; use sqlite:///")


def test_an_unsupported_database(base_env):
    base_env["RAR_DATABASE_URL"] = f"mysql://root:{PASSWORD}@127.0.0.1/rar"
    line = one_line_error(run(base_env, "status"))
    assert line == "Error: RAR_DATABASE_URL uses 'mysql'; the warehouse supports sqlite and postgresql."


@pytest.mark.parametrize("credentials", ["postgres", f"postgres:{PASSWORD}"])
@pytest.mark.parametrize("command", [["status"], ["db", "upgrade"], ["ingest", "--wait", "DEMO"]])
def test_an_unreachable_server(base_env, tmp_path, credentials, command):
    base_env["RAR_DATABASE_URL"] = f"postgresql://{credentials}@127.0.0.1:1/x"
    if "DEMO" in command:
        command[-1] = seeded(base_env, tmp_path / "in", "--demo")
    line = one_line_error(run(base_env, *command))
    shown = "postgres:***" if PASSWORD in credentials else "postgres"
    assert line.startswith(f"Error: cannot reach the warehouse at postgresql://{shown}@127.0.0.1:1/x: ")
    assert line.endswith("; check RAR_DATABASE_URL and that the server is running.")
    assert PASSWORD not in line


@pytest.mark.parametrize("command", [["status"], ["db", "upgrade"], ["demo"]])
def test_a_bad_start_month(base_env, command):
    base_env["RAR_START_MONTH"] = "garbage"
    line = one_line_error(run(base_env, *command))
    assert line == "Error: RAR_START_MONTH='garbage' is not a month; use YYYY-MM, e.g. 2024-01."


@pytest.mark.parametrize(
    "variable, value, expected",
    [
        ("RAR_START_MONTH", "garbage", "Error: RAR_START_MONTH='garbage' is not a month; use YYYY-MM, e.g. 2024-01."),
        ("RAR_DATABASE_URL", "not a url", "Error: RAR_DATABASE_URL is not a database URL; use sqlite:///path/to/rar.db or postgresql://user@host:5432/db."),
    ],
)
def test_the_installed_command_prints_one_line(base_env, variable, value, expected):
    """The real console script in a fresh process (nothing imported beforehand), not CliRunner."""
    env = {key: value for key, value in os.environ.items() if key not in RAR_VARIABLES}
    env.update({key: value for key, value in base_env.items() if value is not None}, **{variable: value})
    script = Path(sys.executable).with_name("rar-pipeline")
    finished = subprocess.run([script, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 1
    assert finished.stderr == expected + "\n"
    assert finished.stdout == ""


def test_help_works_even_with_a_broken_environment(base_env):
    base_env["RAR_START_MONTH"] = "garbage"
    result = run(base_env, "--help")
    assert result.exit_code == 0
    assert "ingest" in result.stdout and "status" in result.stdout


# demo -------------------------------------------------------------------------------------------------


def test_demo_end_to_end_on_sqlite(base_env, tmp_path):
    base_env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")  # a fresh instance, created by the CLI
    home, dagster_home = Path(base_env["RAR_HOME"]), Path(base_env["DAGSTER_HOME"])

    result = run(base_env, "demo")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    november = home / "demo" / "rar-demo-2025-11.csv"
    assert f"rar-demo-2025-11.csv  sha256 {sha256(november)[:12]}  loaded  rows 15  accepted 15  rejected 0" in lines
    assert "Revenue at Risk, November 2025:" in lines
    for dealer in ("germain-toyota-naples", "lou-grubbs-motors", "demo-rooftop"):
        assert any(line.startswith(dealer + " ") for line in lines), dealer
    assert f"DAGSTER_HOME={dagster_home}" in lines[-1]

    # The warehouse is the embedded default, and the landed files were archived.
    assert (home / "rar.db").exists()
    assert [p for p in (home / "landing").iterdir() if not p.name.startswith(".")] == []
    assert any(p.name.endswith("-rar-demo-2025-11.csv") for p in (home / "landing" / ".processed").iterdir())
    # The runs went through the configured Dagster instance, with the repository's instance config.
    assert (dagster_home / "dagster.yaml").read_text() == (Path(__file__).parents[1] / "dagster.yaml").read_text()
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = [record.dagster_run for record in instance.get_run_records()]
        assert runs and all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
        assert all(run.tags["rar/launched_by"] == "cli" for run in runs)
        (ingest_run,) = [run for run in runs if run.job_name == "rar_ingest_job"]
        latest = instance.get_latest_materialization_event(dg.AssetKey(["rar", "raw_events"]))
        assert latest is not None and latest.run_id == ingest_run.run_id
        assert latest.asset_materialization.metadata["files_loaded"].value >= 2
