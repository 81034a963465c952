"""Monthly-lineage benchmark: one month of 1M events across 2,000 dealers, on PostgreSQL.

    .venv/bin/python benchmarks/monthly.py                  # the full run (a few minutes)
    .venv/bin/python benchmarks/monthly.py --rows 100000    # a quick look
    .venv/bin/python benchmarks/monthly.py --profile        # also cProfile the plain domain calls

One run, on a PostgreSQL database of its own (created on the server from RAR_BENCH_POSTGRES_URL and
dropped at the end, even on error, unless --keep-db):

  load  Generate one month of synthetic events (`seed.synthetic_rows`, natural keys checked unique)
        plus a dealer-score file for the same dealers, and load both with `ingest.ingest_landing`.
        Timed and reported on its own line; it is not part of the comparison.
  (a)   A hand-written baseline doing the same work in the fewest statements, in one transaction:
        CREATE TABLE AS the month's deduplicated events (latest batch per natural key with
        DISTINCT ON, the per-event RaR chain computed in SQL), then INSERT ... SELECT ... GROUP BY
        dealer with rounded sums, and, for parity with `rar/intent_monthly`, GROUP BY dealer x intent.
  (b)   `dagster.materialize` of the month's assets: rar/events, rar/monthly + rar/intent_monthly,
        rar/pressure and rar/score_adjustments, with their asset checks (`dealer_scores` is in the
        asset list so the graph resolves, but outside the selection: it is not monthly).
  (b')  The same domain calls without Dagster (`rar_pipeline.monthly`, `monthly_checks` and
        `alerts.write_alert_candidates`, one transaction per asset, month lock first), step by
        step, to show Dagster's overhead. It mirrors the asset bodies of `defs/monthly.py`: keep
        `run_domain_calls` in step with them when they change.

Target (issue 3, "Performance (benchmark)"): (b) within 2x the time of (a). This is a report, not
a test: a missed target prints MISS and the exit status stays 0. A broken run (rows not all loaded,
a failed materialization or check, results that disagree with the baseline) exits non-zero.

Fairness: before the measurements the raw table is VACUUM ANALYZEd (hint bits and statistics would
otherwise be billed to whichever run reads it first); before each measurement the lineage tables
are emptied and a CHECKPOINT flushes the previous phase's dirty pages. So (a), (b) and (b') each
build the month from scratch. With --repeat N the three run N times, interleaved, and the best
time of each is reported.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import signal
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Iterator

import dagster as dg
import psycopg2
from sqlalchemy import Engine
from sqlalchemy.engine import URL, make_url

from rar_pipeline import monthly, monthly_checks
from rar_pipeline.config import load_settings
from rar_pipeline.contract import NATURAL_KEY
from rar_pipeline.defs.monthly import (
    EVENTS_KEY,
    INTENT_MONTHLY_KEY,
    MONTHLY_KEY,
    PRESSURE_KEY,
    SCORE_ADJUSTMENTS_KEY,
    dealer_scores,
    events,
    monthly_aggregates,
    pressure,
    score_adjustments,
)
from rar_pipeline.alerts import write_alert_candidates
from rar_pipeline.defs.resources import RarRulesResource, WarehouseResource, build_resources
from rar_pipeline.ingest import FileReport, LoadOptions, ingest_landing
from rar_pipeline.months import current_month, parse_month
from rar_pipeline.seed import SCORE_HEADER, SeedSpec, synthetic_rows, write_batch
from rar_pipeline.warehouse.engine import describe_url, open_warehouse, write_connection

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_MONTH = "2025-11"
TARGET_RATIO = 2.0  # (b) / (a), in seconds
# Emptied before each measurement, so every run builds the month from scratch.
LINEAGE_TABLES = (
    "rar_events", "rar_monthly", "rar_intent_monthly", "rar_pressure", "secondary_metrics", "rar_alert_outbox",
    "rar_score_adjustments",
)  # fmt: skip
BASELINE_TABLES = ("bench_events", "bench_monthly", "bench_intent_monthly")
# Dagster step key -> the (b') block doing the same work.
STEP_BLOCKS = {
    "rar__events": "rar/events",
    "monthly_aggregates": "rar/monthly + rar/intent_monthly",
    "rar__pressure": "rar/pressure",
    "rar__score_adjustments": "rar/score_adjustments",
}
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def say(message: str = "") -> None:
    print(message, flush=True)


# Data ------------------------------------------------------------------------------------------


def unique_keys(rows: Iterator[list], seen: set[str]) -> Iterator[list]:
    """Pass rows through, failing on a repeated natural key (dealer, month, channel, intent)."""
    for row in rows:
        key = f"{row[0]}\x1f{row[1]}\x1f{row[2]}\x1f{row[11]}"
        if key in seen:
            raise RuntimeError(f"synthetic_rows repeated the natural key {key.split(chr(31))}")
        seen.add(key)
        yield row


def generate_events(path: Path, rows: int, dealers: int, month: date, seed: int) -> float:
    spec = SeedSpec(dealers=dealers, months=1, rows=rows, seed=seed, last_month=month)
    started = time.perf_counter()
    seen: set[str] = set()
    written = write_batch(path, unique_keys(synthetic_rows(spec), seen))
    if written != rows or len(seen) != rows:
        raise RuntimeError(f"wrote {written:,} rows with {len(seen):,} distinct keys, expected {rows:,}")
    return time.perf_counter() - started


def generate_scores(path: Path, dealers: int, month: date, seed: int) -> None:
    """Base AIV/ATI/QAI for every dealer of the month, so rar/score_adjustments has work to do."""
    rng = random.Random(seed + 1)
    rows = (
        [f"dealer-{index:05d}", month.strftime("%Y-%m"), rng.randint(40, 95), rng.randint(40, 95), rng.randint(40, 95),
         round(rng.uniform(0.2, 0.8), 2), round(rng.uniform(0.2, 0.8), 2)]
        for index in range(dealers)
    )  # fmt: skip
    write_batch(path, rows, header=SCORE_HEADER)


def load_one(engine: Engine, landing: Path, options: LoadOptions, rows: int) -> tuple[FileReport, float]:
    """Load the one file of `landing`; every row must be accepted."""
    started = time.perf_counter()
    reports = ingest_landing(engine, landing, options, settle_seconds=0, max_files=1)
    seconds = time.perf_counter() - started
    if len(reports) != 1 or reports[0].status != "loaded" or reports[0].rows_accepted != rows or reports[0].rows_rejected:
        raise RuntimeError(f"ingest_landing did not accept all {rows:,} rows of {landing}: {reports}")
    return reports[0], seconds


# PostgreSQL ------------------------------------------------------------------------------------


def libpq_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def scratch_database(server: URL, keep: bool) -> Iterator[URL]:
    """A new, empty database on `server`, dropped on the way out whatever happened (unless `keep`)."""
    name = f"rar_bench_monthly_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg2.connect(libpq_dsn(server), connect_timeout=10)
    except psycopg2.OperationalError as error:
        reason = str(error).strip().splitlines()[0]
        raise SystemExit(f"cannot reach PostgreSQL at {describe_url(str(server))}: {reason}; set RAR_BENCH_POSTGRES_URL")
    admin.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield server.set(database=name)
    finally:
        if keep:
            say(f"--keep-db: database {name} kept ({describe_url(str(server.set(database=name)))})")
        else:
            # FORCE: a pooled connection left behind by an error must not block the drop.
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            say(f"database {name} dropped")
        admin.close()


@contextmanager
def plain_connection(url: URL, autocommit: bool = False) -> Iterator[psycopg2.extensions.connection]:
    connection = psycopg2.connect(libpq_dsn(url))
    connection.autocommit = autocommit
    try:
        yield connection
    finally:
        connection.close()


def execute(url: URL, *statements: str) -> None:
    with plain_connection(url, autocommit=True) as connection, connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def scalar(url: URL, statement: str, params: dict | None = None):
    with plain_connection(url) as connection, connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchone()[0]


def reset(url: URL) -> None:
    """Untimed: the next measurement starts from the same state, with no background work pending.

    Empties the lineage tables, vacuums and analyzes what the previous phase wrote (else autovacuum
    would do it during the next measurement, on a shared CPU) and flushes dirty pages (CHECKPOINT).
    """
    existing = scalar(url, "SELECT array_agg(relname::text) FROM pg_class WHERE relkind = 'r' AND relname = ANY(%(names)s)",
                      {"names": list(LINEAGE_TABLES + BASELINE_TABLES)})  # fmt: skip
    lineage = [name for name in LINEAGE_TABLES if name in existing]
    execute(url, f"TRUNCATE {', '.join(lineage)}", f"VACUUM ANALYZE {', '.join(existing)}", "CHECKPOINT")


# (a) the hand-written baseline -------------------------------------------------------------------


def baseline_statements(month: date) -> list[tuple[str, str]]:
    """The fewest statements that do the month's work: dedupe into a table, group by dealer (and intent)."""
    # The RaR chain, left to right exactly as rar_math.event_values: ((impressions × share) × ctr) × drop ...
    ai_sessions = "impressions * share_ai_snippet * ctr_baseline"
    lost_sessions = f"{ai_sessions} * ctr_drop_when_ai"
    lost_leads = f"{lost_sessions} * lead_cr"
    lost_sales = f"{lost_leads} * close_rate"
    rar = f"{lost_sales} * avg_gross"
    recoverable = f"{rar} * recoverable_share"
    key = ", ".join(NATURAL_KEY)
    day = month.isoformat()
    dedupe = f"""
        CREATE TABLE bench_events AS
        SELECT DISTINCT ON ({key})
            dealer_id, month, channel, intent_cluster, impressions, share_ai_snippet, ctr_baseline,
            ctr_drop_when_ai, lead_cr, close_rate, avg_gross, recoverable_share,
            {ai_sessions} AS ai_sessions, {lost_sessions} AS lost_sessions, {lost_leads} AS lost_leads,
            {lost_sales} AS lost_sales, {rar} AS rar, {recoverable} AS recoverable, batch_id, line_no
        FROM rar_raw_events
        WHERE month = DATE '{day}'
          AND batch_id IN (SELECT batch_id FROM rar_batch_months WHERE month = DATE '{day}' AND kind = 'events')
        ORDER BY {key}, batch_id DESC, line_no DESC"""
    per_dealer = """
        INSERT INTO bench_monthly
        SELECT dealer_id, month, ROUND(SUM(lost_sessions)::numeric), ROUND(SUM(lost_leads)::numeric),
               ROUND(SUM(lost_sales)::numeric, 2), ROUND(SUM(rar)::numeric, 2), ROUND(SUM(recoverable)::numeric, 2),
               SUM(impressions), COUNT(*)
        FROM bench_events GROUP BY dealer_id, month"""
    per_intent = """
        INSERT INTO bench_intent_monthly
        SELECT dealer_id, month, intent_cluster, ROUND(SUM(rar)::numeric, 2), ROUND(SUM(recoverable)::numeric, 2),
               ROUND(SUM(lost_sessions)::numeric), COUNT(*)
        FROM bench_events WHERE intent_cluster <> '' GROUP BY dealer_id, month, intent_cluster"""
    return [
        ("dedupe + derive: CREATE TABLE AS SELECT DISTINCT ON", dedupe),
        ("create the two result tables", """
            CREATE TABLE bench_monthly (dealer_id varchar(128), month date, lost_sessions bigint, lost_leads bigint,
                lost_sales numeric(14,2), rar numeric(14,2), recoverable numeric(14,2), impressions bigint,
                event_count integer);
            CREATE TABLE bench_intent_monthly (dealer_id varchar(128), month date, intent_cluster text,
                rar numeric(14,2), recoverable numeric(14,2), lost_sessions bigint, event_count integer)"""),
        ("per dealer: INSERT ... SELECT ... GROUP BY dealer", per_dealer),
        ("per dealer x intent: INSERT ... SELECT ... GROUP BY", per_intent),
    ]  # fmt: skip


