"""Alert candidates in `rar_alert_outbox` and their delivery, on SQLite and PostgreSQL.

Real batch files are loaded through `ingest_landing`, months are rebuilt with the monthly functions
inside `with write_connection(engine) as c, c.begin():` exactly as the assets do, and delivery posts
to a local HTTP server playing Slack (the `slack` fixture).
"""

from __future__ import annotations

import threading
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select, update

from rar_pipeline import alerts, monthly, seed
from rar_pipeline.ingest import ingest_landing
from rar_pipeline.slack import SlackWebhook
from rar_pipeline.warehouse.engine import write_connection
from rar_pipeline.warehouse.schema import (
    dealer_scores,
    rar_alert_outbox,
    rar_events,
    rar_intent_monthly,
    rar_monthly,
    rar_pressure,
    secondary_metrics,
)
from rar_pipeline_tests.fake_slack import SLACK_SECRET, Reply

OCT, NOV = date(2025, 10, 1), date(2025, 11, 1)
NOW = datetime(2025, 12, 2, 3, 0, tzinfo=timezone.utc)
CAP = 100_000.0
GERMAIN, LOU, DEMO = "germain-toyota-naples", "lou-grubbs-motors", "demo-rooftop"
GERMAIN_LINE = "germain-toyota-naples: $89,954 at risk; recoverable ~ $40,479 (pressure 0.90, trend up)"
# A digest that spans October and November names each line's month.
GERMAIN_NOV_LINE = GERMAIN_LINE.replace("germain-toyota-naples:", "germain-toyota-naples (2025-11):")
DATA_TABLES = (rar_events, rar_monthly, rar_intent_monthly, rar_pressure, secondary_metrics, dealer_scores)


# Helpers -------------------------------------------------------------------------------------------------
def load(engine, landing: Path, options, name: str, rows, header=seed.HEADER) -> None:
    seed.write_batch(landing / name, iter(rows), header=header)
    reports = ingest_landing(engine, landing, options, settle_seconds=0, max_files=10)
    assert [(report.file_name, report.status, report.rows_rejected) for report in reports] == [(name, "loaded", 0)], reports


def rebuild(engine, month: date, threshold: float = 0.6, now: datetime = NOW) -> int:
    """What rar/events → rar/monthly → rar/pressure do for one month; returns the alerts queued."""
    with write_connection(engine) as c, c.begin():
        monthly.lock_month(c, month)
        monthly.rebuild_events(c, month)
        rows = monthly.dealer_months(c, month)
        monthly.write_monthly(c, month, rows, True, now)
        monthly.write_intent_monthly(c, month, rows, True, now)
        monthly.rebuild_dealer_scores(c, now)
        monthly.rebuild_pressure(c, month, CAP, True, now)
        return alerts.write_alert_candidates(c, month, threshold, now)


def rerun_pressure(engine, month: date, threshold: float = 0.6) -> int:
    """Only the rar/pressure asset again (a retry of that step)."""
    with write_connection(engine) as c, c.begin():
        monthly.lock_month(c, month)
        monthly.rebuild_pressure(c, month, CAP, True, NOW)
        return alerts.write_alert_candidates(c, month, threshold, NOW)


def outbox(engine, **where) -> list[dict]:
    query = select(rar_alert_outbox).order_by(rar_alert_outbox.c.alert_id)
    for column, value in where.items():
        query = query.where(rar_alert_outbox.c[column] == value)
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(query).mappings()]


def snapshot(engine) -> dict:
    with engine.connect() as connection:
        return {
            table.name: sorted(tuple(str(value) for value in row) for row in connection.execute(select(table)))
            for table in DATA_TABLES
        }


def scaled(dealer_id: str, month: date, scale: float) -> list[list]:
    return [row for row in seed.demo_rows(month, scale=scale) if row[0] == dealer_id]


def webhook(url: str) -> SlackWebhook:
    return SlackWebhook(url, attempts=3, backoff_factor=0.01, retry_after_cap=1, timeout=(0.5, 0.5))


@pytest.fixture
def demo(engine, landing, load_options):
    """The demo files (2025-10 at 0.9 scale, 2025-11, the score snapshot) loaded and both months rebuilt."""
    load(engine, landing, load_options, "rar-demo-2025-10.csv", seed.demo_rows(OCT, scale=0.9))
    load(engine, landing, load_options, "rar-demo-2025-11.csv", seed.demo_rows())
    load(engine, landing, load_options, "rar-demo-scores-2025-11.csv", seed.demo_score_rows(), header=seed.SCORE_HEADER)
    assert rebuild(engine, OCT) == 1
    assert rebuild(engine, NOV) == 4
    return engine


