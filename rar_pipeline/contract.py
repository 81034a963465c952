"""The RaR event contract: one row = one dealer × month × channel × intent.

`RarEvent` (pydantic) is the contract and the reference validator. The loader validates whole
chunks at once with the vectorised rules in `validation.py`, which are built from the same
`FIELDS` table and pattern constants below; a property test holds the two to the same verdicts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo
from pydantic_core import PydanticCustomError

from rar_pipeline.months import parse_month


class Reason(StrEnum):
    """Machine-readable reasons a row is rejected, in the order a row is checked."""

    MALFORMED_ROW = "malformed_row"
    MISSING_FIELD = "missing_field"
    INVALID_NUMBER = "invalid_number"
    OUT_OF_RANGE = "out_of_range"
    INVALID_MONTH = "invalid_month"
    MONTH_OUT_OF_RANGE = "month_out_of_range"
    INVALID_DEALER_ID = "invalid_dealer_id"
    DUPLICATE_KEY_IN_BATCH = "duplicate_key_in_batch"


# Plain decimal or scientific notation; NaN, inf, hex and `1_000` are not numbers here.
# ASCII digits only: Python's `\d` also matches other scripts' digits, which Arrow's RE2 `\d` does not.
NUMBER_PATTERN = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
DEALER_ID_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
# Impressions above 2**53 would lose precision as float64 in the RaR arithmetic.
MAX_IMPRESSIONS = 2**53


@dataclass(frozen=True)
class FieldSpec:
    name: str  # warehouse column
    alias: str  # the established CSV template / API name
    kind: str  # "dealer_id" | "month" | "text" | "integer" | "number" | "optional_text"
    low: float | None = None
    high: float | None = None
    optional: bool = False  # a blank value is allowed (stored as NULL, or "" for optional_text)

    @property
    def required(self) -> bool:
        return self.kind != "optional_text" and not self.optional


FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("dealer_id", "dealerId", "dealer_id"),
    FieldSpec("month", "month", "month"),
    FieldSpec("channel", "channel", "text"),
    FieldSpec("impressions", "impressions", "integer", 0, MAX_IMPRESSIONS),
    FieldSpec("share_ai_snippet", "shareAISnippet", "number", 0, 1),
    FieldSpec("ctr_baseline", "ctrBaseline", "number", 0, 1),
    FieldSpec("ctr_drop_when_ai", "ctrDropWhenAI", "number", 0, 1),
    FieldSpec("lead_cr", "leadCR", "number", 0, 1),
    FieldSpec("close_rate", "closeRate", "number", 0, 1),
    FieldSpec("avg_gross", "avgGross", "number", 0, None),
    FieldSpec("recoverable_share", "recoverableShare", "number", 0, 1),
    FieldSpec("intent_cluster", "intentCluster", "optional_text"),
)
FIELD_BY_NAME = {spec.name: spec for spec in FIELDS}
NATURAL_KEY = ("dealer_id", "month", "channel", "intent_cluster")

SCORE_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("dealer_id", "dealerId", "dealer_id"),
    FieldSpec("month", "month", "month"),
    FieldSpec("aiv", "aiv", "number", 0, 100),
    FieldSpec("ati", "ati", "number", 0, 100),
    FieldSpec("qai", "qai", "number", 0, 100),
    FieldSpec("zero_click_coverage", "zeroClickCoverage", "number", 0, 1, optional=True),
    FieldSpec("schema_coverage", "schemaCoverage", "number", 0, 1, optional=True),
)
FIELD_BY_NAME.update({spec.name: spec for spec in SCORE_FIELDS})


def _header_map(fields: tuple[FieldSpec, ...]) -> dict[str, str]:
    # Both spellings are accepted as headers/keys.
    return {**{spec.alias: spec.name for spec in fields}, **{spec.name: spec.name for spec in fields}}


HEADER_TO_FIELD: dict[str, str] = _header_map(FIELDS)


def range_text(spec: FieldSpec) -> str:
    if spec.kind == "integer":
        return f"a whole number from {spec.low:g} to 2^53"
    if spec.high is None:
        return f"≥ {spec.low:g}"
    return f"between {spec.low:g} and {spec.high:g}"


def describe(reason: Reason, spec: FieldSpec, text: str | None, first_month: date | None = None, last_month: date | None = None) -> str:
    """The human-readable detail stored beside a rejected row's reason code."""
    shown = repr((text or "")[:40])
    if reason is Reason.INVALID_NUMBER:
        whole = spec.kind == "integer" and re.match(NUMBER_PATTERN, text or "")
        return f"{spec.alias}: {shown} is not a {'whole ' if whole else ''}number"
    if reason is Reason.OUT_OF_RANGE:
        return f"{spec.alias}: {shown} is out of range (must be {range_text(spec)})"
    if reason is Reason.INVALID_MONTH:
        return f"month: {shown} is not a month (use YYYY-MM or YYYY-MM-DD)"
    if reason is Reason.MONTH_OUT_OF_RANGE:
        return f"month: {shown} is outside the accepted months {first_month:%Y-%m}..{last_month:%Y-%m}"
    if reason is Reason.INVALID_DEALER_ID:
        return f"dealerId: {shown} must be 1..128 characters of letters, digits, '.', '_' or '-'"
    return f"{spec.alias}: {shown} {reason.value}"


def _reject(reason: Reason, spec: FieldSpec, text: str, context: dict | None = None) -> PydanticCustomError:
    context = context or {}
    detail = describe(reason, spec, text, context.get("first_month"), context.get("last_month"))
    # The detail goes in as a context value: a `{` in user data must not be read as a template.
    return PydanticCustomError(reason.value, "{detail}", {"detail": detail})


