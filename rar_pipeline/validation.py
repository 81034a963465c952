"""Vectorised row validation: a contract's field rules applied to a whole chunk at once.

A chunk arrives as text columns (Arrow string arrays, null where a value is absent). Each field
yields a reason array (null where the field is fine); `coalesce` over the fields in contract order
gives every row the reason of its first failing field, exactly as `contract.check_record` does
for one row.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rar_pipeline.contract import (
    DEALER_ID_PATTERN,
    EVENTS,
    NATURAL_KEY,
    NUMBER_PATTERN,
    Contract,
    FieldSpec,
    Reason,
    describe,
)
from rar_pipeline.months import parse_month

RAW_COPY_LIMIT = 1000
_ARROW_TYPES = {
    "dealer_id": pa.string(),
    "month": pa.date32(),
    "text": pa.string(),
    "optional_text": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
}


def arrow_schema(contract: Contract) -> pa.Schema:
    """The warehouse shape of an accepted row (its raw table without batch_id/line_no/key_hash)."""
    return pa.schema([(spec.name, _ARROW_TYPES[spec.kind]) for spec in contract.fields])


EVENT_SCHEMA = arrow_schema(EVENTS)



_MIX = np.uint64(0x9E3779B97F4A7C15)


def _fingerprints(values: list[str]) -> np.ndarray:
    """A stable 64-bit fingerprint of each string (the same in every process)."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little") for value in values],
        dtype=np.uint64,
    )


def _combine(columns: list[np.ndarray]) -> pa.Array:
    """One fingerprint per row from its key columns' fingerprints."""
    combined = np.zeros(len(columns[0]), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for fingerprints in columns:
            combined = (combined ^ fingerprints) * _MIX
            combined ^= combined >> np.uint64(31)
    return pa.array(combined.view(np.int64))


def natural_key_hash(table: pa.Table, key: tuple[str, ...] = NATURAL_KEY) -> pa.Array:
    """64-bit fingerprint of (dealer_id, month, channel, intent_cluster) of each row of a typed table.

    The loader's in-batch duplicate check compares these in memory; equal fingerprints are only
    candidates, the key columns decide. `validate_chunk` computes the same values while it checks
    the key columns.
    """
    columns = []
    for name in key:
        column = table.column(name)
        text = pc.cast(column, pa.string()) if not pa.types.is_string(column.type) else column
        encoded = pc.dictionary_encode(text.combine_chunks())
        columns.append(_fingerprints(encoded.dictionary.to_pylist())[encoded.indices.to_numpy(zero_copy_only=False)])
    return _combine(columns)


@dataclass(frozen=True)
class RejectedRow:
    line_no: int
    reason: Reason
    detail: str
    raw: str


@dataclass(frozen=True)
class ValidatedChunk:
    accepted: pa.Table  # arrow_schema(contract) plus line_no and key_hash
    rejected: list[RejectedRow]


# A reason per row as a small integer (0 = fine), so combining twelve fields costs numpy, not strings.
_CODES: tuple[Reason | None, ...] = (None, *Reason)
_CODE = {reason: code for code, reason in enumerate(_CODES)}


def _mask(array: pa.Array) -> np.ndarray:
    return pc.fill_null(array, False).to_numpy(zero_copy_only=False)


def _blank(text: pa.Array) -> np.ndarray:
    # binary_length is far cheaper than comparing every value with "".
    return _mask(pc.equal(pc.fill_null(pc.binary_length(text), 0), 0)) | _mask(pc.is_null(text))


def _codes(length: int, *flags: tuple[np.ndarray, Reason]) -> np.ndarray:
    """The code of the first true flag per row."""
    codes = np.zeros(length, dtype=np.int8)
    for mask, reason in reversed(flags):
        codes[mask] = _CODE[reason]
    return codes


@dataclass
class _Column:
    value: pa.Array
    blank: np.ndarray
    codes: np.ndarray
    text: pa.Array  # trimmed input, for the rejected rows' details
    fingerprints: np.ndarray | None = None  # of the stored value, for the natural-key hash


@dataclass(frozen=True)
class _Distinct:
    values: list  # trimmed distinct values
    indices: np.ndarray  # each row's index into them (0 for a null row)
    nulls: np.ndarray
    column: pa.Array  # the trimmed column

    def fingerprints(self, stored: list[str]) -> np.ndarray:
        """Per row, the fingerprint of `stored[index]` (what the distinct value is stored as); "" for nulls."""
        per_row = _fingerprints(stored or [""])[self.indices]
        per_row[self.nulls] = _fingerprints([""])[0]
        return per_row


def _distinct(text: pa.Array) -> _Distinct:
    encoded = pc.dictionary_encode(text)
    trimmed = pc.utf8_trim_whitespace(encoded.dictionary)
    indices = pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False)
    column = pc.take(trimmed, encoded.indices) if len(trimmed) else pa.nulls(len(text), pa.string())
    return _Distinct(trimmed.to_pylist(), indices, _mask(pc.is_null(encoded.indices)), column)


def _text_column(text: pa.Array) -> _Column:
    distinct = _distinct(text)
    trimmed = distinct.column
    return _Column(trimmed, _blank(trimmed), np.zeros(len(text), dtype=np.int8), trimmed, distinct.fingerprints(distinct.values))


def _dealer_column(text: pa.Array) -> _Column:
    pattern = re.compile(DEALER_ID_PATTERN)
    distinct = _distinct(text)
    values, indices, trimmed = distinct.values, distinct.indices, distinct.column
    valid = np.array([bool(value) and bool(pattern.match(value)) for value in values] or [False])[indices]
    codes = _codes(len(text), (~valid, Reason.INVALID_DEALER_ID))
    return _Column(trimmed, _blank(trimmed), codes, trimmed, distinct.fingerprints(values))