# Candidates ---------------------------------------------------------------------------------------------------
def test_november_candidates_for_the_three_rooftops(demo):
    rows = {(row["kind"], row["dealer_id"]): row for row in outbox(demo, month=NOV)}

    assert set(rows) == {("pressure", GERMAIN), ("p0", GERMAIN), ("pressure", LOU), ("pressure", DEMO)}
    germain = rows[("pressure", GERMAIN)]
    assert germain["dedupe_key"] == "pressure:germain-toyota-naples:2025-11-01:0.80"
    assert (germain["level"], germain["p0"], germain["trend"]) == (0.8, "true", "up")
    assert germain["pressure"] == pytest.approx(0.8995417)
    assert (Decimal(germain["rar"]), Decimal(germain["recoverable"])) == (Decimal("89954.17"), Decimal("40479.38"))
    p0 = rows[("p0", GERMAIN)]
    assert p0["dedupe_key"] == "p0:germain-toyota-naples:2025-11-01"
    assert p0["fix_pack"] == [
        {"intent": "service_price", "rar": pytest.approx(30561.30), "actions": ["Add FAQ schema", "Sync GBP", "Fix schema"]},
        {"intent": "hours", "rar": pytest.approx(19958.40), "actions": ["Update business hours", "Sync GBP", "Add structured data"]},
        {"intent": "oil_change", "rar": pytest.approx(18770.88), "actions": ["Create service page", "Add FAQ", "Schema markup"]},
    ]
    # lou: zero-click coverage 0.40 from the snapshot (not > 0.45).
    assert (rows[("pressure", LOU)]["level"], rows[("pressure", LOU)]["p0"]) == (0.6, "false")
    # demo-rooftop: no coverage measured; zero-click falls back to the proxy 4422 / 14422 = 0.31, not > 0.45.
    assert (rows[("pressure", DEMO)]["level"], rows[("pressure", DEMO)]["p0"]) == (0.6, "false")
    assert all(row["status"] == "pending" and row["attempts"] == 0 and row["last_error"] is None for row in rows.values())
    # October: only germain (0.81) reaches the threshold; no snapshot that month, proxy 0.35 → not P0.
    (october,) = outbox(demo, month=OCT)
    assert (october["dealer_id"], october["kind"], october["level"], october["p0"]) == (GERMAIN, "pressure", 0.8, "false")


def test_p0_unknown_without_schema_coverage_and_the_zero_click_proxy(engine, landing, load_options):
    """A dealer with a high zero-click proxy: P0 true when the snapshot measures schema coverage, else unknown."""
    big = seed.demo_rows()  # the three rooftops, plus two dealers with 25,000 zero-click sessions
    heavy = [[name, "2025-11", "google_organic", 1_000_000, 0.5, 0.1, 0.5, 0.04, 0.18, 2100, 0.45, "hours"] for name in ("proxy-p0", "no-schema")]
    load(engine, landing, load_options, "nov.csv", [*big, *heavy])
    scores = [
        [GERMAIN, "2025-11", 85, 78, 72, 0.52, 0.61],
        ["proxy-p0", "2025-11", 80, 70, 60, "", 0.5],  # zero-click not measured → proxy 25000/35000 = 0.71
        ["no-schema", "2025-11", 80, 70, 60, 0.9, ""],  # schema not measured
    ]
    load(engine, landing, load_options, "scores.csv", scores, header=seed.SCORE_HEADER)

    rebuild(engine, NOV)

    rows = {(row["kind"], row["dealer_id"]): row for row in outbox(engine)}
    assert rows[("pressure", "proxy-p0")]["p0"] == "true"
    assert rows[("p0", "proxy-p0")]["fix_pack"] == [{"intent": "hours", "rar": pytest.approx(378000.0), "actions": ["Update business hours", "Sync GBP", "Add structured data"]}]
    assert rows[("pressure", "no-schema")]["p0"] == "unknown"
    assert ("p0", "no-schema") not in rows  # unknown is never a P0 alert
    assert rows[("pressure", "no-schema")]["level"] == 1.0
    assert rows[("p0", GERMAIN)]["p0"] == "true"
    report = alerts.deliver_pending(engine, None, NOW)
    assert "no-schema: $378,000 at risk" in report.digest["text"]
    assert "P0 unknown: schema coverage not measured" in report.digest["text"]