@dataclass
class Timing:
    seconds: float
    steps: list[tuple[int, str, float]] = field(default_factory=list)  # (level, label, seconds)


def run_baseline(url: URL, month: date) -> Timing:
    execute(url, f"DROP TABLE IF EXISTS {', '.join(BASELINE_TABLES)}", "CHECKPOINT")
    steps = []
    with plain_connection(url) as connection, connection.cursor() as cursor:
        started = time.perf_counter()
        for label, statement in baseline_statements(month):
            step_started = time.perf_counter()
            cursor.execute(statement)
            steps.append((1, label, time.perf_counter() - step_started))
        step_started = time.perf_counter()
        connection.commit()
        steps.append((1, "commit", time.perf_counter() - step_started))
        seconds = time.perf_counter() - started
    return Timing(seconds, steps)


# (b) Dagster ---------------------------------------------------------------------------------------


def run_dagster(url: URL, month: date, rules: RarRulesResource) -> Timing:
    """Materialize the month's assets (and their checks) in process, on an ephemeral instance."""
    instance = dg.DagsterInstance.ephemeral()
    selection = dg.AssetSelection.assets(EVENTS_KEY, MONTHLY_KEY, INTENT_MONTHLY_KEY, PRESSURE_KEY, SCORE_ADJUSTMENTS_KEY)
    wall_started, started = time.time(), time.perf_counter()
    result = dg.materialize(
        [events, monthly_aggregates, pressure, dealer_scores, score_adjustments],
        partition_key=month.isoformat(),
        resources={
            "warehouse": WarehouseResource(database_url=url.render_as_string(hide_password=False)),
            "rules": rules,
        },
        instance=instance,
        selection=selection,
        run_config=QUIET_CONSOLE,
        raise_on_error=False,
    )
    seconds = time.perf_counter() - started
    wall_ended = time.time()
    if not result.success:
        failures = [event.message for event in result.all_events if event.is_failure]
        raise RuntimeError(f"the Dagster run failed: {failures}")
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    checks = result.get_asset_check_evaluations()
    if len(checks) != 6:
        raise RuntimeError(f"expected 6 asset check evaluations, got {len(checks)}")
    expected = {EVENTS_KEY, MONTHLY_KEY, INTENT_MONTHLY_KEY, PRESSURE_KEY, SCORE_ADJUSTMENTS_KEY}
    if materialized != expected:
        raise RuntimeError(f"materialized {sorted(map(str, materialized))}, expected {sorted(map(str, expected))}")
    failed = [
        f"{check.asset_key.to_user_string()}:{check.check_name}"
        for check in checks
        if not check.passed
    ]
    if failed:
        raise RuntimeError(f"asset checks failed: {failed}")
    return Timing(seconds, dagster_steps(instance, result.run_id, wall_started, wall_ended))


