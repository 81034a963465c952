"""The pure parts of `rar_pipeline.alerts`: the P0 rule, alert levels, fix packs, the Slack digest and
the failure notice (rar-domain.md, Alerts)."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from types import SimpleNamespace

import pytest

from rar_pipeline.alerts import (
    DEFAULT_PLAYBOOK,
    MAX_BLOCKS,
    MAX_SECTION_CHARS,
    PLAYBOOKS,
    DealerAlert,
    alert_level,
    escape,
    failure_text,
    fix_pack,
    group_by_dealer,
    p0_status,
    render_digest,
)

NOV = date(2025, 11, 1)
GERMAIN_LINE = "germain-toyota-naples: $89,954 at risk; recoverable ~ $40,479 (pressure 0.90, trend up)"
GERMAIN_TOP = [
    {"intent": "service_price", "rar": 30561.30},
    {"intent": "hours", "rar": 19958.40},
    {"intent": "oil_change", "rar": 18770.88},
    {"intent": "dealer_near_me", "rar": 11692.30},
    {"intent": "tire_rotation", "rar": 8971.30},
]


def dealer(dealer_id="d", pressure=0.7, rar="70000", recoverable="31500", trend="stable", p0="false", pack=None, month=NOV):
    return DealerAlert(dealer_id, month, pressure, Decimal(rar), Decimal(recoverable), trend, p0, pack or [])


def sections(digest: dict) -> list[str]:
    return [block["text"]["text"] for block in digest["blocks"] if block["type"] == "section"]


def contexts(digest: dict) -> list[str]:
    return [element["text"] for block in digest["blocks"] if block["type"] == "context" for element in block["elements"]]


# P0 ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pressure", "zero_click", "schema", "expected"),
    [
        (0.90, 0.52, 0.61, "true"),  # germain-toyota-naples
        (0.6000001, 0.4500001, 0.6999999, "true"),  # just inside every strict bound
        (0.60, 0.52, 0.61, "false"),  # pressure exactly 0.6 is not > 0.6
        (0.59, 0.52, 0.61, "false"),
        (0.90, 0.45, 0.61, "false"),  # zero-click exactly 0.45 is not > 0.45
        (0.90, 0.40, 0.75, "false"),  # lou-grubbs-motors
        (0.90, 0.52, 0.70, "false"),  # schema exactly 0.70 is not < 0.70
        (0.90, 0.52, 0.95, "false"),
        (0.90, 0.52, None, "unknown"),  # schema coverage not measured: never silently true
        (1.00, 0.99, None, "unknown"),
        (0.60, 0.52, None, "false"),  # not P0 on pressure alone, whatever the schema
        (0.90, 0.45, None, "false"),
        (0.90, None, 0.10, "false"),
        (float("nan"), 0.9, 0.1, "false"),
    ],
)
def test_p0_status_is_strict_on_every_bound(pressure, zero_click, schema, expected):
    assert p0_status(pressure, zero_click, schema) == expected


def test_p0_is_never_true_without_a_schema_coverage():
    for pressure in (0.61, 0.75, 0.9, 1.0):
        for zero_click in (0.0, 0.46, 0.9, 1.0):
            assert p0_status(pressure, zero_click, None) != "true"


# Levels ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pressure", "threshold", "level"),
    [
        (0.6, 0.6, 0.6), (0.65, 0.6, 0.6), (0.6999999, 0.6, 0.6), (0.7, 0.6, 0.7), (0.82, 0.6, 0.8),
        (0.8995417, 0.6, 0.8), (0.9, 0.6, 0.9), (0.99, 0.6, 0.9), (1.0, 0.6, 1.0),
        (0.66, 0.65, 0.65), (0.72, 0.65, 0.7), (0.3, 0.6, 0.6),
    ],
)  # fmt: skip
def test_alert_level_is_the_tenth_at_or_below_the_pressure_never_below_the_threshold(pressure, threshold, level):
    assert alert_level(pressure, threshold) == pytest.approx(level)
    assert alert_level(pressure, threshold) >= threshold


# Fix packs ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("intent", "actions"),
    [
        ("service_price", ["Add FAQ schema", "Sync GBP", "Fix schema"]),
        ("hours", ["Update business hours", "Sync GBP", "Add structured data"]),
        ("oil_change", ["Create service page", "Add FAQ", "Schema markup"]),
        ("tire_rotation", ["Create service page", "Add FAQ", "Schema markup"]),
        ("dealer_near_me", ["Optimize GBP", "Location schema", "NAP consistency"]),
        ("ev_inventory_search", ["Add FAQ", "Sync GBP", "Fix schema"]),
        ("", ["Add FAQ", "Sync GBP", "Fix schema"]),
    ],
)
def test_each_intent_gets_its_playbook_and_any_other_the_default(intent, actions):
    assert fix_pack([{"intent": intent, "rar": 10.0}]) == [{"intent": intent, "rar": 10.0, "actions": actions}]


def test_fix_pack_is_the_top_three_losing_intents_in_order():
    pack = fix_pack(GERMAIN_TOP)

    assert [(item["intent"], item["rar"]) for item in pack] == [("service_price", 30561.30), ("hours", 19958.40), ("oil_change", 18770.88)]
    assert [item["actions"] for item in pack] == [list(PLAYBOOKS[name]) for name in ("service_price", "hours", "oil_change")]
    assert fix_pack(GERMAIN_TOP[:2]) == fix_pack(GERMAIN_TOP)[:2]
    assert fix_pack([]) == []
    assert list(DEFAULT_PLAYBOOK) == ["Add FAQ", "Sync GBP", "Fix schema"]


# The dealer line ---------------------------------------------------------------------------------------------
def test_dealer_line_matches_the_spec_format():
    germain = dealer("germain-toyota-naples", 0.8995417, "89954.17", "40479.38", "up")

    assert germain.line() == GERMAIN_LINE


def test_dealer_line_uses_thousands_separators_and_marks_p0_and_unknown():
    assert dealer("big", 1.0, "1234567.89", "555555.55", "down").line() == (
        "big: $1,234,568 at risk; recoverable ~ $555,556 (pressure 1.00, trend down)"
    )
    assert dealer("g", p0="true").line().startswith("P0 g: $70,000 at risk")
    unknown = dealer("u", p0="unknown").line()
    assert unknown.startswith("u: $70,000 at risk") and "P0 unknown" in unknown and not unknown.startswith("P0")


# Grouping and order ------------------------------------------------------------------------------------------
def outbox_row(alert_id, dealer_id, pressure, kind="pressure", p0="false", pack=None, month=NOV):
    return SimpleNamespace(
        alert_id=alert_id, kind=kind, dealer_id=dealer_id, month=month, pressure=pressure, rar=Decimal(str(pressure * 100000)),
        recoverable=Decimal(str(pressure * 45000)), trend="up", p0=p0, fix_pack=pack or [],
    )  # fmt: skip


def test_group_by_dealer_merges_a_dealers_pressure_and_p0_alerts_and_puts_p0s_first():
    pack = fix_pack(GERMAIN_TOP)
    rows = [
        outbox_row(1, "lou", 0.66),
        outbox_row(2, "germain", 0.90, p0="true"),
        outbox_row(3, "germain", 0.90, kind="p0", p0="true", pack=pack),
        outbox_row(4, "zed", 0.95),
        outbox_row(5, "amy", 0.66),
        outbox_row(6, "lou", 0.81),  # a later, higher level of the same month
    ]

    alerts = group_by_dealer(rows)

    assert [(alert.dealer_id, alert.pressure) for alert in alerts] == [
        ("germain", 0.90), ("zed", 0.95), ("lou", 0.81), ("amy", 0.66),
    ]  # fmt: skip
    germain = alerts[0]
    assert germain.is_p0 and germain.fix_pack == pack and sorted(germain.alert_ids) == [2, 3]
    assert sorted(alerts[2].alert_ids) == [1, 6]


# The digest ------------------------------------------------------------------------------------------------------
def test_digest_of_the_three_rooftops():
    alerts = [
        dealer("lou-grubbs-motors", 0.6566712, "65667.12", "29550.20", "up"),
        dealer("germain-toyota-naples", 0.8995417, "89954.17", "40479.38", "up", "true", fix_pack(GERMAIN_TOP)),
        dealer("demo-rooftop", 0.6527278, "65272.78", "29372.75", "up"),
    ]
    alerts.sort(key=lambda a: (not a.is_p0, -a.pressure, a.dealer_id))

    digest = render_digest(alerts)

    assert digest["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": "Revenue at Risk: 3 dealers need attention (1 P0)"}}
    assert contexts(digest) == ["Months: 2025-11"]
    first, second, third = sections(digest)
    assert first.startswith(f"*P0 {GERMAIN_LINE}*\nFix pack:\n")
    assert "• service_price ($30,561): Add FAQ schema, Sync GBP, Fix schema" in first
    assert "• hours ($19,958): Update business hours, Sync GBP, Add structured data" in first
    assert "• oil_change ($18,771): Create service page, Add FAQ, Schema markup" in first
    assert "dealer_near_me" not in first
    assert second.startswith("lou-grubbs-motors: $65,667 at risk") and third.startswith("demo-rooftop: $65,273 at risk")
    lines = digest["text"].splitlines()
    assert lines[0] == "Revenue at Risk: 3 dealers need attention (1 P0)"
    assert lines[1] == f"P0 {GERMAIN_LINE}"
    assert [line.split(":")[0] for line in lines[2:]] == ["lou-grubbs-motors", "demo-rooftop"]


@pytest.mark.parametrize(("count", "shown", "more"), [(1, 1, None), (47, 47, None), (48, 48, None), (49, 47, 2), (200, 47, 153)])
def test_digest_stays_within_slacks_block_limit_and_summarizes_the_rest(count, shown, more):
    alerts = [dealer(f"dealer-{index:04d}", 1.0 - index / 1000, p0="true" if index < 3 else "false") for index in range(count)]

    digest = render_digest(alerts)

    assert len(digest["blocks"]) <= MAX_BLOCKS
    assert len(sections(digest)) == shown
    assert sections(digest)[0].startswith("*P0 dealer-0000")
    more_lines = [text for text in contexts(digest) if "more dealers" in text]
    assert more_lines == ([f"+{more} more dealers"] if more else [])
    assert len(digest["text"]) <= MAX_SECTION_CHARS
    if count > 20:
        assert digest["text"].endswith(f"+{count - 20} more dealers")
    assert all(len(text) <= MAX_SECTION_CHARS for text in sections(digest) + contexts(digest))
    assert len(digest["blocks"][0]["text"]["text"]) <= 150  # Slack's header limit
    if count == 1:
        assert digest["blocks"][0]["text"]["text"] == "Revenue at Risk: 1 dealer needs attention (1 P0)"


def test_a_huge_section_is_capped_at_3000_characters():
    pack = [{"intent": "x" * 2500 + str(index), "rar": 1.0, "actions": ["Add FAQ"]} for index in range(3)]
    alerts = [dealer("huge", 0.9, p0="true", pack=pack)]

    (text,) = sections(render_digest(alerts))

    assert len(text) == MAX_SECTION_CHARS and text.endswith("…")


def test_escaping_of_slack_control_characters():
    assert escape("a & b < c > d") == "a &amp; b &lt; c &gt; d"
    assert escape("&amp;") == "&amp;amp;"


@pytest.mark.parametrize(
    "hostile",
    ["<!channel>", "<!here>", "<!everyone>", "<!subteam^S123>", "<@U12345>", "<#C123>", "@here @channel", "<https://evil.example|click>"],
)
def test_data_cannot_mention_anyone_or_inject_links(hostile):
    pack = [{"intent": hostile, "rar": 1000.0, "actions": list(DEFAULT_PLAYBOOK)}]
    alerts = [
        dealer(hostile, 0.95, p0="true", pack=pack),
        dealer(f"x{hostile}y", 0.9, p0="unknown", trend=hostile),
    ]

    digest = render_digest(alerts)
    raw = json.dumps(digest, ensure_ascii=False)

    assert "<!" not in raw and "<@" not in raw and "<#" not in raw and "<http" not in raw
    assert "link_names" not in digest  # plain "@here" text stays text without link_names
    assert escape(hostile) in sections(digest)[0]


# Failure notices -----------------------------------------------------------------------------------------------
def test_failure_text_is_one_message_with_job_partition_step_first_error_line_and_link():
    text = failure_text(
        "rar_monthly_job", "2025-11-01", "rar__events", "Failure: cannot reach the warehouse\n  File x.py line 3\nmore",
        "http://dagster.example:3000/runs/abc",
    )

    assert text.splitlines() == [
        ":rotating_light: RaR pipeline run failed: rar_monthly_job [2025-11-01], step rar__events",
        "Failure: cannot reach the warehouse",
        "<http://dagster.example:3000/runs/abc|Open the run>",
    ]


def test_failure_text_without_partition_step_or_link_and_with_hostile_error():
    text = failure_text("rar_ingest_job", None, None, "<!channel> " + "e" * 1000, None)

    lines = text.splitlines()
    assert lines[0] == ":rotating_light: RaR pipeline run failed: rar_ingest_job"
    assert len(lines) == 2 and lines[1].startswith("&lt;!channel&gt; ") and len(lines[1]) < 320
    assert "<!" not in text


@pytest.mark.parametrize("error", ["", None, "   ", "\n\n"])
def test_failure_text_with_an_empty_error_says_unknown_error(error):
    text = failure_text("rar_monthly_job", "2025-11-01", "rar__events", error, None)

    assert text.splitlines()[1] == "unknown error"
