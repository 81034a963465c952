"""`rar-pipeline`: demo data, ingesting files, status of batches and rejects, schema upgrades."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from rar_pipeline.config import ConfigError, Settings, load_settings
from rar_pipeline.landing import DeliveryError, deliver
from rar_pipeline.seed import DEMO_MONTH, SeedSpec, demo_rows, synthetic_rows, write_batch
from rar_pipeline.warehouse.engine import WarehouseError, create_warehouse_engine, open_warehouse, upgrade_schema

USER_ERRORS = (ConfigError, WarehouseError, DeliveryError)


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
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@click.option("--wait", is_flag=True, help="Also run the ingest job now (in this process) and report per file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_settings
def ingest(lazy: _LazySettings, files: tuple[Path, ...], wait: bool, as_json: bool) -> None:
    """Copy FILES into the landing zone (atomically); the landing sensor loads them within a minute."""
    settings = lazy.get()
    delivered = [deliver(settings.landing_dir, path) for path in files]
    if not wait:
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
    from rar_pipeline.defs.launch import failure_message, run_job
    from rar_pipeline.ledger import batch_for_delivery

    engine = open_warehouse(settings.database_url)
    # Copies keep their source's mtime; one that is too fresh waits until it counts as settled.
    newest = max(path.stat().st_mtime for path, _ in delivered)
    time.sleep(max(0.0, settings.settle_seconds - (time.time() - newest)))
    result = run_job(settings, "rar_ingest_job")
    if not result.success:
        raise click.ClickException(f"rar_ingest_job failed: {failure_message(result)}")
    with engine.connect() as connection:
        reports = []
        for path, sha256 in delivered:
            batch = batch_for_delivery(connection, path.name, sha256)
            reports.append(batch or {"file_name": path.name, "sha256": sha256, "status": "pending"})
    engine.dispose()
    return reports


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
    from rar_pipeline.months import parse_month

    if demo:
        path = out_dir / f"rar-demo-{DEMO_MONTH:%Y-%m}.{file_format}"
        count = write_batch(path, demo_rows(), file_format)
    else:
        try:
            last = parse_month(last_month)
        except ValueError:
            raise click.BadParameter("use YYYY-MM, e.g. 2025-11", param_hint="--last-month") from None
        spec = SeedSpec(dealers=dealers, months=months, rows=rows, seed=seed_value, last_month=last)
        path = out_dir / f"rar-synthetic-{last:%Y-%m}-s{seed_value}-{rows}.{file_format}"
        count = write_batch(path, synthetic_rows(spec), file_format)
    click.echo(f"wrote {count} rows to {path}")


@cli.command()
@pass_settings
@click.pass_context
def demo(ctx: click.Context, lazy: _LazySettings) -> None:
    """Load the three demo rooftops through the ingest job and print the ledger."""
    settings = lazy.get()
    staging = settings.home / "demo"
    path = staging / f"rar-demo-{DEMO_MONTH:%Y-%m}.csv"
    write_batch(path, demo_rows())
    click.echo(f"demo batch: {path}")
    for report in _ingest_now(settings, [deliver(settings.landing_dir, path)]):
        _print_report(report)
    click.echo("")
    ctx.invoke(status, as_json=False, limit=10)
    click.echo(f"\nThe run is in the Dagster UI: `make dev`, then http://127.0.0.1:3000/runs (DAGSTER_HOME={settings.dagster_home})")


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