def dagster_steps(instance: dg.DagsterInstance, run_id: str, wall_started: float, wall_ended: float) -> list:
    """Per-step wall time from the run's event log, plus what happened before, between and after the steps."""
    begun: dict[str, float] = {}
    steps: list[tuple[int, str, float]] = []
    run_start = run_end = None
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.RUN_START:
            run_start = entry.timestamp
        elif event.event_type == dg.DagsterEventType.RUN_SUCCESS:
            run_end = entry.timestamp
        elif event.event_type == dg.DagsterEventType.STEP_START:
            begun[event.step_key] = entry.timestamp
        elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            steps.append((1, f"step {event.step_key}", entry.timestamp - begun[event.step_key]))
    in_steps = sum(seconds for _, _, seconds in steps)
    if run_start is not None and run_end is not None:
        steps.insert(0, (1, "before RUN_START (job build, run record, resources)", run_start - wall_started))
        steps.append((1, "between steps, inside the run (plan, event log, resource teardown)", run_end - run_start - in_steps))
        steps.append((1, "after RUN_SUCCESS (result)", wall_ended - run_end))
    return steps


# (b') plain domain calls -------------------------------------------------------------------------


class Steps:
    """Nested wall-clock timers; `remainder` books what a block spent outside its timed children."""

    def __init__(self):
        self.rows: list[list] = []  # [level, label, seconds]

    @contextmanager
    def __call__(self, label: str, level: int = 1):
        row = [level, label, 0.0]
        self.rows.append(row)
        started = time.perf_counter()
        try:
            yield row
        finally:
            row[2] = time.perf_counter() - started

    def add(self, label: str, seconds: float, level: int = 2) -> None:
        self.rows.append([level, label, seconds])

    def remainder(self, parent: list, label: str) -> None:
        index = next(i for i, row in enumerate(self.rows) if row is parent)
        children = 0.0
        for level, _, seconds in self.rows[index + 1 :]:
            if level <= parent[0]:
                break
            if level == parent[0] + 1:
                children += seconds
        self.add(label, parent[2] - children, parent[0] + 1)


