"""Bulk writes: one streaming COPY on PostgreSQL, batched executemany on SQLite.

On PostgreSQL the accepted rows of a whole file go through a single `COPY ... FROM STDIN`, fed by a
file-like object that turns Arrow tables into CSV as the server asks for more. The server parses
one chunk while Python validates the next, so the two cores work at once.
"""

from __future__ import annotations

import io
from typing import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from sqlalchemy import Connection

COPY_READ_BYTES = 1024 * 1024
SQLITE_BATCH_ROWS = 50_000


class _ArrowCsvStream(io.RawIOBase):
    """A readable byte stream over the CSV rendering of a sequence of Arrow tables."""

    def __init__(self, tables: Iterable[pa.Table]):
        self._tables: Iterator[pa.Table] = iter(tables)
        self._pending = memoryview(b"")
        self._options = pa_csv.WriteOptions(include_header=False)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            table = next(self._tables, None)
            if table is None:
                return 0
            sink = io.BytesIO()
            pa_csv.write_csv(table, sink, self._options)
            self._pending = memoryview(sink.getvalue())
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def copy_csv(connection: Connection, table: str, columns: Sequence[str], csv_stream, not_null: Sequence[str] = ()) -> None:
    """COPY a CSV byte stream (no header) into `table` inside the connection's transaction."""
    force = f", FORCE_NOT_NULL ({', '.join(not_null)})" if not_null else ""
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv{force})"
    cursor = connection.connection.driver_connection.cursor()
    try:
        cursor.copy_expert(statement, csv_stream, size=COPY_READ_BYTES)
    finally:
        cursor.close()


def insert_arrow(connection: Connection, table: str, columns: Sequence[str], tables: Iterable[pa.Table]) -> None:
    """Insert Arrow tables whose columns are named `columns`, using the fastest path of the dialect."""
    if connection.dialect.name == "postgresql":
        text_columns = [name for name in columns if name in ("channel", "intent_cluster", "dealer_id")]
        stream = io.BufferedReader(_ArrowCsvStream(t.select(list(columns)) for t in tables), COPY_READ_BYTES)
        copy_csv(connection, table, columns, stream, not_null=text_columns)
        return
    placeholders = ", ".join("?" for _ in columns)
    statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"
    cursor = connection.connection.driver_connection.cursor()
    try:
        for arrow_table in tables:
            for batch in arrow_table.select(list(columns)).to_batches(SQLITE_BATCH_ROWS):
                values = [_sqlite_values(column) for column in batch.columns]
                cursor.executemany(statement, zip(*values))
    finally:
        cursor.close()


def _sqlite_values(column: pa.Array) -> list:
    if pa.types.is_date(column.type):
        # SQLAlchemy's Date type reads ISO text back from SQLite.
        return pc.cast(column, pa.string()).to_pylist()
    return column.to_pylist()
