"""Loading landing-zone files into the warehouse, exactly once each.

One file = one transaction: its ledger row, its raw rows and its rejected rows commit together or
not at all. The partial unique index on `rar_batches.sha256` (status `loaded`) makes a second load
of the same bytes impossible even for two loaders racing; the loser records a duplicate delivery.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from rar_pipeline.batch_reader import BLOCK_BYTES, BatchReader, FileRejected, RowChunk, file_format
from rar_pipeline.contract import Contract, Reason
from rar_pipeline.landing import LandingFile, LandingFileChanged, archive, open_landing_file, scan_landing, sha256_of
from rar_pipeline.validation import RAW_COPY_LIMIT, RejectedRow, validate_chunk
from rar_pipeline.warehouse.bulk import insert_arrow
from rar_pipeline.warehouse.engine import INGEST_LOCK, advisory_lock, write_connection
from rar_pipeline.warehouse.schema import metadata, rar_batch_months, rar_batches, rar_rejected_rows

log = logging.getLogger(__name__)

REJECT_COLUMNS = ["batch_id", "line_no", "reason", "detail", "raw"]


@dataclass(frozen=True)
class LoadOptions:
    first_month: date
    last_month: date
    max_file_bytes: int
    reject_budget: float
    block_bytes: int = BLOCK_BYTES


@dataclass
class FileReport:
    """What happened to one landing file (the CLI prints it; the asset turns it into metadata)."""

    file_name: str
    status: str  # loaded | duplicate | rejected | skipped
    sha256: str | None = None
    batch_id: int | None = None
    rows_read: int = 0
    rows_accepted: int = 0
    rows_rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    months: list[str] = field(default_factory=list)
    unknown_columns: list[str] = field(default_factory=list)
    reason: str | None = None
    detail: str | None = None
    archived_as: str | None = None
    kind: str = "events"  # events | dealer_scores

    def as_dict(self) -> dict:
        return asdict(self)


def ingest_landing(
    engine: Engine, landing_dir: Path, options: LoadOptions, settle_seconds: float, max_files: int
) -> list[FileReport]:
    """Load every ready file in the landing zone (oldest first, at most `max_files`)."""
    scan = scan_landing(landing_dir, settle_seconds)
    return [load_file(engine, landing_dir, found, options) for found in scan.ready[:max_files]]


def load_file(engine: Engine, landing_dir: Path, found: LandingFile, options: LoadOptions) -> FileReport:
    try:
        stream = open_landing_file(landing_dir, found)
    except LandingFileChanged as error:
        return FileReport(found.name, "skipped", detail=str(error))
    with stream:
        sha256 = sha256_of(stream)
        kind, gzipped = file_format(found.name)
        now = datetime.now(timezone.utc)
        ledger = {
            "sha256": sha256,
            "file_name": found.name,
            "file_format": kind + (".gz" if gzipped else ""),
            "size_bytes": found.size,
            "loaded_at": now,
        }
        try:
            report = _load_in_transaction(engine, stream, found, ledger, kind, gzipped, options)
        except FileRejected as rejected:
            report = _record_rejected(engine, ledger, rejected)
        except IntegrityError as error:
            # Another loader committed the same bytes while this one was loading; anything else is a bug.
            report = _record_duplicate(engine, ledger, error)
        except _FileChanged as changed:
            return FileReport(found.name, "skipped", sha256=sha256, detail=str(changed))
    if report.status != "skipped" and report.archived_as is None:
        _archive(engine, landing_dir, found, report)
    return report


class _FileChanged(Exception):
    pass


def _load_in_transaction(engine, stream, found, ledger, kind, gzipped, options) -> FileReport:
    with write_connection(engine) as connection, connection.begin():
        # One loader at a time, so batch ids commit in increasing order: the refresh sensor's
        # cursor ("batches after id N") then never skips a batch that committed late.
        advisory_lock(connection, INGEST_LOCK)
        earlier = connection.execute(
            select(rar_batches.c.batch_id, rar_batches.c.file_name, rar_batches.c.archived_as).where(
                rar_batches.c.sha256 == ledger["sha256"], rar_batches.c.status == "loaded"
            )
        ).first()
        if earlier is not None:
            if earlier.file_name == found.name and earlier.archived_as is None:
                # This very file was loaded, but moving it aside failed last time: finish the move only.
                return FileReport(found.name, "loaded", ledger["sha256"], earlier.batch_id, detail="already loaded")
            return _insert_duplicate(connection, ledger, earlier.batch_id)
        if found.size > options.max_file_bytes:
            raise FileRejected(
                "too_large",
                f"the file has {found.size:,} bytes, over the limit of {options.max_file_bytes:,} (RAR_MAX_FILE_BYTES); split it",
            )

        batch_id = connection.execute(
            insert(rar_batches).values(**ledger, status="loaded").returning(rar_batches.c.batch_id)
        ).scalar_one()
        reader = BatchReader(stream, kind, gzipped, options.block_bytes)
        chunks = reader.chunks()
        first = next(chunks, None)  # reading the header decides the contract, hence the table
        contract = reader.contract
        raw_table = metadata.tables[contract.raw_table]
        stats = _LoadStats()
        with tempfile.TemporaryFile("w+", newline="", encoding="utf-8") as rejects_file:
            rejects = csv.writer(rejects_file)
            all_chunks = itertools.chain([first] if first else [], chunks)
            accepted = _accepted_tables(all_chunks, contract, options, batch_id, stats, rejects)
            insert_arrow(connection, raw_table.name, [column.name for column in raw_table.columns], accepted)
            rejects_file.flush()
            rejects_file.seek(0)
            insert_arrow(connection, rar_rejected_rows.name, REJECT_COLUMNS, _read_rejects(rejects_file))
        if stats.may_have_repeated_keys():
            for row in _reject_duplicate_keys(connection, batch_id, contract):
                stats.count_reject(row.reason)

        if stats.rows_read == 0:
            raise FileRejected("header_only", "the file has a header but no rows")
        rejected = sum(stats.by_reason.values())
        if rejected > options.reject_budget * stats.rows_read:
            by_reason = ", ".join(f"{reason} {count}" for reason, count in stats.by_reason.most_common())
            raise FileRejected(
                "too_many_rejects",
                f"{rejected:,} of {stats.rows_read:,} rows were rejected ({by_reason}), over the budget of "
                f"{options.reject_budget:.0%} (RAR_REJECT_BUDGET); fix the file and deliver it again",
            )
        _check_unchanged(found)
        report = FileReport(
            found.name,
            "loaded",
            ledger["sha256"],
            batch_id,
            rows_read=stats.rows_read,
            rows_accepted=stats.rows_read - rejected,
            rows_rejected=rejected,
            rejected_by_reason=dict(sorted(stats.by_reason.items())),
            months=sorted(month.isoformat() for month in stats.months),
            unknown_columns=reader.unknown_columns,
            kind=contract.kind,
        )
        record_outcome(connection, report)
        return report


def record_outcome(connection: Connection, report: FileReport) -> None:
    """Write the counters onto the ledger row; the last statement before the file's commit."""
    connection.execute(
        update(rar_batches)
        .where(rar_batches.c.batch_id == report.batch_id)
        .values(
            rows_read=report.rows_read,
            rows_accepted=report.rows_accepted,
            rows_rejected=report.rows_rejected,
            rejected_by_reason=json.dumps(report.rejected_by_reason),
            unknown_columns=json.dumps(report.unknown_columns),
            months=json.dumps(report.months),
            kind=report.kind,
        )
    )
    if report.months:
        connection.execute(
            insert(rar_batch_months),
            [{"batch_id": report.batch_id, "month": date.fromisoformat(month), "kind": report.kind} for month in report.months],
        )