def _month_column(text: pa.Array, first: date, last: date) -> _Column:
    distinct = _distinct(text)
    values, indices, trimmed = distinct.values, distinct.indices, distinct.column
    months, reasons = [], []
    for value in values:
        try:
            month = parse_month(value)
        except ValueError:
            months.append(None)
            reasons.append(_CODE[Reason.INVALID_MONTH])
            continue
        months.append(month)
        reasons.append(0 if first <= month <= last else _CODE[Reason.MONTH_OUT_OF_RANGE])
    codes = np.array(reasons or [0], dtype=np.int8)[indices]
    value = pc.take(pa.array(months, pa.date32()), pa.array(indices)) if values else pa.nulls(len(text), pa.date32())
    # A month is stored (and fingerprinted) as its first day: 2025-11 and 2025-11-20 are one key.
    fingerprints = distinct.fingerprints([month.isoformat() if month else "" for month in months])
    return _Column(value, _blank(trimmed), codes, trimmed, fingerprints)


def _number_column(text: pa.Array, spec: FieldSpec) -> _Column:
    try:
        # Fast path: Arrow's parser accepts exactly NUMBER_PATTERN plus nan/inf spellings (and
        # rejects blanks and padding), so a column that casts cleanly to finite floats needs no
        # trimming and no regex.
        value = pc.cast(text, pa.float64())
        clean = pc.all(pc.is_finite(value)).as_py() is not False
    except pa.ArrowInvalid:
        clean = False
    if clean:
        shaped = ~_mask(pc.is_null(text))
        blank = ~shaped
    else:
        text = pc.utf8_trim_whitespace(text)
        blank = _blank(text)
        shaped = _mask(pc.match_substring_regex(text, NUMBER_PATTERN))
        value = pc.cast(pc.if_else(pa.array(shaped), text, pa.scalar("0")), pa.float64())
    numbers = value.to_numpy(zero_copy_only=False)
    finite = np.isfinite(numbers)
    bad_range = ~finite
    with np.errstate(invalid="ignore"):
        if spec.low is not None:
            bad_range |= numbers < spec.low
        if spec.high is not None:
            bad_range |= numbers > spec.high
    not_number = ~shaped
    if spec.kind == "integer":
        whole = np.where(finite, numbers, 0.0)
        not_number |= np.floor(whole) != whole
        value = pa.array(np.where(not_number | bad_range, 0, whole).astype(np.int64))
    codes = _codes(len(text), (not_number, Reason.INVALID_NUMBER), (bad_range, Reason.OUT_OF_RANGE))
    if spec.optional and blank.any():
        codes[blank] = 0
        value = pc.if_else(pa.array(blank), pa.scalar(None, value.type), value)
    return _Column(value, blank, codes, text)


def validate_chunk(
    columns: dict[str, pa.Array],
    line_numbers: np.ndarray,
    first_month: date,
    last_month: date,
    contract: Contract = EVENTS,
) -> ValidatedChunk:
    fields = contract.fields
    schema = arrow_schema(contract)
    length = len(line_numbers)
    results: dict[str, _Column] = {}
    for spec in fields:
        text = columns.get(spec.name)
        if text is None:
            text = pa.nulls(length, pa.string())
        if spec.kind == "dealer_id":
            results[spec.name] = _dealer_column(text)
        elif spec.kind == "month":
            results[spec.name] = _month_column(text, first_month, last_month)
        elif spec.kind in ("integer", "number"):
            results[spec.name] = _number_column(text, spec)
        else:
            column = _text_column(text)
            if spec.kind == "optional_text":
                column.value = pc.fill_null(column.value, "")
            results[spec.name] = column

    missing = np.zeros(length, dtype=bool)
    for spec in fields:
        if spec.required:
            missing |= results[spec.name].blank
    row_codes = np.zeros(length, dtype=np.int8)
    failing_field = np.full(length, -1, dtype=np.int16)
    for index in reversed(range(len(fields))):
        field_codes = results[fields[index].name].codes
        failed = field_codes != 0
        row_codes[failed] = field_codes[failed]
        failing_field[failed] = index
    row_codes[missing] = _CODE[Reason.MISSING_FIELD]
    ok = row_codes == 0

    accepted = pa.table({name: results[name].value for name in schema.names}).cast(schema)
    accepted = accepted.append_column("line_no", pa.array(line_numbers, pa.int64()))
    accepted = accepted.append_column("key_hash", _combine([results[name].fingerprints for name in contract.natural_key]))
    if not ok.all():
        accepted = accepted.filter(pa.array(ok))

    rejected: list[RejectedRow] = []
    for index in np.flatnonzero(~ok).tolist():
        reason = _CODES[row_codes[index]]
        raw = {spec.alias: columns[spec.name][index].as_py() for spec in fields if spec.name in columns}
        if reason is Reason.MISSING_FIELD:
            absent = [spec.alias for spec in fields if spec.required and results[spec.name].blank[index]]
            detail = f"missing required field(s): {', '.join(absent)}"
        else:
            spec = fields[failing_field[index]]
            detail = describe(reason, spec, results[spec.name].text[index].as_py(), first_month, last_month)
        rejected.append(
            RejectedRow(int(line_numbers[index]), reason, detail, json.dumps(raw, ensure_ascii=False)[:RAW_COPY_LIMIT])
        )
    return ValidatedChunk(accepted, rejected)
