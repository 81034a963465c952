"""Bulk writes: one streaming COPY on PostgreSQL, batched executemany on SQLite.

On PostgreSQL the accepted rows of a whole file go through a single `COPY ... FROM STDIN`, fed by a
file-like object that turns Arrow tables into CSV as the server asks for more. The server parses
one chunk while Python validates the next, so the two cores work at once.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence

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
        self.error: BaseException | None = None  # what the tables' producer raised, if anything

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            try:
                table = next(self._tables, None)
            except BaseException as error:
                self.error = error  # psycopg2 turns it into QueryCanceled; insert_arrow re-raises it
                raise
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
        source = _ArrowCsvStream(t.select(list(columns)) for t in tables)
        try:
            copy_csv(connection, table, columns, io.BufferedReader(source, COPY_READ_BYTES), not_null=text_columns)
        except Exception:
            if source.error is not None:
                raise source.error from None  # e.g. the reader's FileRejected, not psycopg2's QueryCanceled
            raise
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
    # Stored the way SQLAlchemy's types store them on SQLite, so they read back the same.
    if pa.types.is_date(column.type):
        return pc.cast(column, pa.string()).to_pylist()  # ISO date text
    if pa.types.is_timestamp(column.type):
        return [None if value is None else value.strftime("%Y-%m-%d %H:%M:%S.%f") for value in column.to_pylist()]
    if pa.types.is_decimal(column.type):
        return [None if value is None else str(value) for value in column.to_pylist()]
    return column.to_pylist()


def read_arrow(connection: Connection, query, types: dict[str, pa.DataType]) -> pa.Table:
    """Run a SELECT and return its rows as an Arrow table with the given column types.

    On PostgreSQL the rows come through `COPY (query) TO STDOUT` as CSV (floats are printed in
    their shortest exact form, so they round-trip bit for bit); on SQLite through the cursor.
    """
    compiled = query.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
    names = list(types)
    if connection.dialect.name == "postgresql":
        sink = io.BytesIO()
        cursor = connection.connection.driver_connection.cursor()
        try:
            cursor.copy_expert(f"COPY ({compiled}) TO STDOUT WITH (FORMAT csv)", sink)
        finally:
            cursor.close()
        if not sink.tell():
            return pa.table({name: pa.array([], type) for name, type in types.items()})
        sink.seek(0)
        return pa_csv.read_csv(
            sink,
            read_options=pa_csv.ReadOptions(column_names=names),
            convert_options=pa_csv.ConvertOptions(column_types=types, strings_can_be_null=False),
        )
    rows = connection.execute(query).all()
    columns = list(zip(*rows)) if rows else [[] for _ in names]
    return pa.table({name: pa.array(list(values), types[name]) for name, values in zip(names, columns)})
