"""Alert delivery (the Slack op and its job), what triggers it, failure notices and the nightly schedules."""

from datetime import date, datetime, timezone

import dagster as dg

from rar_pipeline.alerts import deliver_pending, failure_text
from rar_pipeline.defs.jobs import rar_ingest_job, rar_monthly_job
from rar_pipeline.defs.monthly import PRESSURE_KEY
from rar_pipeline.defs.partitions import monthly_partitions
from rar_pipeline.defs.resources import RarRulesResource, SlackResource, WarehouseResource
from rar_pipeline.months import nightly_months


class AlertDeliveryConfig(dg.Config):
    month: str | None = None
    """Deliver only this month's alerts (YYYY-MM-DD); empty = everything pending or failed."""


@dg.op(
    description="Post pending and failed RaR alerts from rar_alert_outbox to Slack as one digest "
    "(a dry run that only renders it when SLACK_WEBHOOK_RAR is not set).",
)
def send_rar_alerts(
    context: dg.OpExecutionContext, config: AlertDeliveryConfig, warehouse: WarehouseResource, slack: SlackResource
) -> int:
    webhook = slack.webhook()
    month = date.fromisoformat(config.month) if config.month else None
    try:
        report = deliver_pending(warehouse.get_engine(), webhook.post if webhook else None, datetime.now(timezone.utc), month)
    finally:
        if webhook:
            webhook.close()
    text = report.digest["text"] if report.digest else ""
    if report.status == "dry_run":
        context.log.info(f"dry run (SLACK_WEBHOOK_RAR is not set); this digest would be posted:\n{text}")
    elif report.status == "nothing_pending":
        context.log.info("no pending alerts")
    context.add_output_metadata(
        {"status": report.status, "dealers": report.dealers, "alerts": report.alerts, "digest": dg.MetadataValue.md(text or "-")}
    )
    if report.status == "failed":
        raise dg.Failure(
            description=f"Slack did not take the digest ({report.error}); the {report.alerts} alerts stay queued "
            "and the next delivery retries them.",
            allow_retries=False,
        )
    return report.alerts


@dg.job(
    name="rar_alert_job",
    description="Deliver queued RaR alerts to Slack as one digest. Never touches the data.",
    tags={"rar/writer": "alerts"},
)
def rar_alert_job():
    send_rar_alerts()


@dg.asset_sensor(
    asset_key=PRESSURE_KEY,
    job=rar_alert_job,
    name="rar_pressure_alert_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After rar/pressure materializes, deliver what it queued (with anything else still waiting).",
)
def rar_pressure_alert_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    month = asset_event.dagster_event.partition if asset_event.dagster_event else None
    # Everything waiting goes out in the one digest; the tag says which month triggered it.
    # An EventLogEntry has no storage id; the run that materialized rar/pressure (one month per run) is unique.
    return dg.RunRequest(run_key=f"alerts-after-{asset_event.run_id}-{month or '-'}", tags={"rar/month": month or "-"})


@dg.run_failure_sensor(
    name="rar_run_failure_sensor",
    monitored_jobs=[rar_ingest_job, rar_monthly_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts one Slack message per failed ingest or monthly run (not for rar_alert_job: no loops).",
)
def rar_run_failure_sensor(context: dg.RunFailureSensorContext, slack: SlackResource):
    run = context.dagster_run
    if run.tags.get("dagster/will_retry") == "true":
        context.log.info(f"run {run.run_id} will be retried by Dagster; no message")
        return
    failures = context.get_step_failure_events()
    step = failures[0].step_key if failures else None
    error = failures[0].event_specific_data.error if failures and failures[0].event_specific_data else None
    message = (error.message if error else None) or context.failure_event.message or "unknown error"
    link = f"{slack.dagster_url}/runs/{run.run_id}" if slack.dagster_url else None
    text = failure_text(run.job_name, run.tags.get("dagster/partition"), step, message, link)
    webhook = slack.webhook()
    if webhook is None:
        context.log.info(f"dry run (SLACK_WEBHOOK_RAR is not set): {text}")
        return
    try:
        result = webhook.post({"text": text})
    finally:
        webhook.close()
    if not result.ok:
        context.log.warning(f"could not post the failure notice: {result.error}")


@dg.schedule(
    name="rar_nightly_schedule",
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    job=rar_monthly_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="03:00 UTC: rebuild the running month, and the previous one during the first RAR_CLOSE_DAYS days.",
)
def rar_nightly_schedule(context: dg.ScheduleEvaluationContext, rules: RarRulesResource):
    day = context.scheduled_execution_time.astimezone(timezone.utc).date()
    first = date.fromisoformat(monthly_partitions.get_first_partition_key())
    return [
        dg.RunRequest(run_key=f"nightly-{day}-{month:%Y-%m}", partition_key=month.isoformat(), tags={"rar/trigger": "nightly"})
        for month in nightly_months(day, rules.close_days)
        if month >= first
    ]


@dg.schedule(
    name="rar_alert_sweep_schedule",
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    job=rar_alert_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="03:30 UTC, after the nightly rebuild: deliver anything still pending, and retry failed alerts.",
)
def rar_alert_sweep_schedule(context: dg.ScheduleEvaluationContext):
    day = context.scheduled_execution_time.astimezone(timezone.utc).date()
    return dg.RunRequest(run_key=f"alert-sweep-{day}", tags={"rar/trigger": "nightly"})
