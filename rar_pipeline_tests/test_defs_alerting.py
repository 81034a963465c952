"""The Dagster side of alerting: `rar_alert_job`, the pressure sensor, the run-failure sensor, the nightly
schedules, and the secret grep over everything a run leaves behind.

Jobs run with `execute_in_process` on real instances against a real warehouse; Slack is a local HTTP
server (the `slack` fixture).
"""

from __future__ import annotations

import logging
import socket
from datetime import date, datetime, timezone

import dagster as dg
import pytest
from sqlalchemy import create_engine, select

from rar_pipeline import seed
from rar_pipeline.config import load_settings
from rar_pipeline.definitions import build_definitions
from rar_pipeline.defs.alerting import (
    rar_alert_sweep_schedule,
    rar_nightly_schedule,
    rar_pressure_alert_sensor,
    rar_run_failure_sensor,
)
from rar_pipeline.defs.resources import RarRulesResource, SlackResource, WarehouseResource, build_resources
from rar_pipeline.warehouse.schema import metadata as warehouse_metadata
from rar_pipeline_tests.fake_slack import SLACK_PATH, SLACK_SECRET, Reply
from rar_pipeline_tests.test_alert_delivery import GERMAIN_NOV_LINE, NOV, OCT, load, outbox, rebuild, snapshot

OP = "send_rar_alerts"
DAGSTER_URL = "http://dagster.example:3000"
# A warehouse that is down (nothing listens on port 1): a real reason for a monthly run to fail.
DOWN = {"warehouse": WarehouseResource(database_url="postgresql://postgres@127.0.0.1:1/rar")}


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture
def demo_warehouse(engine, landing, load_options):
    """The demo files loaded and 2025-10/2025-11 rebuilt, so the outbox holds 5 pending alerts."""
    load(engine, landing, load_options, "rar-demo-2025-10.csv", seed.demo_rows(OCT, scale=0.9))
    load(engine, landing, load_options, "rar-demo-2025-11.csv", seed.demo_rows())
    load(engine, landing, load_options, "rar-demo-scores-2025-11.csv", seed.demo_score_rows(), header=seed.SCORE_HEADER)
    rebuild(engine, OCT)
    rebuild(engine, NOV)
    return engine


@pytest.fixture
def defs(warehouse_url, tmp_path):
    settings = load_settings({"RAR_HOME": str(tmp_path / "home")}).with_overrides(database_url=warehouse_url)
    return build_definitions(settings)


def fast_slack(url: str | dg.EnvVar | None, **extra) -> SlackResource:
    return SlackResource(webhook_url=url, backoff_factor=0.01, retry_after_cap_seconds=1, **extra)


def op_metadata(result: dg.ExecuteInProcessResult) -> dict:
    (output,) = [event for event in result.all_node_events if event.is_successful_output]
    return {key: value.value for key, value in output.step_output_data.metadata.items()}


