"""Ingestion benchmark: `ingest_landing` against a bare COPY and against a typical pandas load.

    .venv/bin/python benchmarks/ingest.py            # the full run (a few minutes)
    .venv/bin/python benchmarks/ingest.py --quick    # skips the 5M-row memory run

One run generates a synthetic 1M-row CSV batch and measures, each on a database of its own:

  PostgreSQL (server from RAR_BENCH_POSTGRES_URL; the benchmark creates and drops its databases)
    (a) the physical limit: a bare `COPY ... FROM STDIN (FORMAT csv, HEADER)` of the file into a
        plain, index-free table with the file's columns;
    (b) `ingest.ingest_landing` loading the file from a landing folder into a fresh warehouse
        (hashing, validation, ledger, rejects, archiving: everything a real load does);
    (c) what a typical pipeline does: pandas `read_csv` + `DataFrame.to_sql(method="multi")`,
        timed on a prefix of the file because it is two orders of magnitude slower.
  SQLite
    (b) on a SQLite file warehouse.
  Peak memory
    (b) on the 1M-row file and on a 5M-row file, each in a fresh subprocess, so one peak RSS
    (VmHWM) belongs to exactly one load.

(a) and (b) run `--repeat` times (default 3), interleaved, and the best attempt counts: other work
on the machine only ever slows a run down, so the fastest attempt is closest to the code's own speed.

Targets (issue 2, "Performance"): (b) >= 0.5x the rows/s of (a) and >= 5x those of (c); a 5M-row
load under 500 MB peak RSS, and not much above the 1M-row load. This is a report, not a test: a
missed target prints MISS and the exit status stays 0. A broken load (rows not all accepted) is an
error and exits non-zero.

Linux only (peak memory is read from /proc/self/status).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Iterator

# Imported up front although only (c) uses it: pyarrow imports pandas on its first compute call, and
# that one-off ~0.3 s would otherwise be billed to whichever load happens to run first.
import pandas as pd
import psycopg2
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url

from rar_pipeline.config import load_settings
from rar_pipeline.contract import FIELDS
from rar_pipeline.ingest import FileReport, LoadOptions, ingest_landing
from rar_pipeline.months import current_month
from rar_pipeline.seed import SeedSpec, synthetic_rows, write_batch
from rar_pipeline.warehouse.bulk import COPY_READ_BYTES
from rar_pipeline.warehouse.engine import describe_url, open_warehouse
from rar_pipeline.warehouse.schema import rar_raw_events

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET_VS_COPY = 0.5  # (b)/(a)
TARGET_VS_PANDAS = 5.0  # (b)/(c)
MEMORY_LIMIT_MB = 500  # peak RSS of the 5M-row load
# "Not much above the 1M figure": the 5M-row peak may exceed the 1M-row peak by at most this factor.
MEMORY_GROWTH_LIMIT = 1.25
# The child gets the warehouse URL through the environment, not argv, so a password never shows in `ps`.
CHILD_URL_ENV = "RAR_BENCH_CHILD_URL"
# A 1-minute load average above this before the run means the numbers are measured on a busy machine.
BUSY_LOAD = 0.5
SQL_TYPES = {"integer": "bigint", "number": "double precision"}  # every other field kind is text


def say(message: str = "") -> None:
    print(message, flush=True)


# Data ------------------------------------------------------------------------------------------


def month_window() -> tuple[date, date]:
    """The months the loader accepts: RAR_START_MONTH (default 2024-01) through the current month."""
    return load_settings().start_month, current_month()


def load_options() -> LoadOptions:
    """The options the Dagster asset would use (see `defs/resources.py`), read from the same settings."""
    settings = load_settings()
    first, last = month_window()
    return LoadOptions(first, last, settings.max_file_bytes, settings.reject_budget)


def generate_batch(path: Path, rows: int, dealers: int, seed: int) -> float:
    """Write a synthetic CSV batch whose months all fall in the accepted window; returns seconds."""
    first, last = month_window()
    months = (last.year - first.year) * 12 + last.month - first.month + 1
    if months < 1:
        raise SystemExit(f"RAR_START_MONTH {first:%Y-%m} is after the current month; nothing would be accepted.")
    # synthetic_rows keeps natural keys unique for any row count (it suffixes the intent once the
    # dealer x month x channel x intent combinations run out), so every row must be accepted.
    spec = SeedSpec(dealers=dealers, months=months, rows=rows, seed=seed, last_month=last)
    started = time.perf_counter()
    written = write_batch(path, synthetic_rows(spec))
    if written != rows:
        raise RuntimeError(f"write_batch wrote {written:,} rows, expected {rows:,}")
    return time.perf_counter() - started


def stage(csv_path: Path, landing_dir: Path) -> None:
    """Put the batch into a landing folder of its own.

    The loader moves a loaded file to `.processed/`, so each load gets its own directory entry. A
    hard link costs nothing and keeps the bytes (hence the SHA-256) identical; copy if linking fails.
    """
    landing_dir.mkdir(parents=True)
    target = landing_dir / csv_path.name
    try:
        os.link(csv_path, target)
    except OSError:
        shutil.copy2(csv_path, target)


def check_loaded(reports: list[FileReport], rows: int) -> FileReport:
    """The one file was loaded and every row accepted; anything else means the numbers are meaningless."""
    if len(reports) != 1:
        raise RuntimeError(f"expected the landing folder to yield 1 file, got {len(reports)}: {reports}")
    report = reports[0]
    if report.status != "loaded" or report.rows_accepted != rows or report.rows_rejected:
        raise RuntimeError(
            f"ingest_landing did not accept all {rows:,} rows: status={report.status}, "
            f"accepted={report.rows_accepted:,}, rejected={report.rows_rejected:,} "
            f"{report.rejected_by_reason or ''} {report.detail or ''}"
        )
    return report


@contextmanager
def warehouse(url: str) -> Iterator[Engine]:
    """An engine on an up-to-date warehouse schema (created here, outside any timing)."""
    engine = open_warehouse(url)
    try:
        yield engine
    finally:
        engine.dispose()


def timed_ingest(engine: Engine, landing_dir: Path, rows: int) -> float:
    """(b): load the one staged file, check every row landed; returns seconds."""
    started = time.perf_counter()
    reports = ingest_landing(engine, landing_dir, load_options(), settle_seconds=0, max_files=1)
    seconds = time.perf_counter() - started
    report = check_loaded(reports, rows)
    with engine.connect() as connection:
        stored = connection.execute(
            text(f"SELECT count(*) FROM {rar_raw_events.name} WHERE batch_id = :batch"), {"batch": report.batch_id}
        ).scalar_one()
    if stored != rows:
        raise RuntimeError(f"the ledger says {rows:,} rows were loaded, but rar_raw_events holds {stored:,}")
    return seconds


# PostgreSQL ------------------------------------------------------------------------------------


def libpq_dsn(url: URL) -> str:
    """A SQLAlchemy URL as a libpq connection URI (psycopg2 does not know `+driver` names)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def pg_connect(url: URL):
    """A psycopg2 connection; an unreachable server ends the run with one line, not a traceback."""
    try:
        return psycopg2.connect(libpq_dsn(url), connect_timeout=10)
    except psycopg2.OperationalError as error:
        reason = str(error).strip().splitlines()[0]
        raise SystemExit(f"cannot reach PostgreSQL at {describe_url(str(url))}: {reason}; set RAR_BENCH_POSTGRES_URL")