# Up to this many rows, the in-batch duplicate check runs on fingerprints in memory (8 bytes a row,
# about twice that while they are joined and sorted: 128 MB at most); past it, memory stays flat and
# the check runs in the warehouse instead.
IN_MEMORY_KEY_LIMIT = 8_000_000


class _LoadStats:
    def __init__(self):
        self.rows_read = 0
        self.by_reason: Counter[str] = Counter()
        self.months: set[date] = set()
        self._key_hashes: list[np.ndarray] | None = []
        self._key_count = 0

    def add_key_hashes(self, hashes: np.ndarray) -> None:
        if self._key_hashes is None:
            return
        self._key_count += len(hashes)
        if self._key_count > IN_MEMORY_KEY_LIMIT:
            self._key_hashes = None
        else:
            self._key_hashes.append(hashes)

    def may_have_repeated_keys(self) -> bool:
        """False only when the fingerprints prove every key of the batch is distinct."""
        if self._key_hashes is None:
            return True
        if not self._key_hashes:
            return False
        hashes = np.concatenate(self._key_hashes)
        self._key_hashes = []
        hashes.sort()  # in place: no second copy, unlike np.unique
        return bool((hashes[1:] == hashes[:-1]).any())

    def count_reject(self, reason: Reason) -> None:
        self.by_reason[reason.value] += 1


def _accepted_tables(
    chunks: Iterator[RowChunk], contract: Contract, options: LoadOptions, batch_id: int, stats: _LoadStats, rejects
) -> Iterator[pa.Table]:
    for chunk in chunks:
        stats.rows_read += chunk.rows_read
        validated = (
            validate_chunk(chunk.columns, chunk.line_numbers, options.first_month, options.last_month, contract)
            if chunk.columns
            else None
        )
        for row in chunk.malformed + (validated.rejected if validated else []):
            stats.count_reject(row.reason)
            rejects.writerow([batch_id, row.line_no, row.reason.value, row.detail, row.raw])
        if validated is None or validated.accepted.num_rows == 0:
            continue
        table = validated.accepted
        stats.add_key_hashes(table.column("key_hash").to_numpy())
        stats.months.update(pc.unique(table.column("month")).to_pylist())
        yield table.append_column("batch_id", pa.array(np.full(table.num_rows, batch_id, dtype=np.int32)))