def failure_event(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterEvent:
    (record,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return record.dagster_event


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


# rar_alert_job ----------------------------------------------------------------------------------------------
def test_alert_job_posts_one_digest_and_marks_the_rows_sent(defs, demo_warehouse, instance, slack):
    job = defs.resolve_job_def("rar_alert_job")

    result = job.execute_in_process(instance=instance, resources={"slack": fast_slack(slack.url)})

    assert result.success and result.output_for_node(OP) == 5
    meta = op_metadata(result)
    assert (meta["status"], meta["dealers"], meta["alerts"]) == ("sent", 4, 5)
    (payload,) = slack.payloads
    assert f"P0 {GERMAIN_NOV_LINE}" in payload["text"] and payload["blocks"][0]["type"] == "header"
    assert {row["status"] for row in outbox(demo_warehouse)} == {"sent"}
    assert instance.get_run_by_id(result.run_id).tags["rar/writer"] == "alerts"

    again = job.execute_in_process(instance=instance, resources={"slack": fast_slack(slack.url)})

    assert again.success and again.output_for_node(OP) == 0
    assert op_metadata(again)["status"] == "nothing_pending"
    assert len(slack.requests) == 1


def test_alert_job_for_one_month_delivers_only_that_month(defs, demo_warehouse, instance, slack):
    result = defs.resolve_job_def("rar_alert_job").execute_in_process(
        instance=instance,
        resources={"slack": fast_slack(slack.url)},
        run_config={"ops": {OP: {"config": {"month": "2025-11-01"}}}},
    )

    assert result.success and result.output_for_node(OP) == 4
    assert [row["status"] for row in outbox(demo_warehouse, month=OCT)] == ["pending"]


def test_alert_job_without_a_webhook_is_a_dry_run_with_the_digest_in_metadata(defs, demo_warehouse, instance, caplog):
    caplog.set_level(logging.INFO)

    result = defs.resolve_job_def("rar_alert_job").execute_in_process(instance=instance)  # settings without SLACK_WEBHOOK_RAR

    assert result.success and result.output_for_node(OP) == 5
    meta = op_metadata(result)
    assert meta["status"] == "dry_run"
    assert f"P0 {GERMAIN_NOV_LINE}" in meta["digest"]
    assert {(row["status"], row["attempts"]) for row in outbox(demo_warehouse)} == {("dry_run", 0)}
    messages = [record.user_message for record in instance.all_logs(result.run_id)]
    assert any("dry run" in message and GERMAIN_NOV_LINE in message for message in messages)  # the digest is in the run log


def test_alert_job_fails_when_slack_is_down_and_leaves_data_and_queue_intact(defs, demo_warehouse, instance, slack):
    before = snapshot(demo_warehouse)
    slack.script(then=500)
    job = defs.resolve_job_def("rar_alert_job")

    failed = job.execute_in_process(instance=instance, resources={"slack": fast_slack(slack.url, attempts=3)}, raise_on_error=False)

    assert not failed.success
    (step_failure,) = [event for event in failed.all_events if event.is_step_failure]
    assert "Slack did not take the digest (HTTP 500" in step_failure.step_failure_data.error.message
    assert len(slack.requests) == 3
    assert {(row["status"], row["attempts"]) for row in outbox(demo_warehouse)} == {("failed", 3)}
    assert snapshot(demo_warehouse) == before

    slack.script(then=200)
    retried = job.execute_in_process(instance=instance, resources={"slack": fast_slack(slack.url)})

    assert retried.success and retried.output_for_node(OP) == 5
    assert {row["status"] for row in outbox(demo_warehouse)} == {"sent"}
    assert snapshot(demo_warehouse) == before


def test_an_unusable_webhook_url_fails_the_run_without_echoing_it(defs, demo_warehouse, instance):
    result = defs.resolve_job_def("rar_alert_job").execute_in_process(
        instance=instance, resources={"slack": fast_slack(f"http://example.com{SLACK_PATH}")}, raise_on_error=False
    )

    assert not result.success
    (step_failure,) = [event for event in result.all_events if event.is_step_failure]
    assert "SLACK_WEBHOOK_RAR must be an https://" in step_failure.step_failure_data.error.message
    assert SLACK_SECRET not in str(step_failure)
    assert {row["status"] for row in outbox(demo_warehouse)} == {"pending"}


# The secret grep ----------------------------------------------------------------------------------------------
def _secret_free(label: str, text: str | bytes) -> None:
    secret = SLACK_SECRET.encode() if isinstance(text, bytes) else SLACK_SECRET
    assert secret not in text, f"the webhook secret leaked into {label}"


def test_the_webhook_url_appears_nowhere_a_run_leaves_anything(tmp_path, monkeypatch, slack, caplog, capfd):
    caplog.set_level(logging.DEBUG)  # urllib3 and requests log at DEBUG too
    for name in ("RAR_DATABASE_URL", "RAR_LANDING_DIR", "DAGSTER_HOME", "RAR_START_MONTH"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("RAR_HOME", str(home))
    monkeypatch.setenv("RAR_SETTLE_SECONDS", "0")
    monkeypatch.setenv("RAR_DAGSTER_URL", DAGSTER_URL)
    monkeypatch.setenv("SLACK_WEBHOOK_RAR", slack.url)
    settings = load_settings()
    assert settings.slack_webhook_configured
    defs = build_definitions(settings)
    assert isinstance(defs.resources["slack"].webhook_url, dg.EnvVar)
    env_slack = fast_slack(dg.EnvVar("SLACK_WEBHOOK_RAR"), dagster_url=DAGSTER_URL)
    seed.write_batch(settings.landing_dir / "rar-demo-2025-10.csv", seed.demo_rows(OCT, scale=0.9))
    seed.write_batch(settings.landing_dir / "rar-demo-2025-11.csv", seed.demo_rows())
    seed.write_batch(settings.landing_dir / "rar-demo-scores-2025-11.csv", seed.demo_score_rows(), header=seed.SCORE_HEADER)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    results = []
    with dg.instance_for_test(temp_dir=str(dagster_home)) as instance:

        def run(job_name, **options):
            result = defs.resolve_job_def(job_name).execute_in_process(instance=instance, raise_on_error=False, **options)
            results.append(result)
            return result

        assert run("rar_ingest_job").success
        assert run("rar_monthly_job", partition_key="2025-10-01").success
        assert run("rar_monthly_job", partition_key="2025-11-01").success
        # Slack answers 404 and echoes the URL back (the defs' own EnvVar resource).
        slack.script(Reply(404, body=f"no_service {slack.url}"))
        assert not run("rar_alert_job").success
        # Slack unreachable: connection errors, retried (urllib3 logs those retries).
        monkeypatch.setenv("SLACK_WEBHOOK_RAR", f"http://127.0.0.1:{closed_port()}{SLACK_PATH}")
        assert not run("rar_alert_job", resources={"slack": env_slack}).success
        # Slack answers 500 once, then takes the digest (retried with backoff).
        monkeypatch.setenv("SLACK_WEBHOOK_RAR", slack.url)
        slack.script(500, 200)
        assert run("rar_alert_job", resources={"slack": env_slack}).success
        # A failed monthly run and its Slack notice (posted once; then with Slack failing: a warning).
        failed = run("rar_monthly_job", partition_key="2025-11-01", resources=DOWN)
        assert not failed.success
        for answer in (200, 404):
            slack.script(Reply(answer, body=f"echo {slack.url}"))
            context = dg.build_run_status_sensor_context(
                sensor_name="rar_run_failure_sensor",
                dagster_event=failure_event(instance, failed.run_id),
                dagster_instance=instance,
                dagster_run=instance.get_run_by_id(failed.run_id),
                resources={"slack": build_resources(settings)["slack"]},
            ).for_run_failure()
            rar_run_failure_sensor(context)
        assert len(slack.requests) == 5 and "rar_monthly_job" in slack.payloads[3]["text"]
        warehouse = create_engine(settings.database_url)
        assert {row["status"] for row in outbox(warehouse)} == {"sent"}
        warehouse.dispose()

        # Everything the runs produced ...
        runs = instance.get_runs()
        assert len(runs) == len(results) == 7
        for dagster_run in runs:
            _secret_free("a run (config, tags)", str(dagster_run) + dg.serialize_value(dagster_run))
            _secret_free("the run config", str(dagster_run.run_config))
            _secret_free("the run tags", str(dagster_run.tags))
            _secret_free("a job snapshot", dg.serialize_value(instance.get_job_snapshot(dagster_run.job_snapshot_id)))
            _secret_free("an execution plan", dg.serialize_value(instance.get_execution_plan_snapshot(dagster_run.execution_plan_snapshot_id)))
            records = instance.all_logs(dagster_run.run_id)
            assert records
            for record in records:
                _secret_free("an event log record", str(record))
                _secret_free("a serialized event", dg.serialize_value(record))
        for result in results:
            for event in result.all_events:
                _secret_free("an event (metadata, errors)", str(event))
        for request in slack.requests:
            _secret_free("what was posted to Slack", request["body"])
    # ... the warehouse, row by row ...
    engine = create_engine(settings.database_url)
    with engine.connect() as connection:
        for table in warehouse_metadata.sorted_tables:
            _secret_free(f"table {table.name}", str(connection.execute(select(table)).all()))
    engine.dispose()
    # ... every file on disk (warehouse, WAL, Dagster storage, compute logs) ...
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.name == "rar.db" for path in files) and len(files) > 5
    for path in files:
        _secret_free(f"file {path.relative_to(tmp_path)}", path.read_bytes())
    # ... and every log line and anything printed.
    _secret_free("the Python logs", caplog.text + "".join(str(record.args) + str(record.msg) for record in caplog.records))
    out, err = capfd.readouterr()
    _secret_free("stdout/stderr", out + err)
    assert "rar_alert_job" in caplog.text or "rar_alert_job" in err  # the logs were really captured


# The failure sensor ------------------------------------------------------------------------------------------------
def failed_run(instance, job_name="rar_monthly_job", partition="2025-11-01", **options) -> dg.DagsterRun:
    settings = load_settings({"RAR_HOME": "/nonexistent-rar-home"})
    job = build_definitions(settings).resolve_job_def(job_name)
    if job_name == "rar_monthly_job":
        options["partition_key"] = partition
    result = job.execute_in_process(instance=instance, resources=DOWN, raise_on_error=False, **options)
    assert not result.success
    return instance.get_run_by_id(result.run_id)


def evaluate_failure_sensor(instance, run: dg.DagsterRun, slack_resource: SlackResource):
    context = dg.build_run_status_sensor_context(
        sensor_name="rar_run_failure_sensor",
        dagster_event=failure_event(instance, run.run_id),
        dagster_instance=instance,
        dagster_run=run,
        resources={"slack": slack_resource},
    ).for_run_failure()
    return rar_run_failure_sensor(context)


def test_a_failed_monthly_run_posts_one_message_with_job_partition_step_error_and_link(instance, slack):
    run = failed_run(instance)

    evaluate_failure_sensor(instance, run, fast_slack(slack.url, dagster_url=DAGSTER_URL))

    (payload,) = slack.payloads
    lines = payload["text"].splitlines()
    assert lines[0] == ":rotating_light: RaR pipeline run failed: rar_monthly_job [2025-11-01], step rar__events"
    assert len(lines) == 3 and "cannot reach the warehouse" in lines[1]
    assert lines[2] == f"<{DAGSTER_URL}/runs/{run.run_id}|Open the run>"


def test_without_dagster_url_the_message_has_no_link_and_without_webhook_nothing_is_posted(instance, slack):
    run = failed_run(instance)

    evaluate_failure_sensor(instance, run, fast_slack(slack.url))
    evaluate_failure_sensor(instance, run, SlackResource())  # dry run: logged only

    (payload,) = slack.payloads
    assert len(payload["text"].splitlines()) == 2 and "Open the run" not in payload["text"]


def test_a_failing_webhook_does_not_fail_the_sensor(instance, slack):
    slack.script(404)
    run = failed_run(instance)

    assert evaluate_failure_sensor(instance, run, fast_slack(slack.url)) is None
    assert len(slack.requests) == 1


def test_a_run_dagster_will_retry_posts_nothing(slack):
    with dg.instance_for_test(overrides={"run_retries": {"enabled": True, "max_retries": 2}}) as instance:
        run = failed_run(instance)
        assert run.tags.get("dagster/will_retry") == "true"  # set by Dagster itself

        evaluate_failure_sensor(instance, run, fast_slack(slack.url))

    assert slack.requests == []


def test_the_sensor_watches_ingest_and_monthly_runs_but_never_the_alert_job(instance, slack):
    """The sensor evaluated as the daemon does: one message per failed ingest/monthly run, none for rar_alert_job."""
    resources = {"slack": fast_slack(slack.url)}
    first = rar_run_failure_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources))
    assert "Initiating" in (first.skip_message or "")

    monthly = failed_run(instance)
    alert = failed_run(instance, "rar_alert_job")
    ingest = failed_run(instance, "rar_ingest_job")
    cursor = first.cursor
    reacted = []
    for _ in range(5):  # the daemon's ticks, until the cursor stops moving
        tick = rar_run_failure_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor))
        reacted += [reaction.dagster_run.run_id for reaction in tick.dagster_run_reactions or []]
        if tick.cursor == cursor:
            break
        cursor = tick.cursor

    assert sorted(reacted) == sorted([monthly.run_id, ingest.run_id])
    texts = [payload["text"] for payload in slack.payloads]
    assert len(texts) == 2
    assert any(text.startswith(":rotating_light: RaR pipeline run failed: rar_monthly_job [2025-11-01], step rar__events") for text in texts)
    assert any(text.startswith(":rotating_light: RaR pipeline run failed: rar_ingest_job, step") for text in texts)
    assert not any("rar_alert_job" in text for text in texts)
    assert alert.run_id not in reacted