@contextmanager
def scratch_database(server: URL, purpose: str) -> Iterator[URL]:
    """A new, empty database on `server`, dropped on the way out whatever happened."""
    name = f"rar_bench_{purpose}_{uuid.uuid4().hex[:8]}"
    admin = pg_connect(server)
    admin.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield server.set(database=name)
    finally:
        # FORCE: a pooled or orphaned connection (e.g. from a killed child) must not block the drop.
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def checkpoint(url: URL) -> None:
    """Flush the previous phase's dirty pages first, so its checkpoint is not billed to the next phase."""
    connection = pg_connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("CHECKPOINT")
    except psycopg2.Error as error:  # needs superuser or pg_checkpoint; the numbers are just noisier without
        say(f"  (CHECKPOINT not allowed, measuring without it: {str(error).strip().splitlines()[0]})")
    finally:
        connection.close()


def server_version(url: URL) -> str:
    connection = pg_connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            return cursor.fetchone()[0]
    finally:
        connection.close()


def timed_bare_copy(url: URL, csv_path: Path, rows: int) -> float:
    """(a): COPY the file as it is into a plain table with its columns and no index; returns seconds."""
    columns = ", ".join(f"{spec.name} {SQL_TYPES.get(spec.kind, 'text')}" for spec in FIELDS)
    connection = pg_connect(url)
    try:
        with connection.cursor() as cursor:
            # Created and committed before the clock starts: with wal_level=minimal, a COPY into a
            # table created in the same transaction skips the WAL, which no real load could do.
            cursor.execute(f"CREATE TABLE plain_events ({columns})")
            connection.commit()
            started = time.perf_counter()
            with open(csv_path, "rb") as stream:
                # Same read size as the loader's COPY, so both feed the server the same way.
                cursor.copy_expert("COPY plain_events FROM STDIN WITH (FORMAT csv, HEADER)", stream, size=COPY_READ_BYTES)
            connection.commit()
            seconds = time.perf_counter() - started
            cursor.execute("SELECT count(*) FROM plain_events")
            stored = cursor.fetchone()[0]
            # Dropped at once: autovacuum would otherwise pick up a million fresh rows while (b) runs.
            cursor.execute("DROP TABLE plain_events")
            connection.commit()
    finally:
        connection.close()
    if stored != rows:
        raise RuntimeError(f"bare COPY stored {stored:,} rows, expected {rows:,}")
    return seconds