def test_a_p0_below_a_higher_alert_threshold_is_still_alerted(demo, engine, landing, load_options):
    """P0 is its own alert condition: with RAR_ALERT_THRESHOLD 0.95, germain (0.90, P0) still gets its P0 alert."""
    with write_connection(engine) as c, c.begin():
        c.execute(rar_alert_outbox.delete())

    assert rerun_pressure(engine, NOV, threshold=0.95) == 1

    (row,) = outbox(engine)
    assert (row["kind"], row["dealer_id"], row["p0"]) == ("p0", GERMAIN, "true")
    assert [item["intent"] for item in row["fix_pack"]] == ["service_price", "hours", "oil_change"]


# Dedupe ---------------------------------------------------------------------------------------------------------
def test_reruns_and_recomputes_never_alert_twice(demo, engine):
    before = outbox(engine)

    assert rerun_pressure(engine, NOV) == 0
    assert rerun_pressure(engine, NOV) == 0
    assert rebuild(engine, NOV) == 0  # a full recompute of the month
    assert rebuild(engine, OCT) == 0
    alerts.deliver_pending(engine, None, NOW)  # delivered (dry run) rows still count as alerted
    assert rebuild(engine, NOV) == 0

    assert [row["dedupe_key"] for row in outbox(engine)] == [row["dedupe_key"] for row in before]


def test_threshold_crossing_upward_alerts_again_at_the_higher_level_only(demo, engine, landing, load_options):
    assert [row["level"] for row in outbox(engine, dealer_id=LOU)] == [0.6]

    # A correction batch raises lou's RaR: 0.657 → 0.82, a new alert at 0.8.
    load(engine, landing, load_options, "lou-fix-1.csv", scaled(LOU, NOV, 1.25))
    assert rebuild(engine, NOV) == 1
    # A later correction lowers it to 0.72 (0.7 < the 0.8 already alerted): nothing.
    load(engine, landing, load_options, "lou-fix-2.csv", scaled(LOU, NOV, 1.1))
    assert rebuild(engine, NOV) == 0
    # Back under the threshold: nothing, and the earlier alerts stay.
    load(engine, landing, load_options, "lou-fix-3.csv", scaled(LOU, NOV, 0.5))
    assert rebuild(engine, NOV) == 0
    # Up to 0.95: a new alert at 0.9.
    load(engine, landing, load_options, "lou-fix-4.csv", scaled(LOU, NOV, 1.45))
    assert rebuild(engine, NOV) == 1

    rows = outbox(engine, dealer_id=LOU)
    assert [(row["level"], row["dedupe_key"]) for row in rows] == [
        (0.6, "pressure:lou-grubbs-motors:2025-11-01:0.60"),
        (0.8, "pressure:lou-grubbs-motors:2025-11-01:0.80"),
        (0.9, "pressure:lou-grubbs-motors:2025-11-01:0.90"),
    ]
    assert rows[1]["pressure"] == pytest.approx(0.82, abs=0.01) and rows[1]["p0"] == "false"
    assert len(outbox(engine)) == 7  # the other dealers were never re-alerted


# Delivery ---------------------------------------------------------------------------------------------------------
def test_delivery_posts_one_digest_for_all_dealers_and_marks_the_rows_sent(demo, engine, slack):
    hook = webhook(slack.url)
    report = alerts.deliver_pending(engine, hook.post, NOW)

    assert (report.status, report.dealers, report.alerts, report.error) == ("sent", 4, 5, None)
    (request,) = slack.requests
    text = request["json"]["text"]
    # October and November alerts share the digest, so each line names its month.
    assert text.splitlines()[1] == f"P0 {GERMAIN_NOV_LINE}"
    assert f"{GERMAIN} (2025-10):" in text
    assert all(name in text for name in (GERMAIN, LOU, DEMO))
    sections = [block for block in request["json"]["blocks"] if block["type"] == "section"]
    assert len(sections) == 4 and "Fix pack:" in sections[0]["text"]["text"]
    rows = outbox(engine)
    assert {row["status"] for row in rows} == {"sent"}
    assert all(row["attempts"] == 1 and row["last_error"] is None and row["delivered_at"] is not None for row in rows)

    # Nothing left: the next delivery sends nothing.
    assert alerts.deliver_pending(engine, hook.post, NOW + timedelta(hours=1)).status == "nothing_pending"
    assert len(slack.requests) == 1
    hook.close()


def test_delivery_of_one_month_leaves_the_others_queued(demo, engine, slack):
    hook = webhook(slack.url)
    report = alerts.deliver_pending(engine, hook.post, NOW, month=NOV)
    hook.close()

    assert (report.status, report.dealers, report.alerts) == ("sent", 3, 4)
    assert {row["status"] for row in outbox(engine, month=NOV)} == {"sent"}
    assert [row["status"] for row in outbox(engine, month=OCT)] == ["pending"]
    assert "Months: 2025-11" in str(slack.payloads[0]["blocks"])