def _read_rejects(rejects_file) -> Iterator[pa.Table]:
    if not rejects_file.read(1):
        return
    rejects_file.seek(0)
    reader = csv.reader(rejects_file)
    while True:
        rows = [row for _, row in zip(range(50_000), reader)]
        if not rows:
            return
        columns = list(zip(*rows))
        yield pa.table(
            {
                "batch_id": pa.array([int(v) for v in columns[0]], pa.int32()),
                "line_no": pa.array([int(v) for v in columns[1]], pa.int64()),
                "reason": pa.array(columns[2], pa.string()),
                "detail": pa.array(columns[3], pa.string()),
                "raw": pa.array(columns[4], pa.string()),
            }
        )


def _reject_duplicate_keys(connection: Connection, batch_id: int, contract: Contract) -> list[RejectedRow]:
    """Quarantine every copy of a natural key that occurs more than once in this file."""
    raw = metadata.tables[contract.raw_table]
    key_names = contract.natural_key
    key = [raw.c[name] for name in key_names]
    repeated = (
        select(*key).where(raw.c.batch_id == batch_id).group_by(*key).having(func.count() > 1).subquery("repeated")
    )
    rows = connection.execute(
        select(raw)
        .join(repeated, and_(*(raw.c[name] == repeated.c[name] for name in key_names)))
        .where(raw.c.batch_id == batch_id)
        .order_by(raw.c.line_no)
    ).all()
    lines_by_key: dict[tuple, list[int]] = defaultdict(list)
    for row in rows:
        lines_by_key[tuple(row._mapping[name] for name in key_names)].append(row.line_no)
    if not rows:
        return []
    rejected = []
    for row in rows:
        values = {spec.name: row._mapping[spec.name] for spec in contract.fields}
        lines = lines_by_key[tuple(values[name] for name in key_names)]
        key_text = ", ".join(
            f"{name} {values[name]:%Y-%m}" if name == "month" else f"{name} {values[name] or '(none)'}" for name in key_names
        )
        detail = (
            f"the key ({key_text}) appears on lines {', '.join(map(str, lines[:10]))}"
            f"{' and more' if len(lines) > 10 else ''}; keep one row per key"
        )
        raw_copy = json.dumps(values, default=str)[:RAW_COPY_LIMIT]
        rejected.append(RejectedRow(row.line_no, Reason.DUPLICATE_KEY_IN_BATCH, detail, raw_copy))
    line_numbers = [row.line_no for row in rejected]
    for start in range(0, len(line_numbers), 1000):
        connection.execute(
            delete(raw).where(raw.c.batch_id == batch_id, raw.c.line_no.in_(line_numbers[start : start + 1000]))
        )
    connection.execute(
        insert(rar_rejected_rows),
        [{"batch_id": batch_id, "line_no": r.line_no, "reason": r.reason.value, "detail": r.detail, "raw": r.raw} for r in rejected],
    )
    return rejected


def _check_unchanged(found: LandingFile) -> None:
    try:
        info = os.stat(found.path, follow_symlinks=False)
    except OSError:
        raise _FileChanged(f"{found.name} disappeared while it was loading; it will be picked up again") from None
    if (info.st_size, info.st_mtime_ns, info.st_ino) != (found.size, found.mtime_ns, found.inode):
        raise _FileChanged(f"{found.name} changed while it was loading; it will be loaded once it is stable")


def _insert_duplicate(connection: Connection, ledger: dict, original: int) -> FileReport:
    batch_id = connection.execute(
        insert(rar_batches)
        .values(**ledger, status="duplicate", duplicate_of=original, detail=f"same bytes as batch {original}")
        .returning(rar_batches.c.batch_id)
    ).scalar_one()
    return FileReport(ledger["file_name"], "duplicate", ledger["sha256"], batch_id, detail=f"same bytes as batch {original}")


def _record_duplicate(engine: Engine, ledger: dict, error: IntegrityError) -> FileReport:
    with write_connection(engine) as connection, connection.begin():
        original = connection.execute(
            select(rar_batches.c.batch_id).where(rar_batches.c.sha256 == ledger["sha256"], rar_batches.c.status == "loaded")
        ).scalar()
        if original is None:
            raise error
        return _insert_duplicate(connection, ledger, original)


def _record_rejected(engine: Engine, ledger: dict, rejected: FileRejected) -> FileReport:
    with write_connection(engine) as connection, connection.begin():
        batch_id = connection.execute(
            insert(rar_batches)
            .values(**ledger, status="rejected", reason=rejected.reason, detail=rejected.detail)
            .returning(rar_batches.c.batch_id)
        ).scalar_one()
    return FileReport(ledger["file_name"], "rejected", ledger["sha256"], batch_id, reason=rejected.reason, detail=rejected.detail)


def _archive(engine: Engine, landing_dir: Path, found: LandingFile, report: FileReport) -> None:
    try:
        target = archive(landing_dir, found, report.status, report.batch_id, report.sha256)
    except OSError as error:
        # The ledger already prevents a reload; the next run retries the move.
        log.warning("could not move %s aside: %s", found.name, error.strerror)
        return
    report.archived_as = str(target)
    with write_connection(engine) as connection, connection.begin():
        connection.execute(
            update(rar_batches).where(rar_batches.c.batch_id == report.batch_id).values(archived_as=str(target))
        )