def timed_pandas(url: URL, csv_path: Path, rows: int, chunksize: int) -> float:
    """(c): read the first `rows` rows with pandas and `to_sql` them the usual way; returns seconds."""
    engine = create_engine(url)
    try:
        started = time.perf_counter()
        frame = pd.read_csv(csv_path, nrows=rows)
        frame.to_sql("pandas_events", engine, index=False, method="multi", chunksize=chunksize)
        seconds = time.perf_counter() - started
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT count(*) FROM pandas_events")).scalar_one()
    finally:
        engine.dispose()
    if stored != rows:
        raise RuntimeError(f"to_sql stored {stored:,} rows, expected {rows:,}")
    return seconds


# Peak memory -----------------------------------------------------------------------------------


def proc_status_mb(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS: now, VmHWM: peak), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # the kernel reports kB
    raise RuntimeError(f"/proc/self/status has no {field} line")


def child_main(landing_dir: Path, rows: int) -> None:
    """Inside the fresh subprocess: one load, then one JSON line with its time and memory."""
    with warehouse(os.environ[CHILD_URL_ENV]) as engine:
        # After the imports and the schema upgrade: the part of the peak that is not the load.
        baseline = proc_status_mb("VmRSS")
        seconds = timed_ingest(engine, landing_dir, rows)
    print(json.dumps({"seconds": seconds, "baseline_mb": baseline, "peak_mb": proc_status_mb("VmHWM")}))


@dataclass
class MemoryRun:
    backend: str
    rows: int
    seconds: float
    baseline_mb: float
    peak_mb: float


def measure_in_child(backend: str, url: str, csv_path: Path, rows: int, workdir: Path) -> MemoryRun:
    landing = workdir / f"landing-memory-{backend}-{rows}"
    stage(csv_path, landing)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(landing), str(rows)]
    done = subprocess.run(command, env={**os.environ, CHILD_URL_ENV: url}, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the memory child for {rows:,} rows on {backend} failed (exit {done.returncode})")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return MemoryRun(backend, rows, result["seconds"], result["baseline_mb"], result["peak_mb"])


# Report ----------------------------------------------------------------------------------------


@dataclass
class Line:
    label: str
    value: str
    target: str = ""
    passed: bool | None = None  # None: a measurement without a target

    @property
    def verdict(self) -> str:
        return {None: "", True: "PASS", False: "MISS  <<<<<<"}[self.passed]


def print_summary(title: str, lines: list[Line]) -> None:
    width = max(len(line.label) for line in lines)
    value_width = max(len(line.value) for line in lines)
    target_width = max(len(line.target) for line in lines)
    say()
    say(f"== {title} ==")
    say(f"{'measurement':<{width}}  {'result':>{value_width}}  {'target':<{target_width}}  verdict")
    say("-" * (width + value_width + target_width + 16))
    for line in lines:
        say(f"{line.label:<{width}}  {line.value:>{value_width}}  {line.target:<{target_width}}  {line.verdict}".rstrip())
    missed = [line.label for line in lines if line.passed is False]
    say()
    say(f"MISSED {len(missed)} target(s): {'; '.join(missed)}" if missed else "All targets met.")


def rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f} rows/s"


# Main ------------------------------------------------------------------------------------------