def _check_number(spec: FieldSpec, value: Any) -> float:
    text = str(value).strip()
    if not re.match(NUMBER_PATTERN, text):
        raise _reject(Reason.INVALID_NUMBER, spec, text)
    number = float(text)
    if spec.kind == "integer" and math.isfinite(number) and number != math.floor(number):
        raise _reject(Reason.INVALID_NUMBER, spec, text)
    if not math.isfinite(number) or (spec.low is not None and number < spec.low) or (spec.high is not None and number > spec.high):
        raise _reject(Reason.OUT_OF_RANGE, spec, text)
    return number


def _numeric(name: str):
    spec = FIELD_BY_NAME[name]
    return BeforeValidator(lambda value: _check_number(spec, value))


def _dealer_id(value: Any) -> str:
    text = str(value).strip()
    if not re.match(DEALER_ID_PATTERN, text):
        raise _reject(Reason.INVALID_DEALER_ID, FIELD_BY_NAME["dealer_id"], text)
    return text


def _month(value: Any, info: ValidationInfo) -> date:
    text = str(value).strip()
    try:
        month = parse_month(text)
    except ValueError:
        raise _reject(Reason.INVALID_MONTH, FIELD_BY_NAME["month"], text) from None
    window = info.context or {}
    first, last = window.get("first_month"), window.get("last_month")
    if (first and month < first) or (last and month > last):
        raise _reject(Reason.MONTH_OUT_OF_RANGE, FIELD_BY_NAME["month"], text, window)
    return month


def _text(value: Any) -> str:
    return str(value).strip()


class RarEvent(BaseModel):
    """One validated event. Month-window checks need `context={"first_month": d, "last_month": d}`."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    dealer_id: Annotated[str, BeforeValidator(_dealer_id)] = Field(alias="dealerId")
    month: Annotated[date, BeforeValidator(_month)]
    channel: Annotated[str, BeforeValidator(_text)]
    impressions: Annotated[int, _numeric("impressions")]
    share_ai_snippet: Annotated[float, _numeric("share_ai_snippet")] = Field(alias="shareAISnippet")
    ctr_baseline: Annotated[float, _numeric("ctr_baseline")] = Field(alias="ctrBaseline")
    ctr_drop_when_ai: Annotated[float, _numeric("ctr_drop_when_ai")] = Field(alias="ctrDropWhenAI")
    lead_cr: Annotated[float, _numeric("lead_cr")] = Field(alias="leadCR")
    close_rate: Annotated[float, _numeric("close_rate")] = Field(alias="closeRate")
    avg_gross: Annotated[float, _numeric("avg_gross")] = Field(alias="avgGross")
    recoverable_share: Annotated[float, _numeric("recoverable_share")] = Field(alias="recoverableShare")
    intent_cluster: Annotated[str, BeforeValidator(_text)] = Field(default="", alias="intentCluster")


class DealerScore(BaseModel):
    """One dealer's base AI scores for a month (a dealer-score file row)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    dealer_id: Annotated[str, BeforeValidator(_dealer_id)] = Field(alias="dealerId")
    month: Annotated[date, BeforeValidator(_month)]
    aiv: Annotated[float, _numeric("aiv")]
    ati: Annotated[float, _numeric("ati")]
    qai: Annotated[float, _numeric("qai")]
    zero_click_coverage: Annotated[float | None, _numeric("zero_click_coverage")] = Field(default=None, alias="zeroClickCoverage")
    schema_coverage: Annotated[float | None, _numeric("schema_coverage")] = Field(default=None, alias="schemaCoverage")


@dataclass(frozen=True)
class Contract:
    """What one kind of batch file holds: its fields, natural key, reference model and raw table."""

    kind: str
    fields: tuple[FieldSpec, ...]
    natural_key: tuple[str, ...]
    model: type[BaseModel]
    raw_table: str

    @property
    def header_to_field(self) -> dict[str, str]:
        return _header_map(self.fields)


EVENTS = Contract("events", FIELDS, NATURAL_KEY, RarEvent, "rar_raw_events")
DEALER_SCORES = Contract("dealer_scores", SCORE_FIELDS, ("dealer_id", "month"), DealerScore, "rar_raw_dealer_scores")


def contract_for_columns(names) -> Contract:
    """A file whose header (or first JSON object) has an `aiv` column holds dealer scores; else events."""
    return DEALER_SCORES if "aiv" in {str(name).strip() for name in names} else EVENTS


def normalize_record(record: Mapping[str, Any], contract: Contract = EVENTS) -> dict[str, str]:
    """Map header names to fields and drop blank values, so a blank cell counts as missing."""
    header_to_field = contract.header_to_field
    out: dict[str, str] = {}
    for key, value in record.items():
        name = header_to_field.get(key)
        if name is None or value is None:
            continue
        text = value if isinstance(value, str) else str(value)
        if text.strip():
            out[name] = text
    return out


def check_record(
    record: Mapping[str, Any], first_month: date, last_month: date, contract: Contract = EVENTS
) -> tuple[Reason, str] | None:
    """The reference verdict for one record: None when valid, else (reason, detail) of the first failing field."""
    values = normalize_record(record, contract)
    missing = [spec.alias for spec in contract.fields if spec.required and spec.name not in values]
    if missing:
        return Reason.MISSING_FIELD, f"missing required field(s): {', '.join(missing)}"
    try:
        contract.model.model_validate(values, context={"first_month": first_month, "last_month": last_month})
    except ValidationError as error:
        order = {spec.name: index for index, spec in enumerate(contract.fields)}
        first = min(error.errors(), key=lambda e: order.get(str(e["loc"][0]), len(order)))
        return Reason(first["type"]), first["ctx"]["detail"]
    return None
