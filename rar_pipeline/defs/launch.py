"""Running the pipeline's jobs from the command line, against the configured Dagster instance.

The CLI uses the same jobs the sensors launch, so a run started here shows in the UI like any other.
"""

import shutil
from pathlib import Path

import dagster as dg

from rar_pipeline.config import Settings
from rar_pipeline.definitions import build_definitions

# The repository's instance config (run queue limits, run monitoring, telemetry off); present in a
# source checkout, which is where `make dev` and the CLI run from.
REPO_INSTANCE_CONFIG = Path(__file__).resolve().parents[2] / "dagster.yaml"


def dagster_instance(settings: Settings) -> dg.DagsterInstance:
    """The persistent instance under DAGSTER_HOME, created with the repository's dagster.yaml if new."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() and REPO_INSTANCE_CONFIG.exists():
        shutil.copyfile(REPO_INSTANCE_CONFIG, config)
    return dg.DagsterInstance.from_config(str(home))


# The command line prints its own report; the full event log is in the UI.
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run_job(settings: Settings, job_name: str, tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
    job = build_definitions(settings).resolve_job_def(job_name)
    with dagster_instance(settings) as instance:
        return job.execute_in_process(
            run_config=QUIET_CONSOLE, instance=instance, raise_on_error=False, tags={"rar/launched_by": "cli", **(tags or {})}
        )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """One line: the first failing step and its error."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            message = (error.message or "").strip().splitlines()
            return f"step {event.step_key} failed: {message[0] if message else error.cls_name}"
    return "the run failed; see the Dagster UI for details"
