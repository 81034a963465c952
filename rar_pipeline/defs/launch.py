"""Running the pipeline's jobs from the command line, against the configured Dagster instance.

The CLI uses the same jobs the sensors launch, so a run started here shows in the UI like any other.
"""

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg

from rar_pipeline.config import Settings, child_environment
from rar_pipeline.definitions import build_definitions

# The repository's instance config (run queue limits, run monitoring, telemetry off); present in a
# source checkout, which is where `make dev` and the CLI run from.
REPO_INSTANCE_CONFIG = Path(__file__).resolve().parents[2] / "dagster.yaml"
WORKSPACE = Path(__file__).resolve().parents[2] / "workspace.yaml"


class LaunchError(RuntimeError):
    """A run could not be queued; the message is one line."""


def prepare_dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME, created with the repository's dagster.yaml if it has none."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() and REPO_INSTANCE_CONFIG.exists():
        shutil.copyfile(REPO_INSTANCE_CONFIG, config)
    return home


def dagster_instance(settings: Settings) -> dg.DagsterInstance:
    """The persistent instance under DAGSTER_HOME."""
    return dg.DagsterInstance.from_config(str(prepare_dagster_home(settings)))


# The command line prints its own report; the full event log is in the UI.
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run_job(
    settings: Settings, job_name: str, request: dg.RunRequest | None = None, run_config: dict | None = None
) -> dg.ExecuteInProcessResult:
    """Run a job in this process on the configured instance; `request` is what a sensor would send."""
    job = build_definitions(settings).resolve_job_def(job_name)
    with dagster_instance(settings) as instance:
        return job.execute_in_process(
            run_config={**QUIET_CONSOLE, **(run_config or {})},
            instance=instance,
            raise_on_error=False,
            partition_key=request.partition_key if request else None,
            asset_selection=request.asset_selection if request else None,
            tags={"rar/launched_by": "cli", **(request.tags if request else {})},
        )


def deliver_alerts(settings: Settings, month: str | None) -> dg.ExecuteInProcessResult:
    """What the pressure sensor triggers: one digest of the month's queued alerts."""
    return run_job(settings, "rar_alert_job", run_config={"ops": {"send_rar_alerts": {"config": {"month": month}}}})


def ingest_and_refresh(settings: Settings, engine) -> tuple[dg.ExecuteInProcessResult, list[dg.RunRequest], list[dg.ExecuteInProcessResult]]:
    """What the two sensors would do, in order: load pending files, then rebuild the touched months."""
    from rar_pipeline.defs.sensors import refresh_run_request
    from rar_pipeline.ledger import newest_batch_id, refresh_plan
    from rar_pipeline.months import current_month

    with engine.connect() as connection:
        before = newest_batch_id(connection)
    ingest = run_job(settings, "rar_ingest_job")
    if not ingest.success:
        return ingest, [], []
    with engine.connect() as connection:
        plan, _ = refresh_plan(connection, before, current_month())
    requests = [refresh_run_request(item) for item in plan]
    return ingest, requests, [run_job(settings, "rar_monthly_job", request) for request in requests]


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """One line: the first failing step and its error."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            message = (error.message or "").strip().splitlines()
            return f"step {event.step_key} failed: {message[0] if message else error.cls_name}"
    return "the run failed; see the Dagster UI for details"


def submit_run(settings: Settings, job_name: str, partition_key: str) -> str:
    """Queue a run on the instance's run queue (the daemon executes it); returns the run id.

    Uses `dagster job launch`, Dagster's own way to submit a run of a workspace's job from outside
    the webserver; a request tag finds the run it created.
    """
    request_id = uuid.uuid4().hex
    tags = {"dagster/partition": partition_key, "rar/trigger": "cli", "rar/request": request_id}
    prepare_dagster_home(settings)
    command = [sys.executable, "-m", "dagster", "job", "launch", "-w", str(WORKSPACE), "-j", job_name, "--tags", json.dumps(tags)]
    done = subprocess.run(
        command, env=child_environment(settings), capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        raise LaunchError(f"could not queue {job_name}: {last[-1] if last else 'dagster job launch failed'}")
    with dagster_instance(settings) as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"rar/request": request_id}), limit=1)
    if not runs:
        raise LaunchError(f"dagster job launch did not create a run of {job_name}")
    return runs[0].run_id