# Schedules ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def repository():
    return build_definitions(load_settings({"RAR_HOME": "/nonexistent-rar-home"})).get_repository_def()


def nightly(day: tuple[int, int, int], repository, close_days: int = 5) -> list[dg.RunRequest]:
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(*day, 3, 0, tzinfo=timezone.utc),
        resources={"rules": RarRulesResource(close_days=close_days)},
        repository_def=repository,
    )
    return rar_nightly_schedule.evaluate_tick(context).run_requests


@pytest.mark.parametrize(
    ("day", "months"),
    [
        ((2025, 11, 1), ["2025-10", "2025-11"]),  # the 1st: finalise the month that just ended
        ((2025, 11, 5), ["2025-10", "2025-11"]),  # the last close day
        ((2025, 11, 6), ["2025-11"]),
        ((2025, 11, 30), ["2025-11"]),
        ((2024, 2, 29), ["2024-02"]),  # leap day
        ((2024, 3, 1), ["2024-02", "2024-03"]),  # the day after the leap day
        ((2025, 1, 1), ["2024-12", "2025-01"]),  # across a year end
        ((2024, 1, 1), ["2024-01"]),  # 2023-12 is before RAR_START_MONTH
    ],
)
def test_nightly_schedule_requests_the_running_month_and_during_the_close_days_the_previous_one(day, months, repository):
    requests = nightly(day, repository)

    stamp = date(*day).isoformat()
    assert [request.partition_key for request in requests] == [f"{month}-01" for month in months]
    assert [request.run_key for request in requests] == [f"nightly-{stamp}-{month}" for month in months]
    for request in requests:
        assert request.tags["dagster/partition"] == request.partition_key
        assert request.tags["rar/trigger"] == "nightly"
    assert [request.run_key for request in nightly(day, repository)] == [request.run_key for request in requests]  # deterministic