@contextmanager
def timing_read_arrow(spent: list[float]):
    """Time `read_arrow` (the fetch) inside `monthly.dealer_months`, so fetch and compute show apart.

    Rebinds the name in `rar_pipeline.monthly` for the duration of the block only; no source is changed.
    """
    original = monthly.read_arrow

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - started)

    monthly.read_arrow = timed
    try:
        yield
    finally:
        monthly.read_arrow = original


@dataclass
class DomainResult:
    events: int
    dealers: int
    intent_rows: int
    pressure_rows: int
    score_rows: int
    checks: dict[str, bool]


def run_domain_calls(engine: Engine, month: date, rules: RarRulesResource) -> tuple[Timing, DomainResult]:
    """What the four asset bodies do, without Dagster: one transaction per asset, month lock first."""
    is_complete, now = month < current_month(), datetime.now(timezone.utc)
    steps = Steps()
    checks: dict[str, bool] = {}
    started = time.perf_counter()

    with steps("rar/events") as block:
        with write_connection(engine) as connection, connection.begin():
            monthly.lock_month(connection, month)
            with steps("rebuild_events (dedupe + derive, INSERT ... SELECT, counts)", 2):
                summary = monthly.rebuild_events(connection, month)
            with steps("check latest_batch_per_key", 2):
                checks["latest_batch_per_key"] = monthly_checks.events_latest_per_key(connection, month)[0]
    steps.remainder(block, "connect, lock, commit")

    with steps("rar/monthly + rar/intent_monthly") as block:
        with write_connection(engine) as connection, connection.begin():
            monthly.lock_month(connection, month)
            fetched: list[float] = []
            with timing_read_arrow(fetched), steps("dealer_months", 2) as aggregate:
                rows = monthly.dealer_months(connection, month)
            steps.add("fetch: COPY (SELECT ...) TO STDOUT + Arrow CSV parse", sum(fetched), 3)
            steps.add("compute: per-dealer fsum, intents, rounding (Python)", aggregate[2] - sum(fetched), 3)
            with steps(f"write_monthly ({len(rows):,} rows)", 2):
                monthly.write_monthly(connection, month, rows, is_complete, now)
            with steps("write_intent_monthly", 2) as intent_step:
                intent_rows = monthly.write_intent_monthly(connection, month, rows, is_complete, now)
            intent_step[1] = f"write_intent_monthly ({intent_rows:,} rows)"
            with steps("4 checks (one row per dealer, reconciles, recoverable, top intents)", 2):
                checks["one_row_per_dealer"] = monthly_checks.monthly_one_row_per_dealer(connection, month)[0]
                checks["reconciles_with_events"] = monthly_checks.monthly_reconciles(connection, month)[0]
                checks["recoverable_within_rar"] = monthly_checks.recoverable_within_rar(connection, month)[0]
                checks["top_intents_sorted"] = monthly_checks.top_intents_sorted(connection, month)[0]
    steps.remainder(block, "connect, lock, commit")

    with steps("rar/pressure") as block:
        with write_connection(engine) as connection, connection.begin():
            monthly.lock_month(connection, month)
            with steps("rebuild_pressure (+ secondary_metrics)", 2):
                pressure_rows = monthly.rebuild_pressure(connection, month, rules.pressure_cap, is_complete, now)
            with steps("check pressure_in_range", 2):
                checks["pressure_in_range"] = monthly_checks.pressure_in_range(connection, month)[0]
            with steps("write_alert_candidates", 2) as alert_step:
                alerts = write_alert_candidates(connection, month, rules.alert_threshold, now)
            alert_step[1] = f"write_alert_candidates ({alerts:,} alerts queued)"
    steps.remainder(block, "connect, lock, commit")

    with steps("rar/score_adjustments") as block:
        with write_connection(engine) as connection, connection.begin():
            monthly.lock_month(connection, month)
            with steps("rebuild_score_adjustments", 2):
                score_rows = monthly.rebuild_score_adjustments(connection, month, now)
    steps.remainder(block, "connect, lock, commit")

    seconds = time.perf_counter() - started
    result = DomainResult(summary.events, len(rows), intent_rows, len(pressure_rows), score_rows, checks)
    return Timing(seconds, [tuple(row) for row in steps.rows]), result


