"""`rar-pipeline recompute` and `rar-pipeline alerts`, and the alert delivery that `demo`, `ingest --wait`
and `recompute --wait` run, through click's CliRunner on an embedded SQLite warehouse and a real
Dagster instance under RAR_HOME. Slack is the local HTTP server of the `slack` fixture."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from rar_pipeline_tests import cli_helpers
from rar_pipeline_tests.cli_helpers import run
from rar_pipeline_tests.fake_slack import SLACK_SECRET, Reply

GERMAIN_LINE = "germain-toyota-naples: $89,954 at risk; recoverable ~ $40,479 (pressure 0.90, trend up)"
# Every variable the CLI reads: unset unless a test sets it, so the outer environment cannot leak in.
VARIABLES = (
    "RAR_DATABASE_URL", "RAR_LANDING_DIR", "RAR_START_MONTH", "RAR_REJECT_BUDGET", "RAR_MAX_FILES_PER_RUN",
    "RAR_MAX_FILE_BYTES", "RAR_PRESSURE_CAP", "RAR_ALERT_THRESHOLD", "RAR_CLOSE_DAYS", "SLACK_WEBHOOK_RAR",
    "RAR_DAGSTER_URL", "DAGSTER_HOME",
)  # fmt: skip


def one_line_error(result) -> str:
    assert result.stdout == ""
    return cli_helpers.one_line_error(result)


def outbox(env: dict) -> list[dict]:
    result = run(env, "alerts", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def demo_file(env: dict, tmp_path: Path) -> Path:
    result = run(env, "seed", "--demo", "--out", tmp_path / "in")
    assert result.exit_code == 0, result.output
    return tmp_path / "in" / "rar-demo-2025-11.csv"


@pytest.fixture
def env(tmp_path):
    """The embedded SQLite warehouse and the Dagster instance both live under RAR_HOME."""
    values = {name: None for name in VARIABLES}
    values.update(RAR_HOME=str(tmp_path / "home"), RAR_SETTLE_SECONDS="0")
    return values


def test_demo_lists_dry_run_alerts_and_a_recompute_adds_none(env):
    demo = run(env, "demo")

    assert demo.exit_code == 0, demo.output
    assert "alerts of 2025-11: 4 delivered now; in total 4 dry_run" in demo.stderr
    assert "alerts of 2025-10: 1 delivered now; in total 1 dry_run" in demo.stderr
    assert "SLACK_WEBHOOK_RAR is not set, so nothing was posted; the digest would read:" in demo.stderr
    assert f"  P0 {GERMAIN_LINE}" in demo.stderr.splitlines()

    rows = outbox(env)
    assert [(row["kind"], row["dealerId"], row["month"], row["p0"], row["status"], row["attempts"]) for row in rows] == [
        ("pressure", "lou-grubbs-motors", "2025-11-01", "false", "dry_run", 0),
        ("p0", "germain-toyota-naples", "2025-11-01", "true", "dry_run", 0),
        ("pressure", "germain-toyota-naples", "2025-11-01", "true", "dry_run", 0),
        ("pressure", "demo-rooftop", "2025-11-01", "false", "dry_run", 0),
        ("pressure", "germain-toyota-naples", "2025-10-01", "false", "dry_run", 0),
    ]  # newest first
    assert all(row["lastError"] is None for row in rows)
    listing = run(env, "alerts")
    assert listing.exit_code == 0 and len(listing.stdout.splitlines()) == 5
    assert "germain-toyota-naples" in listing.stdout and "P0 true" in listing.stdout

    recompute = run(env, "recompute", "--month", "2025-11", "--wait")

    assert recompute.exit_code == 0, recompute.output
    assert recompute.stdout.startswith("rebuilt 2025-11 (run ")
    assert "alerts of 2025-11: none delivered now; in total 4 dry_run" in recompute.stderr
    assert outbox(env) == rows  # a recompute never alerts twice


@pytest.mark.parametrize(
    ("month", "expected"),
    [
        ("2023-01", "Error: 2023-01 is outside the pipeline's months 2024-01.."),
        ("2099-01", "Error: 2099-01 is outside the pipeline's months 2024-01.."),
        ("garbage", "Error: --month 'garbage' is not a month; use YYYY-MM, e.g. 2025-11"),
        ("2025-13", "Error: --month '2025-13' is not a month; use YYYY-MM, e.g. 2025-11"),
    ],
)
@pytest.mark.parametrize("wait", [[], ["--wait"]])
def test_recompute_of_an_unknown_or_out_of_range_month_is_one_error_line(env, month, expected, wait):
    line = one_line_error(run(env, "recompute", "--month", month, *wait))

    assert line.startswith(expected)


def test_recompute_without_wait_queues_a_run_on_the_instance(env, tmp_path):
    result = run(env, "recompute", "--month", "2025-11")

    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    assert line.startswith("queued run ") and line.endswith(" of rar_monthly_job for 2025-11; the Dagster daemon runs it (`make dev`)")
    run_id = line.split()[2]
    with dg.DagsterInstance.from_config(str(tmp_path / "home" / "dagster_home")) as instance:
        queued = instance.get_run_by_id(run_id)
        assert queued is not None
        assert (queued.job_name, queued.status) == ("rar_monthly_job", dg.DagsterRunStatus.QUEUED)
        assert queued.tags["dagster/partition"] == "2025-11-01"
        assert queued.tags["rar/trigger"] == "cli"
        assert queued.remote_job_origin is not None  # the daemon can find the job to launch it
        assert len(instance.get_runs()) == 1


def test_ingest_wait_with_a_webhook_posts_one_digest(env, tmp_path, slack):
    env["SLACK_WEBHOOK_RAR"] = slack.url
    demo = demo_file(env, tmp_path)

    result = run(env, "ingest", "--wait", demo)

    assert result.exit_code == 0, result.output
    assert "alerts of 2025-11: 3 delivered now; in total 3 sent" in result.stderr  # no score snapshot loaded: no P0
    assert "SLACK_WEBHOOK_RAR is not set" not in result.stderr
    (payload,) = slack.payloads
    lines = payload["text"].splitlines()
    assert lines[0] == "Revenue at Risk: 3 dealers need attention"
    assert [line.split(":")[0] for line in lines[1:]] == ["germain-toyota-naples", "lou-grubbs-motors", "demo-rooftop"]
    assert {(row["status"], row["attempts"]) for row in outbox(env)} == {("sent", 1)}
    assert SLACK_SECRET not in result.output


def test_a_slack_outage_never_fails_ingestion_and_the_next_recompute_delivers(env, tmp_path, slack):
    env["SLACK_WEBHOOK_RAR"] = slack.url
    slack.script(Reply(404, body=f"no_service {slack.url}"))
    demo = demo_file(env, tmp_path)

    result = run(env, "ingest", "--wait", demo)

    assert result.exit_code == 0, result.output
    assert "alerts of 2025-11: delivery failed (step send_rar_alerts failed: " in result.stderr
    assert "HTTP 404: no_service" in result.stderr and "they stay queued" in result.stderr
    assert "loaded  rows 15  accepted 15" in result.stdout  # the data is in
    rows = outbox(env)
    assert {(row["status"], row["attempts"]) for row in rows} == {("failed", 1)}
    assert all(row["lastError"].startswith("HTTP 404: no_service") for row in rows)
    assert SLACK_SECRET not in result.output + json.dumps(rows)

    slack.script(200)
    again = run(env, "recompute", "--month", "2025-11", "--wait")

    assert again.exit_code == 0, again.output
    assert "in total 3 sent" in again.stderr
    assert len(slack.requests) == 2
    assert {(row["status"], row["attempts"]) for row in outbox(env)} == {("sent", 2)}