def measure_postgres(args: argparse.Namespace, server: URL, batch: Path, workdir: Path) -> list[Line]:
    """(a) and (b) `--repeat` times, interleaved, best of each; then (c) once. Every phase starts after a CHECKPOINT."""
    rows, prefix = args.rows, args.pandas_rows
    copy_times, ingest_times = [], []
    with scratch_database(server, "main") as database:
        say(f"PostgreSQL database {database.database} for (a) and (c); one more per (b) attempt (all dropped at the end)")
        for attempt in range(1, args.repeat + 1):
            # Interleaved, so a burst of outside load hurts (a) and (b) alike rather than one of them.
            checkpoint(database)
            copy_times.append(timed_bare_copy(database, batch, rows))
            with scratch_database(server, "ingest") as ingest_database:
                landing = workdir / f"landing-postgresql-{attempt}"
                stage(batch, landing)
                with warehouse(ingest_database.render_as_string(hide_password=False)) as engine:
                    checkpoint(ingest_database)
                    ingest_times.append(timed_ingest(engine, landing, rows))
            say(
                f"attempt {attempt}/{args.repeat}: (a) bare COPY {copy_times[-1]:.2f} s = {rate(rows, copy_times[-1])}; "
                f"(b) ingest_landing {ingest_times[-1]:.2f} s = {rate(rows, ingest_times[-1])}"
            )

        checkpoint(database)
        pandas_seconds = timed_pandas(database, batch, prefix, args.pandas_chunksize)
        say(
            f"(c) pandas read_csv + to_sql(method='multi', chunksize={args.pandas_chunksize}), timed on the first "
            f"{prefix:,} rows only (too slow for all {rows:,}): {pandas_seconds:.2f} s = {rate(prefix, pandas_seconds)}"
        )

    copy_seconds, ingest_seconds = min(copy_times), min(ingest_times)
    vs_copy = copy_seconds / ingest_seconds  # = rows/s of (b) over rows/s of (a): same row count
    vs_pandas = (rows / ingest_seconds) / (prefix / pandas_seconds)
    best = f"best of {args.repeat}, " if args.repeat > 1 else ""
    return [
        Line(f"PostgreSQL (a) bare COPY, plain table ({best}{rows:,} rows)", rate(rows, copy_seconds)),
        Line(f"PostgreSQL (b) ingest_landing ({best}{rows:,} rows)", rate(rows, ingest_seconds)),
        Line(f"PostgreSQL (c) pandas to_sql(multi) (first {prefix:,} rows)", rate(prefix, pandas_seconds)),
        Line("(b)/(a) ingest vs bare COPY", f"{vs_copy:.2f}x", f">= {TARGET_VS_COPY:g}x", vs_copy >= TARGET_VS_COPY),
        Line("(b)/(c) ingest vs pandas", f"{vs_pandas:.1f}x", f">= {TARGET_VS_PANDAS:g}x", vs_pandas >= TARGET_VS_PANDAS),
    ]


def measure_sqlite(args: argparse.Namespace, batch: Path, workdir: Path) -> list[Line]:
    """(b) on a new SQLite file per attempt, best of `--repeat`."""
    times = []
    for attempt in range(1, args.repeat + 1):
        landing = workdir / f"landing-sqlite-{attempt}"
        stage(batch, landing)
        with warehouse(f"sqlite:///{workdir / f'sqlite-{attempt}' / 'rar.db'}") as engine:
            times.append(timed_ingest(engine, landing, args.rows))
        say(f"attempt {attempt}/{args.repeat}: SQLite (b) ingest_landing {times[-1]:.2f} s = {rate(args.rows, times[-1])}")
    best = f"best of {args.repeat}, " if args.repeat > 1 else ""
    return [Line(f"SQLite (b) ingest_landing ({best}{args.rows:,} rows)", rate(args.rows, min(times)))]


def measure_memory(backend: str, server: URL, files: list[tuple[Path, int]], workdir: Path) -> list[Line]:
    """Peak RSS of a load of each file in a fresh process; the first file is the reference for growth."""
    runs = []
    for csv_path, rows in files:
        if backend == "postgresql":
            with scratch_database(server, "memory") as database:
                checkpoint(database)
                url = database.render_as_string(hide_password=False)
                runs.append(measure_in_child(backend, url, csv_path, rows, workdir))
        else:
            url = f"sqlite:///{workdir / f'sqlite-memory-{rows}' / 'rar.db'}"
            runs.append(measure_in_child(backend, url, csv_path, rows, workdir))
        say(
            f"memory, {backend}, {rows:,} rows (fresh process): peak RSS {runs[-1].peak_mb:,.0f} MB "
            f"(baseline after imports {runs[-1].baseline_mb:,.0f} MB), {rate(rows, runs[-1].seconds)}"
        )

    small, *bigger = runs
    lines = [Line(f"peak RSS, {small.rows:,} rows, {backend}", f"{small.peak_mb:,.0f} MB")]
    for big in bigger:
        growth = big.peak_mb / small.peak_mb
        lines += [
            Line(
                f"peak RSS, {big.rows:,} rows, {backend}",
                f"{big.peak_mb:,.0f} MB",
                f"< {MEMORY_LIMIT_MB} MB",
                big.peak_mb < MEMORY_LIMIT_MB,
            ),
            Line(
                f"peak RSS {big.rows:,} vs {small.rows:,} rows, {backend}",
                f"{growth:.2f}x",
                f"<= {MEMORY_GROWTH_LIMIT:g}x",
                growth <= MEMORY_GROWTH_LIMIT,
            ),
        ]
    return lines


