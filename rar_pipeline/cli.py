"""`rar-pipeline`: ingesting files, demo and synthetic data, summaries, recomputes, alerts, schema upgrades.

Dagster is imported inside the commands that run jobs, so `--help`, `status` or `summary` start fast.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import click

from rar_pipeline.config import ConfigError, Settings, load_settings
from rar_pipeline.landing import DeliveryError, deliver
from rar_pipeline.months import add_months, parse_month
from rar_pipeline.seed import DEMO_MONTH, HEADER, SCORE_HEADER, SeedSpec, demo_rows, demo_score_rows, synthetic_rows, write_batch
from rar_pipeline.summaries import NotFound
from rar_pipeline.warehouse.engine import WarehouseError, create_warehouse_engine, open_warehouse, upgrade_schema

USER_ERRORS = (ConfigError, WarehouseError, DeliveryError, NotFound)


class _Commands(click.Group):
    """Turns the user's mistakes into one line on stderr and exit status 1, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=_Commands)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Revenue at Risk pipeline: load dealer batches, inspect the ledger."""
    ctx.obj = _LazySettings()


class _LazySettings:
    """Settings are read on first use, so `--help` works even with a broken environment."""

    _settings: Settings | None = None

    def get(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings


pass_settings = click.make_pass_decorator(_LazySettings)


@cli.command()
# Paths are checked by `deliver`, so a wrong one is a one-line error like every other mistake.
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--wait", is_flag=True, help="Also run the ingest job now (in this process) and report per file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_settings
def ingest(lazy: _LazySettings, files: tuple[Path, ...], wait: bool, as_json: bool) -> None:
    """Copy FILES into the landing zone (atomically); the landing sensor loads them within a minute."""
    settings = lazy.get()
    delivered = [deliver(settings.landing_dir, path) for path in files]
    if not wait:
        if as_json:
            click.echo(json.dumps([{"file_name": path.name, "sha256": sha256, "status": "delivered"} for path, sha256 in delivered], indent=2))
            return
        for path, sha256 in delivered:
            click.echo(f"delivered {path.name} (sha256 {sha256[:12]}) to {settings.landing_dir}")
        click.echo("the landing sensor loads them within a minute (or run again with --wait)")
        return
    reports = _ingest_now(settings, delivered)
    if as_json:
        click.echo(json.dumps(reports, indent=2))
        return
    for report in reports:
        _print_report(report)


def _ingest_now(settings: Settings, delivered: list[tuple[Path, str]]) -> list[dict]:
    """Run the ingest job, then the monthly job for every month it touched, as the sensors would."""
    # Copies keep their source's mtime; one that is too fresh waits until it counts as settled (a
    # file the running daemon already took away needs no waiting).
    mtimes = [path.stat().st_mtime for path, _ in delivered if path.exists()]
    time.sleep(max(0.0, settings.settle_seconds - (time.time() - max(mtimes, default=0.0))))
    engine = open_warehouse(settings.database_url)
    try:
        return _run_and_report(settings, engine, delivered)
    finally:
        engine.dispose()


def _run_and_report(settings: Settings, engine, delivered: list[tuple[Path, str]]) -> list[dict]:
    from rar_pipeline.defs.launch import failure_message, ingest_and_refresh
    from rar_pipeline.ledger import batch_for_delivery

    ingest_result, requests, monthly_results = ingest_and_refresh(settings, engine)
    if not ingest_result.success:
        raise click.ClickException(f"rar_ingest_job failed: {failure_message(ingest_result)}")
    for request, result in zip(requests, monthly_results):
        what = "score adjustments" if request.asset_selection else "monthly lineage"
        outcome = "ok" if result.success else f"FAILED: {failure_message(result)}"
        click.echo(f"rebuilt {what} of {request.partition_key[:7]}: {outcome}", err=True)
        if result.success and not request.asset_selection:
            _deliver_and_report(settings, engine, request.partition_key)
    with engine.connect() as connection:
        reports = []
        for path, sha256 in delivered:
            batch = batch_for_delivery(connection, path.name, sha256)
            reports.append(batch or {"file_name": path.name, "sha256": sha256, "status": "pending"})
    if not all(result.success for result in monthly_results):
        raise click.ClickException("a monthly rebuild failed; see above and the Dagster UI")
    return reports


def _deliver_and_report(settings: Settings, engine, month_key: str) -> None:
    """Run the alert delivery for a refreshed month, as the pressure sensor would, and say what happened."""
    from datetime import date

    from rar_pipeline.alerts import month_alerts
    from rar_pipeline.defs.launch import deliver_alerts, failure_message

    result = deliver_alerts(settings, month_key)
    delivered = result.output_for_node("send_rar_alerts") if result.success else None
    with engine.connect() as connection:
        counts, digest = month_alerts(connection, date.fromisoformat(month_key))
    summary = ", ".join(f"{count} {status}" for status, count in sorted(counts.items())) or "none"
    if not result.success:
        click.echo(f"alerts of {month_key[:7]}: delivery failed ({failure_message(result)}); they stay queued", err=True)
        return
    click.echo(f"alerts of {month_key[:7]}: {delivered or 'none'} delivered now; in total {summary}", err=True)
    if delivered and not settings.slack_webhook_configured:
        click.echo("SLACK_WEBHOOK_RAR is not set, so nothing was posted; the digest would read:", err=True)
        click.echo("  " + digest.replace("\n", "\n  "), err=True)


def _print_report(report: dict) -> None:
    line = f"{report['file_name']}  sha256 {report['sha256'][:12]}  {report['status']}"
    if report["status"] == "loaded":
        line += f"  rows {report['rows_read']}  accepted {report['rows_accepted']}  rejected {report['rows_rejected']}"
        if report["rejected_by_reason"]:
            line += " (" + ", ".join(f"{reason} {count}" for reason, count in report["rejected_by_reason"].items()) + ")"
    elif report.get("detail"):
        line += f"  {report.get('reason') or ''} {report['detail']}".rstrip()
    click.echo(line)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--limit", default=20, show_default=True, help="How many of the latest batches to list.")
@pass_settings
def status(lazy: _LazySettings, as_json: bool, limit: int) -> None:
    """The ledger (latest batches) and rejected rows grouped by reason."""
    from rar_pipeline.ledger import file_rejects_by_reason, latest_batches, rejected_by_reason

    engine = open_warehouse(lazy.get().database_url)
    with engine.connect() as connection:
        summary = {
            "batches": latest_batches(connection, limit),
            "rejected_rows_by_reason": rejected_by_reason(connection),
            "rejected_files_by_reason": file_rejects_by_reason(connection),
        }
    engine.dispose()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    _print_status(summary)


def _print_status(summary: dict) -> None:
    if not summary["batches"]:
        click.echo("no batches yet: put files in the landing zone or run `rar-pipeline ingest --wait FILE`")
        return
    click.echo(f"{'batch':>6}  {'status':<9} {'rows':>9} {'accepted':>9} {'rejected':>9}  file")
    for batch in summary["batches"]:
        note = f"  ({batch['reason']})" if batch["reason"] else ""
        click.echo(
            f"{batch['batch_id']:>6}  {batch['status']:<9} {batch['rows_read']:>9} {batch['rows_accepted']:>9} "
            f"{batch['rows_rejected']:>9}  {batch['file_name']}{note}"
        )
    for title, counts in (("rejected rows", summary["rejected_rows_by_reason"]), ("rejected files", summary["rejected_files_by_reason"])):
        if counts:
            click.echo(f"{title}: " + ", ".join(f"{reason} {count}" for reason, count in counts.items()))


@cli.command()
@click.option("--dealer", "dealer_id", required=True, help="Dealer id, e.g. germain-toyota-naples.")
@click.option("--month", default=None, help="YYYY-MM (default: the dealer's latest month).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def summary(lazy: _LazySettings, dealer_id: str, month: str | None, as_json: bool) -> None:
    """A dealer's monthly RaR (the old API's summary)."""
    from rar_pipeline.summaries import dealer_summary

    wanted = _month_option(month)
    with _reading(lazy) as connection:
        result = dealer_summary(connection, dealer_id, wanted)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{result['dealerId']}  {result['month'][:7]}  events {result['eventCount']}")
    click.echo(f"  RaR ${result['rar']:,.2f}   recoverable ${result['recoverable']:,.2f}   lost sales {result['lostSales']}")
    click.echo(f"  lost sessions {result['lostSessions']:,}   lost leads {result['lostLeads']:,}")
    for item in result["topLosingIntents"]:
        click.echo(f"  {item['intent']:<22} ${item['rar']:>12,.2f}")


@cli.command()
@click.option("--dealer", "dealer_id", required=True, help="Dealer id.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def pressure(lazy: _LazySettings, dealer_id: str, as_json: bool) -> None:
    """A dealer's current RaR pressure (0..1) and trend."""
    from rar_pipeline.summaries import dealer_pressure

    with _reading(lazy) as connection:
        result = dealer_pressure(connection, dealer_id)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(f"{result['dealerId']}  {result['month'][:7]}  pressure {result['pressure']:.2f}  trend {result['trend']}")


def _month_option(month: str | None):
    if month is None:
        return None
    try:
        return parse_month(month)
    except ValueError:  # one line and exit 1, like every other mistake (not click's usage screen)
        raise click.ClickException(f"--month {month!r} is not a month; use YYYY-MM, e.g. 2025-11") from None


@contextmanager
def _reading(lazy: _LazySettings):
    engine = open_warehouse(lazy.get().database_url)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


@cli.command()
@click.option("--month", required=True, help="YYYY-MM, a month from RAR_START_MONTH to the running month.")
@click.option("--wait", is_flag=True, help="Run it here and now (and deliver its alerts) instead of queueing it.")
@pass_settings
def recompute(lazy: _LazySettings, month: str, wait: bool) -> None:
    """Rebuild one month of the RaR lineage (the old "compute" endpoint and Pulse hook)."""
    from rar_pipeline.defs.launch import LaunchError, failure_message, run_job, submit_run
    from rar_pipeline.defs.partitions import monthly_partitions

    settings = lazy.get()
    wanted = _month_option(month)
    keys = monthly_partitions.get_partition_keys()
    if wanted.isoformat() not in keys:
        raise click.ClickException(f"{month} is outside the pipeline's months {keys[0][:7]}..{keys[-1][:7]} (RAR_START_MONTH to now)")
    if not wait:
        try:
            run_id = submit_run(settings, "rar_monthly_job", wanted.isoformat())
        except LaunchError as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"queued run {run_id} of rar_monthly_job for {month}; the Dagster daemon runs it (`make dev`)")
        return
    import dagster as dg

    result = run_job(settings, "rar_monthly_job", dg.RunRequest(partition_key=wanted.isoformat(), tags={"rar/trigger": "cli"}))
    if not result.success:
        raise click.ClickException(f"rar_monthly_job for {month} failed: {failure_message(result)}")
    click.echo(f"rebuilt {month} (run {result.run_id})")
    engine = open_warehouse(settings.database_url)
    _deliver_and_report(settings, engine, wanted.isoformat())
    engine.dispose()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--limit", default=50, show_default=True)
@pass_settings
def alerts(lazy: _LazySettings, as_json: bool, limit: int) -> None:
    """The alert outbox: pending, sent, failed and dry-run alerts, newest first."""
    from rar_pipeline.alerts import outbox_rows

    with _reading(lazy) as connection:
        rows = outbox_rows(connection, limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no alerts yet")
    for row in rows:
        error = f"  {row['lastError']}" if row["lastError"] else ""
        click.echo(
            f"{row['alertId']:>5}  {row['kind']:<8} {row['dealerId']:<28} {row['month'][:7]}  pressure {row['pressure']:.2f}"
            f"  P0 {row['p0']:<7} {row['status']:<8} attempts {row['attempts']}{error}"
        )


@cli.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to write into.")
@click.option("--dealers", default=20, show_default=True)
@click.option("--months", default=3, show_default=True, help="How many months, ending with --last-month.")
@click.option("--rows", default=1000, show_default=True)
@click.option("--seed", "seed_value", default=0, show_default=True)
@click.option("--last-month", default=DEMO_MONTH.strftime("%Y-%m"), show_default=True)
@click.option("--format", "file_format", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--demo", is_flag=True, help="Write the three rooftops of the domain spec instead.")
def seed(out_dir: Path, dealers: int, months: int, rows: int, seed_value: int, last_month: str, file_format: str, demo: bool) -> None:
    """Write a deterministic synthetic batch (or the demo rooftops) to --out."""
    if demo:
        path = out_dir / f"rar-demo-{DEMO_MONTH:%Y-%m}.{file_format}"
        count = write_batch(path, demo_rows(), file_format)
    else:
        try:
            last = parse_month(last_month)
        except ValueError:
            raise click.ClickException(f"--last-month {last_month!r} is not a month; use YYYY-MM, e.g. 2025-11") from None
        spec = SeedSpec(dealers=dealers, months=months, rows=rows, seed=seed_value, last_month=last)
        path = out_dir / f"rar-synthetic-{last:%Y-%m}-s{seed_value}-{rows}.{file_format}"
        count = write_batch(path, synthetic_rows(spec), file_format)
    click.echo(f"wrote {count} rows to {path}")


@cli.command()
@pass_settings
def demo(lazy: _LazySettings) -> None:
    """Load the three demo rooftops (2025-10 and 2025-11) through the pipeline and print their RaR."""
    from rar_pipeline.seed import DEMO_ROOFTOPS
    from rar_pipeline.summaries import dealer_adjustment, dealer_pressure, dealer_summary

    settings = lazy.get()
    staging = settings.home / "demo"
    october = add_months(DEMO_MONTH, -1)
    files = [
        (staging / f"rar-demo-{october:%Y-%m}.csv", demo_rows(october, scale=0.9), HEADER),
        (staging / f"rar-demo-{DEMO_MONTH:%Y-%m}.csv", demo_rows(), HEADER),
        (staging / f"rar-demo-scores-{DEMO_MONTH:%Y-%m}.csv", demo_score_rows(), SCORE_HEADER),
    ]
    delivered = []
    for path, rows, header in files:
        write_batch(path, rows, header=header)
        delivered.append(deliver(settings.landing_dir, path))
    for report in _ingest_now(settings, delivered):
        _print_report(report)
    click.echo(f"\nRevenue at Risk, {DEMO_MONTH:%B %Y}:")
    click.echo(f"{'dealer':<24}{'RaR':>13}{'recoverable':>14}{'pressure':>10}  {'trend':<7} {'AIV→adjusted':<15} top intents")
    with _reading(lazy) as connection:
        for dealer_id, _, _ in DEMO_ROOFTOPS:
            result = dealer_summary(connection, dealer_id, DEMO_MONTH)
            current = dealer_pressure(connection, dealer_id)
            intents = ", ".join(item["intent"] for item in result["topLosingIntents"][:3])
            scores = dealer_adjustment(connection, dealer_id, DEMO_MONTH)
            aiv = f"{scores['aiv']:.0f}→{scores['aivAdjusted']:.2f}" if scores else "-"
            click.echo(
                f"{dealer_id:<24}{result['rar']:>13,.2f}{result['recoverable']:>14,.2f}"
                f"{current['pressure']:>10.2f}  {current['trend']:<7} {aiv:<15} {intents}"
            )
    click.echo(
        f"\nSee the runs, the lineage and the checks in the Dagster UI: `make dev`, then open "
        f"http://127.0.0.1:3000 (DAGSTER_HOME={settings.dagster_home})."
    )


@cli.group()
def db() -> None:
    """Warehouse schema commands."""


@db.command("upgrade")
@pass_settings
def db_upgrade(lazy: _LazySettings) -> None:
    """Create or migrate the warehouse schema to the latest version (Alembic)."""
    settings = lazy.get()
    engine = create_warehouse_engine(settings.database_url)
    upgrade_schema(engine)
    click.echo(f"warehouse {engine.url.render_as_string(hide_password=True)} is up to date")
    engine.dispose()


def main() -> None:
    cli(prog_name="rar-pipeline")
