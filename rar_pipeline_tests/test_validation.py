"""The vectorised validator, held to the pydantic reference `contract.check_record`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rar_pipeline.contract import (
    DEALER_SCORES,
    FIELDS,
    HEADER_TO_FIELD,
    Reason,
    RarEvent,
    check_record,
    normalize_record,
)
from rar_pipeline.validation import EVENT_SCHEMA, RAW_COPY_LIMIT, natural_key_hash, validate_chunk

FIRST, LAST = date(2024, 1, 1), date(2026, 12, 1)

VALID = {
    "dealerId": "demo-rooftop",
    "month": "2025-11",
    "channel": "google_organic",
    "impressions": "200000",
    "shareAISnippet": "0.37",
    "ctrBaseline": "0.055",
    "ctrDropWhenAI": "0.34",
    "leadCR": "0.04",
    "closeRate": "0.18",
    "avgGross": "2050",
    "recoverableShare": "0.45",
    "intentCluster": "service_price",
}


def columns_of(records: list[dict], drop_intent_column: bool = False) -> dict[str, pa.Array]:
    """Text columns keyed by field name, null where a record lacks the field (as the readers give them)."""
    columns = {}
    for spec in FIELDS:
        if drop_intent_column and spec.name == "intent_cluster":
            continue
        values = []
        for record in records:
            value = record.get(spec.alias, record.get(spec.name))
            values.append(None if value is None else str(value))
        columns[spec.name] = pa.array(values, pa.string())
    return columns


def validate(records: list[dict], lines=None, first=FIRST, last=LAST, **kwargs):
    lines = np.arange(2, 2 + len(records), dtype=np.int64) if lines is None else np.array(lines, dtype=np.int64)
    return validate_chunk(columns_of(records, **kwargs), lines, first, last)


def with_(**changes) -> dict:
    record = dict(VALID)
    for key, value in changes.items():
        if value is None:
            record.pop(key)
        else:
            record[key] = value
    return record


# each reason code, with its detail ---------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, reason, detail",
    [
        ({"avgGross": None}, Reason.MISSING_FIELD, "missing required field(s): avgGross"),
        ({"channel": " ", "dealerId": ""}, Reason.MISSING_FIELD, "missing required field(s): dealerId, channel"),
        ({"month": None, "leadCR": "x"}, Reason.MISSING_FIELD, "missing required field(s): month"),
        ({"leadCR": "abc"}, Reason.INVALID_NUMBER, "leadCR: 'abc' is not a number"),
        ({"leadCR": "NaN"}, Reason.INVALID_NUMBER, "leadCR: 'NaN' is not a number"),
        ({"avgGross": "-inf"}, Reason.INVALID_NUMBER, "avgGross: '-inf' is not a number"),
        ({"impressions": "12.5"}, Reason.INVALID_NUMBER, "impressions: '12.5' is not a whole number"),
        ({"impressions": "0x1"}, Reason.INVALID_NUMBER, "impressions: '0x1' is not a number"),
        ({"impressions": "-1"}, Reason.OUT_OF_RANGE, "impressions: '-1' is out of range (must be a whole number from 0 to 2^53)"),
        ({"impressions": "1e999"}, Reason.OUT_OF_RANGE, "impressions: '1e999' is out of range (must be a whole number from 0 to 2^53)"),
        ({"ctrBaseline": "1.5"}, Reason.OUT_OF_RANGE, "ctrBaseline: '1.5' is out of range (must be between 0 and 1)"),
        ({"avgGross": "-0.01"}, Reason.OUT_OF_RANGE, "avgGross: '-0.01' is out of range (must be ≥ 0)"),
        ({"month": "2025-02-29"}, Reason.INVALID_MONTH, "month: '2025-02-29' is not a month (use YYYY-MM or YYYY-MM-DD)"),
        ({"month": "11/2025"}, Reason.INVALID_MONTH, "month: '11/2025' is not a month (use YYYY-MM or YYYY-MM-DD)"),
        ({"month": "2023-12-31"}, Reason.MONTH_OUT_OF_RANGE, "month: '2023-12-31' is outside the accepted months 2024-01..2026-12"),
        ({"month": "2027-01"}, Reason.MONTH_OUT_OF_RANGE, "month: '2027-01' is outside the accepted months 2024-01..2026-12"),
        ({"dealerId": "demo rooftop"}, Reason.INVALID_DEALER_ID, "dealerId: 'demo rooftop' must be 1..128 characters of letters, digits, '.', '_' or '-'"),
        ({"dealerId": "{0}"}, Reason.INVALID_DEALER_ID, "dealerId: '{0}' must be 1..128 characters of letters, digits, '.', '_' or '-'"),
        ({"dealerId": "d" * 129}, Reason.INVALID_DEALER_ID, f"dealerId: {'d' * 40!r} must be 1..128 characters of letters, digits, '.', '_' or '-'"),
    ],
)
def test_each_reason_with_its_detail(changes, reason, detail):
    good = dict(VALID, intentCluster="hours")
    result = validate([good, with_(**changes), good | {"intentCluster": "oil_change"}], lines=[2, 5, 9])
    assert [(r.line_no, r.reason, r.detail) for r in result.rejected] == [(5, reason, detail)]
    assert result.accepted.column("line_no").to_pylist() == [2, 9]
    # the reference agrees
    assert check_record(with_(**changes), FIRST, LAST) == (reason, detail)


def test_accepted_rows_are_typed():
    result = validate([with_(month="2025-11-15", dealerId=" demo-rooftop ", intentCluster=None), VALID], lines=[3, 4])
    assert result.rejected == []
    table = result.accepted
    assert table.schema.names == EVENT_SCHEMA.names + ["line_no", "key_hash"]
    assert table.select(EVENT_SCHEMA.names).schema == EVENT_SCHEMA
    rows = table.to_pylist()
    assert rows[0]["month"] == date(2025, 11, 1)
    assert rows[0]["dealer_id"] == "demo-rooftop"
    assert rows[0]["intent_cluster"] == ""
    assert rows[0]["impressions"] == 200000
    assert rows[0]["share_ai_snippet"] == 0.37
    assert rows[1]["intent_cluster"] == "service_price"
    assert [row["line_no"] for row in rows] == [3, 4]


def test_missing_intent_column_means_no_intent():
    result = validate([VALID, VALID | {"channel": "bing"}], drop_intent_column=True)
    assert result.rejected == []
    assert result.accepted.column("intent_cluster").to_pylist() == ["", ""]


def test_all_rows_rejected_and_empty_chunk():
    result = validate([with_(month="nope"), with_(month=None)])
    assert [r.reason for r in result.rejected] == [Reason.INVALID_MONTH, Reason.MISSING_FIELD]
    assert result.accepted.num_rows == 0
    empty = validate([])
    assert empty.rejected == [] and empty.accepted.num_rows == 0


def test_raw_copy_is_json_of_the_input_and_capped():
    long_channel = "c" * 5000
    result = validate([with_(leadCR="7", channel=long_channel)])
    (row,) = result.rejected
    assert row.reason is Reason.OUT_OF_RANGE
    assert len(row.raw) == RAW_COPY_LIMIT
    short = validate([with_(leadCR="7")]).rejected[0]
    assert json.loads(short.raw)["leadCR"] == "7"
    assert json.loads(short.raw)["dealerId"] == "demo-rooftop"


def test_same_month_written_two_ways_is_the_same_key():
    result = validate([VALID, with_(month="2025-11-20")])
    hashes = result.accepted.column("key_hash").to_pylist()
    assert hashes[0] == hashes[1]


# natural_key_hash ---------------------------------------------------------------------------------


def key_table(rows):
    return pa.table(
        {
            "dealer_id": pa.array([r[0] for r in rows], pa.string()),
            "month": pa.array([r[1] for r in rows], pa.date32()),
            "channel": pa.array([r[2] for r in rows], pa.string()),
            "intent_cluster": pa.array([r[3] for r in rows], pa.string()),
        }
    )


KEYS = [
    ("a", date(2025, 11, 1), "bing", "hours"),
    ("b", date(2025, 11, 1), "bing", "hours"),
    ("a", date(2025, 10, 1), "bing", "hours"),
    ("a", date(2025, 11, 1), "chatgpt", "hours"),
    ("a", date(2025, 11, 1), "bing", ""),
    ("a", date(2025, 11, 1), "hours", "bing"),  # values swapped between fields
    ("bing", date(2025, 11, 1), "a", "hours"),
    ("ab", date(2025, 11, 1), "bing", "hours"),
    ("a", date(2025, 11, 1), "bbing", "hours"),
]


def test_natural_key_hash_differs_for_different_keys():
    hashes = natural_key_hash(key_table(KEYS)).to_pylist()
    assert len(set(hashes)) == len(KEYS)


def test_natural_key_hash_is_deterministic():
    first = natural_key_hash(key_table(KEYS)).to_pylist()
    # the same key hashes the same wherever it sits in a table
    shuffled = natural_key_hash(key_table(list(reversed(KEYS)) + KEYS[:2])).to_pylist()
    assert shuffled == list(reversed(first)) + first[:2]
    # ... and in another process with another string-hash seed
    code = (
        "import json, datetime, pyarrow as pa\n"
        "from rar_pipeline_tests.test_validation import KEYS, key_table\n"
        "from rar_pipeline.validation import natural_key_hash\n"
        "print(json.dumps(natural_key_hash(key_table(KEYS)).to_pylist()))\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, cwd=os.getcwd())
    assert json.loads(out.stdout) == first


# the property: vectorised == reference -------------------------------------------------------------

HOSTILE = ["", " ", "\t", "nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999", "1e-999", "-0", "+1", ".5", "5.",
           "1_0", "0x1", "1.0", "1.5", "-1", "0", "1", "2", "0.5", "1e5", "1E-2", "+.5", "-.0", "١", "{0}", "{}", "abc",
           str(2**53), str(2**53 + 2), "1e300", "00.10", "1,5", "1 000"]  # fmt: skip
PAD = st.sampled_from(["", "", "", " ", "\t", "\u00a0", " \r"])


def padded(values):
    return st.tuples(PAD, values, PAD).map("".join)


number_text = padded(
    st.one_of(
        st.sampled_from(HOSTILE),
        st.floats(0, 1).map(repr),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers(-10, 10**6).map(str),
        st.text(alphabet="0123456789.eE+-_x", max_size=6),
    )
)
month_text = padded(
    st.one_of(
        st.sampled_from(["2025-11", "2025-11-15", "2025-02-29", "2024-02-29", "2025-02-30", "2025-13", "2025-00",
                         "0000-01", "2023-12", "2027-01", "2024-01", "2026-12-31", "9999-12", "garbage", "2025-1",
                         "2025/11", "٢٠٢٥-١١", "{month}"]),  # fmt: skip
        st.dates(date(1990, 1, 1), date(2030, 12, 31)).map(lambda d: d.strftime("%Y-%m")),
        st.dates(date(1990, 1, 1), date(2030, 12, 31)).map(lambda d: d.isoformat()),
        st.text(alphabet="0123456789-", max_size=10),
    )
)
dealer_text = padded(
    st.one_of(
        st.sampled_from(["germain-toyota-naples", "demo-rooftop", "A.b_c-9", "x" * 128, "x" * 129, "a b", "händler",
                         "deal\u00e9r", "{dealer}", "{}", "d{0}", "dealer\ttab", "🚗", "a/b"]),  # fmt: skip
        st.text(max_size=6),
        st.text(alphabet="abcXYZ09._- ", min_size=1, max_size=130),
    )
)
free_text = padded(st.one_of(st.sampled_from(["google_organic", "chatgpt", "hours", "{intent}", "ünïcode"]), st.text(max_size=6)))


def maybe(values):
    # None = the field is absent (a null in the chunk)
    return st.one_of(st.none(), values, values, values, values, values)


@st.composite
def records(draw):
    values = {
        "dealer_id": draw(st.one_of(st.just(VALID["dealerId"]), dealer_text) if draw(st.booleans()) else maybe(dealer_text)),
        "month": draw(st.one_of(st.just("2025-11"), maybe(month_text))),
        "channel": draw(st.one_of(st.just("bing"), maybe(free_text))),
        "intent_cluster": draw(maybe(free_text)),
    }
    for spec in FIELDS:
        if spec.kind in ("integer", "number"):
            valid = VALID[spec.alias]
            values[spec.name] = draw(st.one_of(st.just(valid), st.just(valid), st.just(valid), maybe(number_text)))
    record = {}
    for name, value in values.items():
        if value is None:
            continue
        spec = next(s for s in FIELDS if s.name == name)
        record[spec.alias if draw(st.booleans()) else spec.name] = value
    return record


def reference_values(record: dict) -> dict:
    event = RarEvent.model_validate(normalize_record(record), context={"first_month": FIRST, "last_month": LAST})
    return event.model_dump()


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), min_size=1, max_size=12), st.booleans())
def test_vectorised_validator_agrees_with_the_reference(chunk, drop_intent_column):
    if drop_intent_column:
        chunk = [{k: v for k, v in r.items() if HEADER_TO_FIELD[k] != "intent_cluster"} for r in chunk]
    lines = np.arange(10, 10 + 3 * len(chunk), 3, dtype=np.int64)
    result = validate_chunk(columns_of(chunk, drop_intent_column), lines, FIRST, LAST)

    rejected = {row.line_no: row for row in result.rejected}
    accepted = {row["line_no"]: row for row in result.accepted.to_pylist()}
    assert len(rejected) + len(accepted) == len(chunk)
    for line, record in zip(lines.tolist(), chunk):
        verdict = check_record(record, FIRST, LAST)
        if verdict is None:
            assert line in accepted, (record, rejected.get(line))
            got = accepted[line]
            expected = reference_values(record)
            for name, value in expected.items():
                assert got[name] == value and type(got[name]) is type(value), (name, got[name], value, record)
        else:
            assert line in rejected, (record, verdict)
            assert (rejected[line].reason, rejected[line].detail) == verdict, record


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(st.sampled_from(HOSTILE + ["0.25", "0.75"]), min_size=1, max_size=8), st.sampled_from(["leadCR", "impressions", "avgGross"]))
def test_whole_column_of_hostile_numbers(values, alias):
    # one column full of odd values exercises the "column does not cast cleanly" path of the validator
    chunk = [with_(**{alias: value}) for value in values]
    result = validate(chunk)
    verdicts = {row.line_no: (row.reason, row.detail) for row in result.rejected}
    for line, record in enumerate(chunk, start=2):
        assert verdicts.get(line) == check_record(record, FIRST, LAST)


# the second contract (dealer-score files) holds to the same property ------------------------------------

SCORE_VALID = {"dealerId": "demo-rooftop", "month": "2025-11", "aiv": "85", "ati": "78", "qai": "90",
               "zeroClickCoverage": "0.5", "schemaCoverage": "0.6"}  # fmt: skip


@st.composite
def score_records(draw):
    record = {}
    for spec in DEALER_SCORES.fields:
        if spec.kind == "dealer_id":
            value = draw(st.one_of(st.just(SCORE_VALID["dealerId"]), maybe(dealer_text)))
        elif spec.kind == "month":
            value = draw(st.one_of(st.just("2025-11"), maybe(month_text)))
        else:
            extra = st.one_of(st.floats(0, 100).map(repr), st.sampled_from(["100", "100.0001", "1e2", "0", "-0"]))
            value = draw(st.one_of(st.just(SCORE_VALID[spec.alias]), maybe(number_text), maybe(extra)))
        if value is not None:
            record[spec.alias if draw(st.booleans()) else spec.name] = value
    return record


def score_columns(records):
    return {
        spec.name: pa.array([r.get(spec.alias, r.get(spec.name)) for r in records], pa.string())
        for spec in DEALER_SCORES.fields
    }


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(score_records(), min_size=1, max_size=10))
def test_dealer_score_validator_agrees_with_the_reference(chunk):
    lines = np.arange(2, 2 + len(chunk), dtype=np.int64)
    result = validate_chunk(score_columns(chunk), lines, FIRST, LAST, DEALER_SCORES)
    rejected = {row.line_no: (row.reason, row.detail) for row in result.rejected}
    accepted = {row["line_no"]: row for row in result.accepted.to_pylist()}
    for line, record in zip(lines.tolist(), chunk):
        verdict = check_record(record, FIRST, LAST, DEALER_SCORES)
        assert rejected.get(line) == verdict, record
        if verdict is None:
            context = {"first_month": FIRST, "last_month": LAST}
            expected = DEALER_SCORES.model.model_validate(normalize_record(record, DEALER_SCORES), context=context)
            for name, value in expected.model_dump().items():
                assert accepted[line][name] == value, (name, record)