# Verification --------------------------------------------------------------------------------------


def verify(url: URL, month: date, rows: int, dealers: int, label: str) -> str:
    """The lineage tables hold the whole month and agree with the baseline's results; returns a one-liner."""
    day = month.isoformat()
    with plain_connection(url) as connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM rar_events WHERE month = DATE '{day}'")
        event_count = cursor.fetchone()[0]
        cursor.execute(
            f"""SELECT count(*), count(m.dealer_id), count(b.dealer_id),
                       count(*) FILTER (WHERE m.rar IS DISTINCT FROM b.rar),
                       count(*) FILTER (WHERE m.recoverable IS DISTINCT FROM b.recoverable
                                           OR m.lost_sessions IS DISTINCT FROM b.lost_sessions
                                           OR m.event_count IS DISTINCT FROM b.event_count),
                       coalesce(max(abs(m.rar - b.rar)), 0), sum(m.rar), sum(b.rar)
                FROM (SELECT * FROM rar_monthly WHERE month = DATE '{day}') m
                FULL JOIN bench_monthly b USING (dealer_id, month)"""
        )
        joined, ours, theirs, rar_differs, other_differs, max_diff, our_total, their_total = cursor.fetchone()
        cursor.execute(f"SELECT count(*) FROM rar_intent_monthly WHERE month = DATE '{day}'")
        our_intents = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM bench_intent_monthly")
        their_intents = cursor.fetchone()[0]
        cursor.execute(f"SELECT count(*) FROM rar_pressure WHERE month = DATE '{day}'")
        pressure_rows = cursor.fetchone()[0]
        cursor.execute(f"SELECT count(*) FROM rar_score_adjustments WHERE month = DATE '{day}'")
        score_rows = cursor.fetchone()[0]
    problems = []
    if event_count != rows:
        problems.append(f"rar_events has {event_count:,} rows, expected {rows:,}")
    if not (joined == ours == theirs == dealers):
        problems.append(f"dealers: {ours:,} in rar_monthly, {theirs:,} in the baseline, {joined:,} joined, expected {dealers:,}")
    if our_intents != their_intents:
        problems.append(f"intent rows: {our_intents:,} in rar_intent_monthly vs {their_intents:,} in the baseline")
    if pressure_rows != dealers or score_rows != dealers:
        problems.append(f"{pressure_rows:,} pressure and {score_rows:,} score-adjustment rows, expected {dealers:,}")
    # SQL's float SUM is not exact and the pipeline's fsum is, so a cent may differ where a total
    # sits on a half cent; anything more is a real disagreement.
    if max_diff > 0.011 or other_differs > dealers * 0.01:
        problems.append(f"rar differs by up to {max_diff} (in {rar_differs} dealers); other columns in {other_differs}")
    if problems:
        raise RuntimeError(f"{label}: results wrong: " + "; ".join(problems))
    return (
        f"{label}: OK: {event_count:,} events, {ours:,} dealers, {our_intents:,} intent rows, {pressure_rows:,} pressure "
        f"and {score_rows:,} score rows; vs the baseline: total RaR {our_total:,} vs {their_total:,}, "
        f"{rar_differs} dealer(s) off by a cent (float SUM vs fsum)"
    )


