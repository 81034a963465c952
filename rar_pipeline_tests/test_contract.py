"""The event contract: month parsing and the pydantic reference verdict for one record."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from rar_pipeline.contract import FIELDS, HEADER_TO_FIELD, Reason, RarEvent, check_record, normalize_record
from rar_pipeline.months import add_months, current_month, parse_month

FIRST, LAST = date(2024, 1, 1), date(2026, 12, 1)

VALID = {
    "dealerId": "germain-toyota-naples",
    "month": "2025-11",
    "channel": "google_organic",
    "impressions": "300000",
    "shareAISnippet": "0.35",
    "ctrBaseline": "0.055",
    "ctrDropWhenAI": "0.35",
    "leadCR": "0.04",
    "closeRate": "0.18",
    "avgGross": "2100",
    "recoverableShare": "0.45",
    "intentCluster": "service_price",
}
SNAKE = {HEADER_TO_FIELD[key]: value for key, value in VALID.items()}


def with_(**changes) -> dict:
    record = dict(VALID)
    for key, value in changes.items():
        if value is None:
            record.pop(key)
        else:
            record[key] = value
    return record


def check(record):
    return check_record(record, FIRST, LAST)


# months.parse_month ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2025-11", date(2025, 11, 1)),
        ("2025-11-01", date(2025, 11, 1)),
        ("2025-11-15", date(2025, 11, 1)),
        ("2025-12-31", date(2025, 12, 1)),
        ("2024-02-29", date(2024, 2, 1)),  # a leap day is a real day
        ("2000-02-29", date(2000, 2, 1)),  # divisible by 400: leap
        ("  2025-01  ", date(2025, 1, 1)),
        ("2025-01\n", date(2025, 1, 1)),
        ("0001-01", date(1, 1, 1)),
        ("9999-12-31", date(9999, 12, 1)),
    ],
)
def test_parse_month_accepts_and_snaps_to_the_first(text, expected):
    assert parse_month(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2025-02-30",
        "2025-02-29",  # not a leap year
        "1900-02-29",  # divisible by 100, not by 400
        "2025-04-31",
        "2025-13",
        "2025-00",
        "2025-11-00",
        "2025-11-32",
        "0000-01",
        "2025-1",
        "2025-11-1",
        "25-11",
        "202511",
        "2025/11",
        "2025-11-15T00:00:00",
        "2025-11-15 12:00",
        "Nov 2025",
        "2025-11x",
        "x2025-11",
        "+2025-11",
        "",
        "   ",
        "garbage",
        "٢٠٢٥-١١",  # Arabic-Indic digits: `\d` would match them, the contract says YYYY-MM
        "２０２５-１１",  # full-width digits
    ],
)
def test_parse_month_rejects(text):
    with pytest.raises(ValueError):
        parse_month(text)


def test_month_helpers():
    assert add_months(date(2025, 1, 1), -1) == date(2024, 12, 1)
    assert add_months(date(2025, 11, 1), 2) == date(2026, 1, 1)
    assert add_months(date(2025, 3, 1), -15) == date(2023, 12, 1)
    assert current_month(datetime(2025, 2, 28, 23, 59, tzinfo=timezone.utc)) == date(2025, 2, 1)


# contract.check_record -----------------------------------------------------------------------


def test_reason_codes_are_the_issue_codes():
    assert {reason.value for reason in Reason} == {
        "missing_field",
        "invalid_number",
        "out_of_range",
        "invalid_month",
        "month_out_of_range",
        "invalid_dealer_id",
        "duplicate_key_in_batch",
        "malformed_row",
    }


def test_valid_camel_case_record():
    assert check(VALID) is None
    event = RarEvent.model_validate(normalize_record(VALID), context={"first_month": FIRST, "last_month": LAST})
    assert event.dealer_id == "germain-toyota-naples"
    assert event.month == date(2025, 11, 1)
    assert event.impressions == 300000 and isinstance(event.impressions, int)
    assert event.share_ai_snippet == 0.35
    assert event.avg_gross == 2100.0
    assert event.intent_cluster == "service_price"


def test_valid_snake_case_record_gives_the_same_event():
    assert check(SNAKE) is None
    camel = RarEvent.model_validate(normalize_record(VALID))
    snake = RarEvent.model_validate(normalize_record(SNAKE))
    assert camel == snake


def test_mixed_spellings_and_unknown_keys_are_fine():
    record = {**{k: v for k, v in VALID.items() if k not in ("leadCR", "avgGross")}, "lead_cr": "0.04", "avg_gross": "2100"}
    record["utm_source"] = "whatever"
    assert check(record) is None
    assert "utm_source" not in normalize_record(record)


@pytest.mark.parametrize("intent", [None, "", "   "])
def test_intent_is_optional(intent):
    record = with_(intentCluster=intent) if intent is not None else with_(intentCluster=None)
    assert check(record) is None
    assert RarEvent.model_validate(normalize_record(record)).intent_cluster == ""


def test_values_are_trimmed_and_day_snapped():
    record = with_(dealerId="  demo-rooftop ", month=" 2025-11-15 ", channel=" chatgpt ", intentCluster=" hours ")
    assert check(record) is None
    event = RarEvent.model_validate(normalize_record(record))
    assert (event.dealer_id, event.month, event.channel, event.intent_cluster) == (
        "demo-rooftop",
        date(2025, 11, 1),
        "chatgpt",
        "hours",
    )


def test_numbers_from_json_types():
    record = with_(impressions=300000, shareAISnippet=0.35, avgGross=2100, ctrBaseline=0.055)
    assert check(record) is None
    assert check(with_(impressions=1.0)) is None
    assert check(with_(impressions=1.5)) == (Reason.INVALID_NUMBER, "impressions: '1.5' is not a whole number")
    assert check(with_(leadCR=float("nan")))[0] is Reason.INVALID_NUMBER
    assert check(with_(leadCR=True))[0] is Reason.INVALID_NUMBER


@pytest.mark.parametrize(
    "changes, reason, detail",
    [
        ({"avgGross": None}, Reason.MISSING_FIELD, "missing required field(s): avgGross"),
        ({"channel": "  ", "avgGross": None}, Reason.MISSING_FIELD, "missing required field(s): channel, avgGross"),
        ({"dealerId": "", "month": None}, Reason.MISSING_FIELD, "missing required field(s): dealerId, month"),
        # a missing field wins over any other problem of the row
        ({"leadCR": "abc", "month": None}, Reason.MISSING_FIELD, "missing required field(s): month"),
        ({"leadCR": "abc"}, Reason.INVALID_NUMBER, "leadCR: 'abc' is not a number"),
        ({"leadCR": "nan"}, Reason.INVALID_NUMBER, "leadCR: 'nan' is not a number"),
        ({"avgGross": "inf"}, Reason.INVALID_NUMBER, "avgGross: 'inf' is not a number"),
        ({"avgGross": "1_000"}, Reason.INVALID_NUMBER, "avgGross: '1_000' is not a number"),
        ({"avgGross": "0x10"}, Reason.INVALID_NUMBER, "avgGross: '0x10' is not a number"),
        ({"avgGross": "2,100"}, Reason.INVALID_NUMBER, "avgGross: '2,100' is not a number"),
        ({"impressions": "1.5"}, Reason.INVALID_NUMBER, "impressions: '1.5' is not a whole number"),
        ({"impressions": "1e-3"}, Reason.INVALID_NUMBER, "impressions: '1e-3' is not a whole number"),
        ({"impressions": "ten"}, Reason.INVALID_NUMBER, "impressions: 'ten' is not a number"),
        ({"impressions": "١٠"}, Reason.INVALID_NUMBER, "impressions: '١٠' is not a number"),
        ({"impressions": "-5"}, Reason.OUT_OF_RANGE, "impressions: '-5' is out of range (must be a whole number from 0 to 2^53)"),
        ({"impressions": "1e300"}, Reason.OUT_OF_RANGE, "impressions: '1e300' is out of range (must be a whole number from 0 to 2^53)"),
        ({"impressions": "1e999"}, Reason.OUT_OF_RANGE, "impressions: '1e999' is out of range (must be a whole number from 0 to 2^53)"),
        ({"closeRate": "1.01"}, Reason.OUT_OF_RANGE, "closeRate: '1.01' is out of range (must be between 0 and 1)"),
        ({"shareAISnippet": "-0.1"}, Reason.OUT_OF_RANGE, "shareAISnippet: '-0.1' is out of range (must be between 0 and 1)"),
        ({"avgGross": "-1"}, Reason.OUT_OF_RANGE, "avgGross: '-1' is out of range (must be ≥ 0)"),
        ({"avgGross": "1e999"}, Reason.OUT_OF_RANGE, "avgGross: '1e999' is out of range (must be ≥ 0)"),
        ({"month": "2025-13"}, Reason.INVALID_MONTH, "month: '2025-13' is not a month (use YYYY-MM or YYYY-MM-DD)"),
        ({"month": "2025-02-30"}, Reason.INVALID_MONTH, "month: '2025-02-30' is not a month (use YYYY-MM or YYYY-MM-DD)"),
        ({"month": "Nov-2025"}, Reason.INVALID_MONTH, "month: 'Nov-2025' is not a month (use YYYY-MM or YYYY-MM-DD)"),
        ({"month": "2023-12"}, Reason.MONTH_OUT_OF_RANGE, "month: '2023-12' is outside the accepted months 2024-01..2026-12"),
        ({"month": "2027-01-05"}, Reason.MONTH_OUT_OF_RANGE, "month: '2027-01-05' is outside the accepted months 2024-01..2026-12"),
        ({"dealerId": "germain toyota"}, Reason.INVALID_DEALER_ID, "dealerId: 'germain toyota' must be 1..128 characters of letters, digits, '.', '_' or '-'"),
        ({"dealerId": "dealer/1"}, Reason.INVALID_DEALER_ID, "dealerId: 'dealer/1' must be 1..128 characters of letters, digits, '.', '_' or '-'"),
        ({"dealerId": "{x}"}, Reason.INVALID_DEALER_ID, "dealerId: '{x}' must be 1..128 characters of letters, digits, '.', '_' or '-'"),
        ({"dealerId": "händler"}, Reason.INVALID_DEALER_ID, "dealerId: 'händler' must be 1..128 characters of letters, digits, '.', '_' or '-'"),
        ({"dealerId": "x" * 129}, Reason.INVALID_DEALER_ID, f"dealerId: {'x' * 40!r} must be 1..128 characters of letters, digits, '.', '_' or '-'"),
        # first failing field in contract order: dealer before month before numbers
        ({"dealerId": "a b", "month": "2025-13", "leadCR": "2"}, Reason.INVALID_DEALER_ID, "dealerId: 'a b' must be 1..128 characters of letters, digits, '.', '_' or '-'"),
        ({"month": "2025-13", "leadCR": "2"}, Reason.INVALID_MONTH, "month: '2025-13' is not a month (use YYYY-MM or YYYY-MM-DD)"),
        ({"impressions": "x", "leadCR": "2"}, Reason.INVALID_NUMBER, "impressions: 'x' is not a number"),
        ({"leadCR": "2", "closeRate": "x"}, Reason.OUT_OF_RANGE, "leadCR: '2' is out of range (must be between 0 and 1)"),
    ],
)
def test_every_row_reason(changes, reason, detail):
    assert check(with_(**changes)) == (reason, detail)
    snake = {HEADER_TO_FIELD[key]: value for key, value in with_(**changes).items()}
    assert check(snake) == (reason, detail)


@pytest.mark.parametrize(
    "changes",
    [
        {"impressions": "0"},
        {"impressions": "-0"},
        {"impressions": "+7"},
        {"impressions": "1.0"},
        {"impressions": "1e3"},
        {"impressions": str(2**53)},
        {"leadCR": "0"},
        {"leadCR": "1"},
        {"leadCR": ".5"},
        {"leadCR": "5e-1"},
        {"avgGross": "0"},
        {"avgGross": "1e12"},
        {"dealerId": "x" * 128},
        {"dealerId": "A.b_c-9"},
        {"month": "2024-01"},
        {"month": "2026-12-31"},
    ],
)
def test_boundaries_accepted(changes):
    assert check(with_(**changes)) is None


def test_month_window_is_inclusive_and_optional_in_the_model():
    assert check_record(with_(month="2024-01-31"), date(2024, 1, 1), date(2024, 1, 1)) is None
    assert check_record(with_(month="2024-02"), date(2024, 1, 1), date(2024, 1, 1))[0] is Reason.MONTH_OUT_OF_RANGE
    # without a window in the validation context, any real month is accepted
    assert RarEvent.model_validate(normalize_record(with_(month="1999-01"))).month == date(1999, 1, 1)


def test_every_field_has_both_spellings():
    for spec in FIELDS:
        assert HEADER_TO_FIELD[spec.alias] == spec.name
        assert HEADER_TO_FIELD[spec.name] == spec.name
    assert [spec.name for spec in FIELDS if not spec.required] == ["intent_cluster"]