def generate(rows: int, args: argparse.Namespace, workdir: Path) -> Path:
    first, last = month_window()
    path = workdir / f"batch-{rows}.csv"
    say(f"Generating {rows:,} rows ({args.dealers:,} dealers, months {first:%Y-%m}..{last:%Y-%m}) ...")
    seconds = generate_batch(path, rows, args.dealers, args.seed)
    say(f"  {path.stat().st_size / 1e6:,.0f} MB in {seconds:.1f} s")
    return path


def run(args: argparse.Namespace, workdir: Path) -> list[Line]:
    server = make_url(args.postgres_url)
    load = os.getloadavg()[0]
    say(
        f"PostgreSQL {server_version(server)} at {describe_url(str(server))}; Python {sys.version.split()[0]}; "
        f"{os.cpu_count()} CPUs, load average {load:.2f}"
    )
    if load > BUSY_LOAD:
        say("WARNING: the machine is busy; other processes compete for the CPUs and every rate below suffers")
    batch = generate(args.rows, args, workdir)
    lines = measure_postgres(args, server, batch, workdir) + measure_sqlite(args, batch, workdir)

    # The big file is written only now: flushing half a gigabyte of fresh pages to disk would
    # otherwise compete with the throughput runs above.
    files = [(batch, args.rows)]
    if args.quick:
        say(f"--quick: no {args.big_rows:,}-row file, so peak memory is measured on {args.rows:,} rows only")
    else:
        files.append((generate(args.big_rows, args, workdir), args.big_rows))
    for backend in ["postgresql", "sqlite"] if args.memory_backend == "both" else [args.memory_backend]:
        lines += measure_memory(backend, server, files, workdir)
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip the --big-rows file (5M rows by default) and with it the memory-growth check")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the main batch (default: %(default)s)")
    parser.add_argument("--big-rows", type=int, default=5_000_000, help="rows in the memory-run batch (default: %(default)s)")
    parser.add_argument("--dealers", type=int, default=2_000, help="distinct dealers (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default: %(default)s)")
    parser.add_argument(
        "--pandas-rows", type=int, default=100_000, help="prefix of the batch that (c) loads (default: %(default)s)"
    )
    parser.add_argument(
        "--pandas-chunksize", type=int, default=1_000,
        help="to_sql chunksize for (c); 500-2000 measured fastest here (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--memory-backend", choices=["postgresql", "sqlite", "both"], default="both",
        help="warehouse for the peak-memory runs (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--postgres-url", default=os.environ.get("RAR_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="server where the benchmark may create and drop databases (default: $RAR_BENCH_POSTGRES_URL or "
        f"{DEFAULT_POSTGRES_URL})",
    )  # fmt: skip
    parser.add_argument(
        "--repeat", type=int, default=3,
        help="attempts of (a) and of (b); the best counts, as outside load only ever slows a run (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--workdir", type=Path, help="parent folder for the temporary files (default: the system temp dir)")
    # Internal: the peak-memory subprocess, `--child LANDING_DIR ROWS` (URL in $RAR_BENCH_CHILD_URL).
    parser.add_argument("--child", nargs=2, metavar=("LANDING_DIR", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.pandas_rows > args.rows:
        parser.error("--pandas-rows cannot exceed --rows")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(Path(args.child[0]), int(args.child[1]))
        return 0
    # Turn SIGTERM into SystemExit so the `finally` blocks still drop the databases and temp files.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rar-bench-", dir=args.workdir) as workdir:
        lines = run(args, Path(workdir))
    first, last = month_window()
    print_summary(
        f"Summary: {args.rows:,}-row batch, {args.dealers:,} dealers, months {first:%Y-%m}..{last:%Y-%m}, "
        f"total {time.perf_counter() - started:.0f} s",
        lines,
    )
    return 0  # a report: missed targets are printed, not failed


if __name__ == "__main__":
    sys.exit(main())