# Report --------------------------------------------------------------------------------------------


def rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f}"


def print_table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]
    say()
    say(f"== {title} ==")
    line = lambda cells: "  ".join(  # noqa: E731
        cell.ljust(width) if i == 0 or i == len(cells) - 1 else cell.rjust(width) for i, (cell, width) in enumerate(zip(cells, widths))
    ).rstrip()
    say(line(header))
    say("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for row in rows:
        say(line(row))


def print_steps(title: str, timing: Timing, compare: dict[str, float] | None = None) -> None:
    """A step table; `compare` adds a column with the time (b') spent on the same step label."""
    header = ("step", "seconds", "share") + (("(b') same work",) if compare is not None else ())
    rows = []
    for level, label, seconds in timing.steps:
        row = (f"{'  ' * (level - 1)}{label}", f"{seconds:.3f}", f"{seconds / timing.seconds:.0%}")
        if compare is not None:
            row += (f"{compare[label]:.3f}" if label in compare else "",)
        rows.append(row)
    rows.append(("total", f"{timing.seconds:.3f}", "100%") + ((f"{sum(compare.values()):.3f}",) if compare is not None else ()))
    print_table(title, header, rows)


def best(timings: list[Timing]) -> Timing:
    return min(timings, key=lambda timing: timing.seconds)


# Main ------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> None:
    server = make_url(args.postgres_url)
    settings = load_settings()
    month = parse_month(args.month)
    first, last = settings.start_month, current_month()
    if not first <= month <= last:
        raise SystemExit(f"--month {month:%Y-%m} is outside the months the loader accepts, {first:%Y-%m}..{last:%Y-%m}")
    options = LoadOptions(first, last, settings.max_file_bytes, settings.reject_budget)
    rules = build_resources(settings)["rules"]  # the business settings the deployed assets get
    say(f"PostgreSQL at {describe_url(str(server))}; Python {sys.version.split()[0]}; dagster {dg.__version__}; "
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")  # fmt: skip

    events_csv = workdir / "events" / f"rar-bench-{month:%Y-%m}.csv"
    say(f"Generating {args.rows:,} events for {month:%Y-%m} across {args.dealers:,} dealers (keys checked unique) ...")
    seconds = generate_events(events_csv, args.rows, args.dealers, month, args.seed)
    say(f"  {events_csv.stat().st_size / 1e6:,.0f} MB in {seconds:.1f} s")
    scores_csv = workdir / "scores" / f"rar-bench-scores-{month:%Y-%m}.csv"
    generate_scores(scores_csv, args.dealers, month, args.seed)

    with scratch_database(server, args.keep_db) as url:
        say(f"PostgreSQL {scalar(url, 'SHOW server_version')}, database {url.database} "
            f"({'kept' if args.keep_db else 'dropped'} at the end)")  # fmt: skip
        engine = open_warehouse(url.render_as_string(hide_password=False))
        try:
            execute(url, "CHECKPOINT")
            report, load_seconds = load_one(engine, events_csv.parent, options, args.rows)
            say(f"load: ingest_landing, {args.rows:,} rows as batch {report.batch_id} in {load_seconds:.2f} s "
                f"= {rate(args.rows, load_seconds)} rows/s (not part of the comparison)")  # fmt: skip
            _, score_seconds = load_one(engine, scores_csv.parent, options, args.dealers)
            with write_connection(engine) as connection, connection.begin():
                score_count = monthly.rebuild_dealer_scores(connection, datetime.now(timezone.utc))
            say(f"load: dealer-score file, {args.dealers:,} rows in {score_seconds:.2f} s; dealer_scores rebuilt "
                f"({score_count:,} rows; unpartitioned, outside the timed runs)")  # fmt: skip
            started = time.perf_counter()
            execute(url, "VACUUM ANALYZE rar_raw_events", "ANALYZE rar_batch_months", "CHECKPOINT")
            say(f"VACUUM ANALYZE rar_raw_events + CHECKPOINT: {time.perf_counter() - started:.1f} s (untimed)")

            baseline_runs, dagster_runs, domain_runs = [], [], []

            def measure_dagster(prefix: str) -> None:
                reset(url)
                dagster_runs.append(run_dagster(url, month, rules))
                say(f"{prefix}(b) dagster materialize: {dagster_runs[-1].seconds:.2f} s")
                say("    " + verify(url, month, args.rows, args.dealers, "(b)"))

            def measure_domain(prefix: str) -> None:
                reset(url)
                timing, result = run_domain_calls(engine, month, rules)
                domain_runs.append(timing)
                say(f"{prefix}(b') plain domain calls: {timing.seconds:.2f} s")
                if not all(result.checks.values()):
                    raise RuntimeError(f"(b') checks failed: {result.checks}")
                say("    " + verify(url, month, args.rows, args.dealers, "(b')"))

            for round_no in range(1, args.repeat + 1):
                prefix = f"[{round_no}/{args.repeat}] " if args.repeat > 1 else ""
                reset(url)
                baseline_runs.append(run_baseline(url, month))
                say(f"{prefix}(a) baseline SQL: {baseline_runs[-1].seconds:.2f} s")
                # Alternate the order of (b) and (b') between rounds, so neither always runs second.
                for measure in (measure_dagster, measure_domain)[:: 1 if round_no % 2 else -1]:
                    measure(prefix)
            say(f"load average now {os.getloadavg()[0]:.2f} (other work on the machine makes the numbers noisier)")

            if args.profile:
                reset(url)
                profile_domain_calls(engine, month, rules, args.profile_lines)
        finally:
            engine.dispose()

    report_results(args, month, load_seconds, best(baseline_runs), best(dagster_runs), best(domain_runs))


def profile_domain_calls(engine: Engine, month: date, rules: RarRulesResource, lines: int) -> None:
    """One more (b') under cProfile (untimed: the profiler slows Python code several-fold)."""
    profiler = cProfile.Profile()
    profiler.enable()
    timing, _ = run_domain_calls(engine, month, rules)
    profiler.disable()
    say()
    say(f"== cProfile of (b') ({timing.seconds:.2f} s under the profiler), top {lines} by cumulative time ==")
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(lines)
    stats.sort_stats("tottime").print_stats(lines)
    say(out.getvalue())


def report_results(args, month: date, load_seconds: float, baseline: Timing, dagster: Timing, domain: Timing) -> None:
    rows = args.rows
    ratio = dagster.seconds / baseline.seconds
    dealer_only = baseline.seconds - next(s for _, label, s in baseline.steps if label.startswith("per dealer x intent"))
    best_of = f", best of {args.repeat}" if args.repeat > 1 else ""
    blocks = {label: seconds for level, label, seconds in domain.steps if level == 1}
    same_work = {f"step {key}": blocks[block] for key, block in STEP_BLOCKS.items()}
    framework = sum(seconds for _, label, seconds in dagster.steps if not label.startswith("step "))
    print_steps(f"(a) hand-written baseline, one transaction{best_of}", baseline)
    print_steps(f"(b) dagster.materialize, from the run's event log{best_of}", dagster, same_work)
    print_steps(f"(b') plain domain calls, no Dagster{best_of}", domain)
    verdict = "PASS" if ratio <= TARGET_RATIO else "MISS  <<<<<<"
    print_table(
        f"Summary: {rows:,} events, {args.dealers:,} dealers, month {month:%Y-%m}, PostgreSQL{best_of}",
        ("measurement", "seconds", "events/s", "vs (a)", "target", "verdict"),
        [
            ("load: ingest_landing (not compared)", f"{load_seconds:.2f}", rate(rows, load_seconds), "", "", ""),
            ("(a) baseline SQL: dedupe table + GROUP BY dealer, intent", f"{baseline.seconds:.2f}", rate(rows, baseline.seconds), "1.00x", "", ""),
            ("(b) dagster materialize: 4 asset steps + 6 checks", f"{dagster.seconds:.2f}", rate(rows, dagster.seconds),
             f"{ratio:.2f}x", f"<= {TARGET_RATIO:g}x", verdict),
            ("(b') the same domain calls without Dagster", f"{domain.seconds:.2f}", rate(rows, domain.seconds),
             f"{domain.seconds / baseline.seconds:.2f}x", "", ""),
            ("Dagster's own time, outside the asset bodies", f"{framework:.2f}", "", f"{framework / baseline.seconds:.2f}x", "", ""),
            ("(b) - (b'): Dagster's time + run-to-run noise", f"{dagster.seconds - domain.seconds:+.2f}", "",
             f"{(dagster.seconds - domain.seconds) / baseline.seconds:+.2f}x", "", ""),
            ("(a') baseline without the per-intent GROUP BY (info)", f"{dealer_only:.2f}", rate(rows, dealer_only),
             f"(b)/(a') {dagster.seconds / dealer_only:.2f}x", "", ""),
        ],
    )  # fmt: skip
    say()
    say(f"Target (b) within {TARGET_RATIO:g}x of (a): {'PASS' if ratio <= TARGET_RATIO else 'MISS'} ({ratio:.2f}x)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="events in the month (default: %(default)s)")
    parser.add_argument("--dealers", type=int, default=2_000, help="distinct dealers (default: %(default)s)")
    parser.add_argument("--month", default=DEFAULT_MONTH, help="the month, YYYY-MM, within RAR_START_MONTH..now (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="run (a), (b), (b') this many times, interleaved; report the best")
    parser.add_argument("--keep-db", action="store_true", help="keep the benchmark database instead of dropping it")
    parser.add_argument("--profile", action="store_true", help="afterwards, run (b') once more under cProfile and print the top functions")
    parser.add_argument("--profile-lines", type=int, default=25, help="functions listed per cProfile ordering (default: %(default)s)")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("RAR_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help=f"server where the benchmark may create and drop a database (default: $RAR_BENCH_POSTGRES_URL or {DEFAULT_POSTGRES_URL})",
    )  # fmt: skip
    parser.add_argument("--workdir", type=Path, help="parent folder for the temporary files (default: the system temp dir)")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.dealers < 1 or args.repeat < 1:
        parser.error("--rows, --dealers and --repeat must be at least 1")
    if args.dealers > args.rows:
        parser.error("--dealers cannot exceed --rows (every dealer needs an event)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Turn SIGTERM into SystemExit so the `finally` blocks still drop the database and the temp files.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rar-bench-monthly-", dir=args.workdir) as workdir:
        run(args, Path(workdir))
    say(f"Total benchmark time {time.perf_counter() - started:.0f} s")
    return 0  # a report: a missed target is printed, not failed


if __name__ == "__main__":
    sys.exit(main())
