"""Streaming readers for batch files: CSV (Arrow's C++ parser) and JSONL, plain or gzip.

Both yield `RowChunk`s of text columns keyed by warehouse field name, with the line number of every
row, so memory stays flat whatever the file size. Problems with the file as a whole raise
`FileRejected`; problems with one row become a malformed `RejectedRow` and reading goes on.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from rar_pipeline.contract import EVENTS, Contract, Reason, contract_for_columns
from rar_pipeline.validation import RAW_COPY_LIMIT, RejectedRow

# Small blocks keep memory flat: Arrow reads ahead dozens of blocks (8 MiB blocks peaked at 620 MB
# on a 5M-row file, 1 MiB blocks at 260 MB) and they are no slower.
BLOCK_BYTES = 1024 * 1024
JSONL_CHUNK_ROWS = 50_000
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".csv.gz": "csv", ".jsonl.gz": "jsonl"}


class FileRejected(Exception):
    """The whole file is rejected; `reason` is machine-readable, the message says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class RowChunk:
    columns: dict[str, pa.Array]
    line_numbers: np.ndarray
    malformed: list[RejectedRow] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return len(self.line_numbers) + len(self.malformed)


def file_format(name: str) -> tuple[str, bool] | None:
    """("csv" | "jsonl", gzipped) for a supported file name, else None."""
    lowered = name.lower()
    for suffix, kind in sorted(FORMATS.items(), key=lambda item: -len(item[0])):
        if lowered.endswith(suffix):
            return kind, suffix.endswith(".gz")
    return None