def test_close_days_are_configurable(repository):
    assert [request.partition_key for request in nightly((2025, 11, 2), repository, close_days=1)] == ["2025-11-01"]
    assert [request.partition_key for request in nightly((2025, 11, 7), repository, close_days=7)] == ["2025-10-01", "2025-11-01"]


def test_schedules_run_at_3_and_3_30_utc_and_start_running():
    assert (rar_nightly_schedule.cron_schedule, rar_nightly_schedule.execution_timezone) == ("0 3 * * *", "UTC")
    assert rar_nightly_schedule.job_name == "rar_monthly_job"
    assert (rar_alert_sweep_schedule.cron_schedule, rar_alert_sweep_schedule.execution_timezone) == ("30 3 * * *", "UTC")
    assert rar_alert_sweep_schedule.job_name == "rar_alert_job"
    assert rar_nightly_schedule.default_status == rar_alert_sweep_schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_the_sweep_schedule_requests_one_alert_run_per_day(repository):
    keys = []
    for day in ((2025, 11, 1), (2025, 11, 1), (2025, 11, 2), (2024, 2, 29)):
        context = dg.build_schedule_context(scheduled_execution_time=datetime(*day, 3, 30, tzinfo=timezone.utc), repository_def=repository)
        (request,) = rar_alert_sweep_schedule.evaluate_tick(context).run_requests
        assert request.partition_key is None and not request.run_config
        keys.append(request.run_key)
    assert keys == ["alert-sweep-2025-11-01", "alert-sweep-2025-11-01", "alert-sweep-2025-11-02", "alert-sweep-2024-02-29"]


