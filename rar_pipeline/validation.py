"""Vectorised row validation: the `contract.FIELDS` rules applied to a whole chunk at once.

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
    FIELDS,
    NATURAL_KEY,
    NUMBER_PATTERN,
    FieldSpec,
    Reason,
    describe,
)
from rar_pipeline.months import parse_month

RAW_COPY_LIMIT = 1000

# The warehouse shape of an accepted row (rar_raw_events without batch_id/line_no).
EVENT_SCHEMA = pa.schema(
    [
        ("dealer_id", pa.string()),
        ("month", pa.date32()),
        ("channel", pa.string()),
        ("impressions", pa.int64()),
        ("share_ai_snippet", pa.float64()),
        ("ctr_baseline", pa.float64()),
        ("ctr_drop_when_ai", pa.float64()),
        ("lead_cr", pa.float64()),
        ("close_rate", pa.float64()),
        ("avg_gross", pa.float64()),
        ("recoverable_share", pa.float64()),
        ("intent_cluster", pa.string()),
    ]
)


_MIX = np.uint64(0x9E3779B97F4A7C15)


def _string_fingerprints(text: pa.Array) -> np.ndarray:
    """A stable 64-bit fingerprint per value, hashing each distinct string once."""
    encoded = pc.dictionary_encode(text)
    digests = [
        int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little")
        for value in encoded.dictionary.to_pylist()
    ]
    return np.array(digests, dtype=np.uint64)[encoded.indices.to_numpy(zero_copy_only=False)]


def natural_key_hash(table: pa.Table) -> pa.Array:
    """64-bit fingerprint of (dealer_id, month, channel, intent_cluster), the same in every process.

    Grouping on one bigint is several times cheaper than on four text columns; the columns
    themselves stay the authority wherever two fingerprints are equal.
    """
    combined = np.zeros(table.num_rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for name in NATURAL_KEY:
            column = table.column(name)
            text = pc.cast(column, pa.string()) if not pa.types.is_string(column.type) else column
            combined = (combined ^ _string_fingerprints(text.combine_chunks())) * _MIX
            combined ^= combined >> np.uint64(31)
    return pa.array(combined.view(np.int64))


@dataclass(frozen=True)
class RejectedRow:
    line_no: int
    reason: Reason
    detail: str
    raw: str


@dataclass(frozen=True)
class ValidatedChunk:
    accepted: pa.Table  # EVENT_SCHEMA plus line_no and key_hash
    rejected: list[RejectedRow]


def _null_reasons(length: int) -> pa.Array:
    return pa.nulls(length, pa.string())


def _flag(mask: pa.Array, reason: Reason) -> pa.Array:
    """`reason` where mask is true, null elsewhere (a null mask counts as false)."""
    return pc.if_else(pc.fill_null(mask, False), pa.scalar(reason.value), pa.scalar(None, pa.string()))


def _per_distinct_value(text: pa.Array, check) -> pa.Array:
    """Apply a Python check to each distinct value only (months and dealers repeat a lot)."""
    encoded = pc.dictionary_encode(text)
    verdicts = pa.array([check(value) for value in encoded.dictionary.to_pylist()])
    return pc.take(verdicts, encoded.indices) if len(verdicts) else pa.nulls(len(text), verdicts.type)


def _month_column(text: pa.Array, first: date, last: date) -> tuple[pa.Array, pa.Array]:
    def month_and_reason(value: str):
        try:
            month = parse_month(value)
        except ValueError:
            return {"month": None, "reason": Reason.INVALID_MONTH.value}
        in_window = first <= month <= last
        return {"month": month, "reason": None if in_window else Reason.MONTH_OUT_OF_RANGE.value}

    verdicts = _per_distinct_value(text, month_and_reason)
    if len(text) and pa.types.is_null(verdicts.type):
        return pa.nulls(len(text), pa.date32()), _flag(pa.array(np.ones(len(text), dtype=bool)), Reason.INVALID_MONTH)
    month = pc.struct_field(verdicts, "month") if len(text) else pa.array([], pa.date32())
    reason = pc.struct_field(verdicts, "reason") if len(text) else pa.array([], pa.string())
    # A null month text is reported as missing; give it a reason too so it is never accepted.
    reason = pc.if_else(pc.is_null(text), pa.scalar(Reason.INVALID_MONTH.value), reason)
    return pc.cast(month, pa.date32()), pc.cast(reason, pa.string())


def _dealer_reason(text: pa.Array) -> pa.Array:
    pattern = re.compile(DEALER_ID_PATTERN)
    valid = _per_distinct_value(text, lambda value: bool(pattern.match(value)))
    return _flag(pc.invert(pc.fill_null(pc.cast(valid, pa.bool_()), False)), Reason.INVALID_DEALER_ID)


def _number_column(text: pa.Array, spec: FieldSpec) -> tuple[pa.Array, pa.Array]:
    try:
        # Fast path: Arrow's parser accepts exactly NUMBER_PATTERN plus nan/inf spellings, so a
        # column that casts cleanly to finite floats needs no regex.
        value = pc.cast(text, pa.float64())
        clean = pc.all(pc.is_finite(value)).as_py() is not False
    except pa.ArrowInvalid:
        clean = False
    if clean:
        shaped = pc.is_valid(text)
    else:
        shaped = pc.fill_null(pc.match_substring_regex(text, NUMBER_PATTERN), False)
        value = pc.cast(pc.if_else(shaped, text, pa.scalar("0")), pa.float64())
    bad_range = pc.invert(pc.is_finite(value))
    if spec.low is not None:
        bad_range = pc.or_(bad_range, pc.less(value, spec.low))
    if spec.high is not None:
        bad_range = pc.or_(bad_range, pc.greater(value, spec.high))
    not_number = pc.invert(shaped)
    if spec.kind == "integer":
        finite = pc.if_else(pc.is_finite(value), value, 0.0)
        not_number = pc.or_(not_number, pc.not_equal(pc.floor(finite), finite))
        value = pc.cast(pc.if_else(pc.or_(not_number, bad_range), 0.0, value), pa.int64())
    reason = pc.coalesce(_flag(not_number, Reason.INVALID_NUMBER), _flag(bad_range, Reason.OUT_OF_RANGE))
    return value, reason


def validate_chunk(
    columns: dict[str, pa.Array], line_numbers: np.ndarray, first_month: date, last_month: date
) -> ValidatedChunk:
    length = len(line_numbers)
    texts: dict[str, pa.Array] = {}
    for spec in FIELDS:
        column = columns.get(spec.name)
        texts[spec.name] = _null_reasons(length) if column is None else pc.utf8_trim_whitespace(column)

    blank = {name: pc.fill_null(pc.equal(text, ""), True) for name, text in texts.items()}
    any_missing = pa.array(np.zeros(length, dtype=bool))
    for spec in FIELDS:
        if spec.required:
            any_missing = pc.or_(any_missing, blank[spec.name])

    values: dict[str, pa.Array] = {}
    reasons = [_flag(any_missing, Reason.MISSING_FIELD)]
    failing_field = []
    for spec in FIELDS:
        text = texts[spec.name]
        if spec.kind == "dealer_id":
            value, reason = text, _dealer_reason(text)
        elif spec.kind == "month":
            value, reason = _month_column(text, first_month, last_month)
        elif spec.kind in ("integer", "number"):
            value, reason = _number_column(text, spec)
        elif spec.kind == "optional_text":
            value, reason = pc.fill_null(text, ""), _null_reasons(length)
        else:
            value, reason = text, _null_reasons(length)
        values[spec.name] = value
        reasons.append(reason)
        failing_field.append(pc.if_else(pc.is_null(reason), pa.scalar(None, pa.string()), pa.scalar(spec.name)))

    row_reason = pc.coalesce(*reasons)
    ok = pc.is_null(row_reason)
    accepted = pa.table({name: values[name] for name in EVENT_SCHEMA.names}).cast(EVENT_SCHEMA)
    accepted = accepted.append_column("line_no", pa.array(line_numbers, pa.int64())).filter(ok)
    accepted = accepted.append_column("key_hash", natural_key_hash(accepted))

    rejected: list[RejectedRow] = []
    bad_rows = np.flatnonzero(~ok.to_numpy(zero_copy_only=False))
    if len(bad_rows):
        field_of = pc.coalesce(*failing_field)
        for index in bad_rows.tolist():
            reason = Reason(row_reason[index].as_py())
            raw = {spec.alias: columns[spec.name][index].as_py() for spec in FIELDS if spec.name in columns}
            if reason is Reason.MISSING_FIELD:
                missing = [spec.alias for spec in FIELDS if spec.required and blank[spec.name][index].as_py()]
                detail = f"missing required field(s): {', '.join(missing)}"
            else:
                spec = next(s for s in FIELDS if s.name == field_of[index].as_py())
                detail = describe(reason, spec, texts[spec.name][index].as_py(), first_month, last_month)
            rejected.append(
                RejectedRow(int(line_numbers[index]), reason, detail, json.dumps(raw, ensure_ascii=False)[:RAW_COPY_LIMIT])
            )
    return ValidatedChunk(accepted, rejected)