class BatchReader:
    """Reads one opened batch file. `unknown_columns` is filled as soon as they are known."""

    def __init__(self, stream: IO[bytes], kind: str, gzipped: bool, block_bytes: int = BLOCK_BYTES):
        self._raw = stream
        self._kind = kind
        self._gzipped = gzipped
        self._block_bytes = block_bytes
        self.unknown_columns: list[str] = []
        # Decided by the header (CSV) or the first object (JSONL): events or dealer scores.
        self.contract: Contract = EVENTS

    def chunks(self) -> Iterator[RowChunk]:
        stream = gzip.GzipFile(fileobj=self._raw, mode="rb") if self._gzipped else self._raw
        try:
            if self._kind == "csv":
                yield from self._csv_chunks(stream)
            else:
                yield from self._jsonl_chunks(stream)
        except (gzip.BadGzipFile, EOFError, OSError) as error:
            raise FileRejected("undecodable", f"the file is not valid gzip: {error}") from None

    # CSV ---------------------------------------------------------------------------------------
    def _csv_header(self, stream: IO[bytes]) -> list[str]:
        first = stream.readline(1024 * 1024)
        if not first.strip(b"\xef\xbb\xbf \t\r\n"):
            raise FileRejected("empty_file", "the file is empty; a batch needs a header line and rows")
        try:
            text = first.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise FileRejected("undecodable", "the header line is not UTF-8 text") from None
        try:
            return next(csv.reader([text.rstrip("\r\n")]))
        except csv.Error as error:  # e.g. old-Mac CR-only line ends: the "first line" is the whole file
            raise FileRejected("malformed_file", f"the header line cannot be parsed as CSV ({error}); use LF or CRLF line ends") from None

    def _csv_chunks(self, stream: IO[bytes]) -> Iterator[RowChunk]:
        start = stream.tell()
        names = self._csv_header(stream)
        self.contract = contract_for_columns(names)
        header_to_field = self.contract.header_to_field
        fields: dict[str, str] = {}
        for name in names:
            target = header_to_field.get(name.strip())
            if target is None:
                self.unknown_columns.append(name)
            elif target in fields.values():
                raise FileRejected("ambiguous_header", f"the header names {target!r} twice; keep one column per field")
            else:
                fields[name] = target
        missing = [spec.alias for spec in self.contract.fields if spec.required and spec.name not in fields.values()]
        if missing:
            raise FileRejected(
                "missing_columns", f"the header lacks required column(s) {', '.join(missing)}; see the CSV template"
            )
        if len(set(names)) != len(names):
            raise FileRejected("ambiguous_header", "the header repeats a column name; column names must be unique")

        if not stream.read(1):
            return  # header only: Arrow cannot parse a lone header without a line end
        stream.seek(start)  # Arrow parses the header again itself
        invalid: deque = deque()

        def on_invalid_row(row) -> str:
            invalid.append((row.number, row.text, row.expected_columns, row.actual_columns))
            return "skip"

        try:
            reader = pa_csv.open_csv(
                stream,
                read_options=pa_csv.ReadOptions(use_threads=False, block_size=self._block_bytes),
                parse_options=pa_csv.ParseOptions(invalid_row_handler=on_invalid_row, ignore_empty_lines=False),
                convert_options=pa_csv.ConvertOptions(
                    column_types={name: pa.string() for name in fields},
                    include_columns=list(fields),
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            next_line = 2  # the header is line 1
            for batch in reader:
                count = batch.num_rows
                pending = np.fromiter((number for number, *_ in invalid), dtype=np.int64, count=len(invalid))
                candidates = np.arange(next_line, next_line + count + len(pending), dtype=np.int64)
                line_numbers = candidates[~np.isin(candidates, pending)][:count]
                if count:
                    next_line = int(line_numbers[-1]) + 1
                malformed = []
                while invalid and (invalid[0][0] or 0) < next_line:
                    malformed.append(_malformed(*invalid.popleft()))
                columns = {fields[name]: batch.column(name) for name in fields}
                _refuse_nul(columns.values(), malformed)
                yield _without_blank_rows(RowChunk(columns, line_numbers, malformed))
            if invalid:
                malformed = [_malformed(*row) for row in invalid]
                _refuse_nul((), malformed)
                yield RowChunk({}, np.empty(0, dtype=np.int64), malformed)
        except pa.ArrowInvalid as error:
            # A row of the wrong width that is not UTF-8 never reaches on_invalid_row (pyarrow cannot
            # decode its text), so Arrow reports it as a parse error ("Expected 12 columns, got 3").
            if "UTF8" in str(error) or "utf8" in str(error).lower() or " columns, got " in str(error):
                raise FileRejected("undecodable", "the file contains bytes that are not UTF-8 text") from None
            raise FileRejected("malformed_file", f"the CSV cannot be parsed: {str(error)[:200]}") from None

    # JSONL -------------------------------------------------------------------------------------
    def _jsonl_chunks(self, stream: IO[bytes]) -> Iterator[RowChunk]:
        columns: dict[str, list] | None = None  # made once the first object tells the contract
        lines: list[int] = []
        malformed: list[RejectedRow] = []
        unknown: set[str] = set()
        seen_any = False
        for line_no, raw in enumerate(stream, start=1):
            try:
                text = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError:
                raise FileRejected("undecodable", f"line {line_no} is not UTF-8 text") from None
            if not text.strip():
                continue
            seen_any = True
            try:
                record = json.loads(text)
            except ValueError as error:
                malformed.append(RejectedRow(line_no, Reason.MALFORMED_ROW, f"bad JSON: {error}", text[:RAW_COPY_LIMIT]))
                continue
            if not isinstance(record, dict):
                malformed.append(
                    RejectedRow(line_no, Reason.MALFORMED_ROW, "expected one JSON object per line", text[:RAW_COPY_LIMIT])
                )
                continue
            if columns is None:
                self.contract = contract_for_columns(record)
                header_to_field = self.contract.header_to_field
                columns = {spec.name: [] for spec in self.contract.fields}
            values: dict[str, str | None] = {}
            for key, value in record.items():
                name = header_to_field.get(key)
                if name is None:
                    unknown.add(key)
                else:
                    values[name] = _json_text(value)
            for name, column in columns.items():
                column.append(values.get(name))
            lines.append(line_no)
            if len(lines) >= JSONL_CHUNK_ROWS:
                yield self._jsonl_chunk(columns, lines, malformed, unknown)
                columns = {spec.name: [] for spec in self.contract.fields}
                lines, malformed = [], []
        if lines or malformed:
            yield self._jsonl_chunk(columns or {}, lines, malformed, unknown)
        elif not seen_any:
            raise FileRejected("empty_file", "the file is empty; a batch needs one JSON object per line")

    def _jsonl_chunk(self, columns, lines, malformed, unknown) -> RowChunk:
        self.unknown_columns = sorted(unknown)
        arrays = {name: pa.array(values, pa.string()) for name, values in columns.items()}
        _refuse_nul(arrays.values(), malformed)
        return RowChunk(arrays, np.array(lines, dtype=np.int64), malformed)


def _json_text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or isinstance(value, (list, dict)):
        return json.dumps(value)
    return repr(value)


def _refuse_nul(arrays, malformed: list[RejectedRow]) -> None:
    """PostgreSQL text cannot hold NUL characters: a file with any is rejected, not half-loaded."""
    for array in arrays:
        data = array.buffers()[2]
        if data is not None and data.size and not np.frombuffer(data, np.uint8).all():
            raise FileRejected("undecodable", "the file contains NUL characters; it is not a UTF-8 text batch")
    if any("\x00" in row.raw for row in malformed):
        raise FileRejected("undecodable", "the file contains NUL characters; it is not a UTF-8 text batch")


def _malformed(number, text, expected, actual) -> RejectedRow:
    return RejectedRow(
        int(number or 0),
        Reason.MALFORMED_ROW,
        f"expected {expected} fields, found {actual} (check the delimiters and quotes on this line)",
        (text or "")[:RAW_COPY_LIMIT],
    )


def _without_blank_rows(chunk: RowChunk) -> RowChunk:
    """Blank lines (and rows of nothing but delimiters and spaces) are not rows."""
    if not chunk.columns or not len(chunk.line_numbers):
        return chunk
    columns = list(chunk.columns.values())
    # Only rows whose first value is blank can be blank; test the other columns on those few alone.
    first_blank = pc.match_substring_regex(columns[0], r"^\s*$")
    candidates = np.flatnonzero(pc.fill_null(first_blank, True).to_numpy(zero_copy_only=False))
    if not len(candidates):
        return chunk
    blank = np.ones(len(candidates), dtype=bool)
    for column in columns:
        subset = pc.utf8_trim_whitespace(column.take(pa.array(candidates)))
        blank &= pc.equal(pc.binary_length(subset), 0).to_numpy(zero_copy_only=False)
    if not blank.any():
        return chunk
    keep = np.ones(len(chunk.line_numbers), dtype=bool)
    keep[candidates[blank]] = False
    mask = pa.array(keep)
    return RowChunk(
        {name: column.filter(mask) for name, column in chunk.columns.items()},
        chunk.line_numbers[keep],
        chunk.malformed,
    )