def test_a_slack_outage_marks_rows_failed_leaves_the_data_alone_and_the_next_delivery_retries(demo, engine, slack):
    before = snapshot(engine)
    slack.script(then=500)
    hook = webhook(slack.url)

    report = alerts.deliver_pending(engine, hook.post, NOW)

    assert report.status == "failed" and report.error.startswith("HTTP 500")
    assert len(slack.requests) == 3  # the bounded attempts
    rows = outbox(engine)
    assert {row["status"] for row in rows} == {"failed"}
    assert all(row["attempts"] == 3 and row["delivered_at"] is None for row in rows)
    assert all(row["last_error"].startswith("HTTP 500") and SLACK_SECRET not in row["last_error"] for row in rows)
    assert snapshot(engine) == before  # ingestion and aggregates are untouched

    # Slack is back: the failed rows go out in the next digest.
    slack.script(then=200)
    report = alerts.deliver_pending(engine, hook.post, NOW + timedelta(hours=1))
    hook.close()

    assert (report.status, report.alerts) == ("sent", 5)
    assert len(slack.requests) == 4
    rows = outbox(engine)
    assert {row["status"] for row in rows} == {"sent"}
    assert all(row["attempts"] == 4 and row["last_error"] is None for row in rows)
    assert snapshot(engine) == before


def test_a_final_4xx_marks_rows_failed_after_one_attempt(demo, engine, slack):
    slack.script(Reply(404, body=f"no_service {slack.url}"))
    hook = webhook(slack.url)

    report = alerts.deliver_pending(engine, hook.post, NOW)
    hook.close()

    assert report.status == "failed" and len(slack.requests) == 1
    rows = outbox(engine)
    assert {(row["status"], row["attempts"]) for row in rows} == {("failed", 1)}
    assert all(row["last_error"].startswith("HTTP 404: no_service") and SLACK_SECRET not in row["last_error"] for row in rows)


def test_dry_run_renders_the_digest_and_marks_rows_dry_run(demo, engine, slack):
    report = alerts.deliver_pending(engine, None, NOW)

    assert (report.status, report.dealers, report.alerts) == ("dry_run", 4, 5)
    assert f"P0 {GERMAIN_NOV_LINE}" in report.digest["text"]
    assert slack.requests == []
    rows = outbox(engine)
    assert {(row["status"], row["attempts"]) for row in rows} == {("dry_run", 0)}
    assert alerts.deliver_pending(engine, None, NOW).status == "nothing_pending"
    counts, text = alerts.month_alerts(engine.connect(), NOV)
    assert counts == {"dry_run": 4} and GERMAIN_LINE in text


def test_a_stale_claim_is_retried_and_a_fresh_one_is_not(demo, engine, slack):
    """A delivery killed after claiming its rows leaves them `sending`; after 15 minutes they go out again."""
    ids = [row["alert_id"] for row in outbox(engine)]
    with write_connection(engine) as c, c.begin():
        c.execute(update(rar_alert_outbox).values(status="sent", delivered_at=NOW))
        c.execute(update(rar_alert_outbox).where(rar_alert_outbox.c.alert_id == ids[0]).values(status="sending", delivered_at=NOW - timedelta(minutes=20)))
        c.execute(update(rar_alert_outbox).where(rar_alert_outbox.c.alert_id == ids[1]).values(status="sending", delivered_at=NOW - timedelta(minutes=5)))
    hook = webhook(slack.url)

    report = alerts.deliver_pending(engine, hook.post, NOW)
    hook.close()

    assert (report.status, report.alerts) == ("sent", 1)
    statuses = {row["alert_id"]: row["status"] for row in outbox(engine)}
    assert statuses[ids[0]] == "sent" and statuses[ids[1]] == "sending"


def test_two_deliveries_at_once_never_send_an_alert_twice(demo, engine, slack):
    """Both start while another writer holds the outbox rows; only one may claim and send them."""
    slack.script(then=Reply(200, delay=0.2))
    reports = []

    def deliver():
        hook = webhook(slack.url)
        try:
            reports.append(alerts.deliver_pending(engine, hook.post, NOW))
        finally:
            hook.close()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    with write_connection(engine) as c, c.begin():
        c.execute(select(rar_alert_outbox.c.alert_id).with_for_update()).all()  # PostgreSQL row locks; SQLite: the write lock
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # both deliveries have read the outbox (or are waiting to)
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(report.status for report in reports) == ["nothing_pending", "sent"]
    assert len(slack.requests) == 1
    assert sum(report.alerts for report in reports) == 5
    assert {row["status"] for row in outbox(engine)} == {"sent"}