# The pressure sensor --------------------------------------------------------------------------------------------------
def test_a_pressure_materialization_requests_the_alert_job(tmp_path, landing, instance, slack):
    settings = load_settings({"RAR_HOME": str(tmp_path / "home"), "RAR_LANDING_DIR": str(landing), "RAR_SETTLE_SECONDS": "0"})
    defs = build_definitions(settings)
    assert rar_pressure_alert_sensor.job_name == "rar_alert_job"
    assert rar_pressure_alert_sensor.asset_key == dg.AssetKey(["rar", "pressure"])

    def tick(cursor):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, sensor_name="rar_pressure_alert_sensor")
        return rar_pressure_alert_sensor.evaluate_tick(context)

    empty = tick(None)
    assert empty.run_requests == [] and "No new materialization" in empty.skip_message
    seed.write_batch(landing / "rar-demo-2025-11.csv", seed.demo_rows())
    assert defs.resolve_job_def("rar_ingest_job").execute_in_process(instance=instance).success
    assert tick(None).run_requests == []  # rar/raw_events is not rar/pressure
    monthly = defs.resolve_job_def("rar_monthly_job").execute_in_process(instance=instance, partition_key="2025-11-01")

    requested = tick(None)

    (request,) = requested.run_requests
    assert request.tags["rar/month"] == "2025-11-01"
    assert request.run_key == f"alerts-after-{monthly.run_id}-2025-11-01"
    assert tick(requested.cursor).run_requests == []  # nothing new since
    # The requested run delivers what the pressure asset queued.
    delivered = defs.resolve_job_def("rar_alert_job").execute_in_process(
        instance=instance, tags=request.tags, resources={"slack": fast_slack(slack.url)}
    )
    assert delivered.success and delivered.output_for_node(OP) == 3  # the three rooftops (no score snapshot: no P0)
    assert len(slack.requests) == 1
    # A rerun of the month materializes rar/pressure again: a new request, but no new alerts.
    rerun = defs.resolve_job_def("rar_monthly_job").execute_in_process(instance=instance, partition_key="2025-11-01")
    (again,) = tick(requested.cursor).run_requests
    assert again.run_key == f"alerts-after-{rerun.run_id}-2025-11-01" != request.run_key
    redelivered = defs.resolve_job_def("rar_alert_job").execute_in_process(
        instance=instance, tags=again.tags, resources={"slack": fast_slack(slack.url)}
    )
    assert redelivered.output_for_node(OP) == 0 and len(slack.requests) == 1
