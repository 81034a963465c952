"""Loading landing files into the warehouse, exactly once (every test runs on SQLite and PostgreSQL)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from rar_pipeline import ingest
from rar_pipeline.ingest import ingest_landing
from rar_pipeline.ledger import reconcile_batches
from rar_pipeline.seed import DEMO_MONTH, HEADER, demo_rows, write_batch
from rar_pipeline.warehouse.schema import rar_batches, rar_raw_events, rar_rejected_rows

HEAD = ",".join(HEADER)
SETTLED = time.time() - 3600


def land(landing: Path, name: str, data: bytes | str, age: float = 0) -> Path:
    """Put a complete file in the landing folder (written aside, renamed in, already settled)."""
    path = landing / name
    partial = landing / f".{name}.tmp"
    partial.write_bytes(data.encode() if isinstance(data, str) else data)
    os.utime(partial, (SETTLED - age, SETTLED - age))
    partial.replace(path)
    return path


def demo_csv(scale: float = 1.0) -> str:
    lines = [HEAD] + [",".join(map(str, row)) for row in demo_rows(DEMO_MONTH, scale)]
    return "\n".join(lines) + "\n"


def row(dealer: str = "demo-rooftop", month: str = "2025-11", intent: str = "hours", **changes) -> str:
    values = dict(zip(HEADER, [dealer, month, "google_organic", "150000", "0.34", "0.055", "0.31", "0.04", "0.18", "2050", "0.45", intent]))
    values.update(changes)
    return ",".join(values[name] for name in HEADER)


def valid_rows(count: int, dealer: str = "bulk-dealer") -> list[str]:
    return [row(dealer, intent=f"intent-{index}") for index in range(count)]


def run(engine, landing, options, **kwargs):
    return ingest_landing(engine, landing, options, kwargs.pop("settle_seconds", 0), kwargs.pop("max_files", 100))


def query(engine, statement):
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(statement)]


def ledger(engine) -> list[dict]:
    return query(engine, select(rar_batches).order_by(rar_batches.c.batch_id))


def raw_rows(engine, batch_id=None) -> list[dict]:
    statement = select(rar_raw_events).order_by(rar_raw_events.c.batch_id, rar_raw_events.c.line_no)
    if batch_id is not None:
        statement = statement.where(rar_raw_events.c.batch_id == batch_id)
    return query(engine, statement)


def rejected_rows(engine, batch_id=None) -> list[dict]:
    statement = select(rar_rejected_rows).order_by(rar_rejected_rows.c.batch_id, rar_rejected_rows.c.line_no)
    if batch_id is not None:
        statement = statement.where(rar_rejected_rows.c.batch_id == batch_id)
    return query(engine, statement)


def count(engine, table) -> int:
    return query(engine, select(func.count().label("n")).select_from(table))[0]["n"]


def landing_files(landing: Path) -> list[str]:
    return sorted(path.name for path in landing.iterdir() if path.is_file())


def archived(landing: Path, folder: str) -> list[str]:
    target = landing / folder
    return sorted(path.name for path in target.iterdir()) if target.exists() else []


def assert_ledger_agrees_with_tables(engine):
    batches = ledger(engine)
    with engine.connect() as connection:
        assert reconcile_batches(connection, [b["batch_id"] for b in batches]) == []
    raw_by_batch = Counter(r["batch_id"] for r in raw_rows(engine))
    rejects = rejected_rows(engine)
    rejected_by_batch = Counter(r["batch_id"] for r in rejects)
    for batch in batches:
        batch_id = batch["batch_id"]
        assert batch["rows_accepted"] == raw_by_batch.get(batch_id, 0)
        assert batch["rows_rejected"] == rejected_by_batch.get(batch_id, 0)
        assert batch["rows_read"] == batch["rows_accepted"] + batch["rows_rejected"]
        reasons = Counter(r["reason"] for r in rejects if r["batch_id"] == batch_id)
        assert json.loads(batch["rejected_by_reason"] or "{}") == dict(reasons)
    assert sum(raw_by_batch.values()) == sum(b["rows_accepted"] for b in batches if b["status"] == "loaded")


# the happy path ---------------------------------------------------------------------------------------


def test_three_demo_rooftops_load_15_rows(engine, landing, load_options):
    assert write_batch(landing / "demo.csv", demo_rows()) == 15
    (report,) = run(engine, landing, load_options)
    assert (report.file_name, report.status) == ("demo.csv", "loaded")
    assert (report.rows_read, report.rows_accepted, report.rows_rejected) == (15, 15, 0)
    assert report.rejected_by_reason == {} and report.months == ["2025-11-01"]

    rows = raw_rows(engine)
    assert len(rows) == 15
    assert [r["line_no"] for r in rows] == list(range(2, 17))
    assert {r["batch_id"] for r in rows} == {report.batch_id}
    assert Counter(r["dealer_id"] for r in rows) == {"germain-toyota-naples": 5, "lou-grubbs-motors": 5, "demo-rooftop": 5}
    first = rows[0]
    assert first["dealer_id"] == "germain-toyota-naples" and first["intent_cluster"] == "service_price"
    assert first["month"] == date(2025, 11, 1)
    assert first["impressions"] == 300000
    assert (first["share_ai_snippet"], first["ctr_baseline"], first["ctr_drop_when_ai"]) == (0.35, 0.055, 0.35)
    assert (first["lead_cr"], first["close_rate"], first["avg_gross"], first["recoverable_share"]) == (0.04, 0.18, 2100.0, 0.45)
    assert len({(r["dealer_id"], r["month"], r["channel"], r["intent_cluster"]) for r in rows}) == 15
    assert rejected_rows(engine) == []

    (batch,) = ledger(engine)
    assert batch["status"] == "loaded" and batch["reason"] is None
    assert (batch["file_name"], batch["file_format"], batch["rows_read"], batch["rows_accepted"]) == ("demo.csv", "csv", 15, 15)
    assert batch["size_bytes"] == len(demo_csv().encode())
    assert json.loads(batch["months"]) == ["2025-11-01"]
    assert json.loads(batch["unknown_columns"]) == []
    assert batch["archived_as"] == report.archived_as
    assert Path(batch["archived_as"]).parent == landing / ".processed"
    assert Path(batch["archived_as"]).read_text() == demo_csv()
    assert landing_files(landing) == []
    # nothing left to do
    assert run(engine, landing, load_options) == []
    assert count(engine, rar_raw_events) == 15


@pytest.mark.parametrize("name", ["demo.jsonl", "demo.csv.gz", "demo.jsonl.gz"])
def test_other_formats_load_the_same_rows(engine, landing, load_options, name, tmp_path):
    kind = "jsonl" if ".jsonl" in name else "csv"
    plain = tmp_path / f"plain.{kind}"
    write_batch(plain, demo_rows(), kind)
    data = plain.read_bytes()
    land(landing, name, gzip.compress(data) if name.endswith(".gz") else data)
    (report,) = run(engine, landing, load_options)
    assert (report.status, report.rows_accepted) == ("loaded", 15)
    assert ledger(engine)[0]["file_format"] == kind + (".gz" if name.endswith(".gz") else "")
    rows = raw_rows(engine)
    assert [r["line_no"] for r in rows] == list(range(1 if kind == "jsonl" else 2, 16 if kind == "jsonl" else 17))
    assert sorted((r["dealer_id"], r["intent_cluster"], r["impressions"]) for r in rows) == sorted(
        (d, i, imp) for d, _, _, imp, *_, i in demo_rows()
    )


def test_files_still_being_written_wait(engine, landing, load_options):
    path = landing / "growing.csv"
    path.write_text(demo_csv())
    assert run(engine, landing, load_options, settle_seconds=3600) == []
    assert landing_files(landing) == ["growing.csv"] and ledger(engine) == []


def test_max_files_bounds_a_run(engine, landing, load_options):
    for index in range(3):
        land(landing, f"f{index}.csv", f"{HEAD}\n{row(f'd{index}')}\n", age=10 - index)
    assert [r.file_name for r in run(engine, landing, load_options, max_files=2)] == ["f0.csv", "f1.csv"]
    assert [r.file_name for r in run(engine, landing, load_options, max_files=2)] == ["f2.csv"]


# row rejects -------------------------------------------------------------------------------------------

BAD_ROWS = {
    "missing_field": row(avgGross=""),
    "invalid_number": row(leadCR="4%"),
    "out_of_range": row(closeRate="1.2"),
    "invalid_month": row(month="2025-13"),
    "month_out_of_range": row(month="2023-12"),
    "invalid_dealer_id": row(dealer="bad dealer!"),
    "malformed_row": "only,three,fields",
}


def test_every_row_reason_is_quarantined_with_its_line_while_the_rest_loads(engine, landing, load_options):
    lines = [HEAD] + valid_rows(5)
    expected = {}
    for reason, text in BAD_ROWS.items():
        lines.append(text)
        expected[len(lines)] = reason
    lines += [row("dup-dealer"), *valid_rows(3, "later"), row("dup-dealer", month="2025-11-30")]
    expected[len(lines) - 4] = expected[len(lines)] = "duplicate_key_in_batch"
    lines += ['"broken,quote']
    expected[len(lines)] = "malformed_row"
    land(landing, "mixed.csv", "\n".join(lines) + "\n")

    (report,) = run(engine, landing, replace(load_options, reject_budget=0.6))
    assert report.status == "loaded"
    assert report.rows_read == len(lines) - 1
    assert report.rows_rejected == len(expected) == 10
    assert report.rows_accepted == 8
    assert report.rejected_by_reason == dict(sorted(Counter(expected.values()).items()))

    rejects = rejected_rows(engine)
    assert {r["line_no"]: r["reason"] for r in rejects} == expected
    assert {r["batch_id"] for r in rejects} == {report.batch_id}
    details = {r["line_no"]: r["detail"] for r in rejects}
    raws = {r["line_no"]: r["raw"] for r in rejects}
    by_reason = {reason: line for line, reason in expected.items()}
    assert details[by_reason["missing_field"]] == "missing required field(s): avgGross"
    assert details[by_reason["invalid_number"]] == "leadCR: '4%' is not a number"
    assert details[by_reason["out_of_range"]] == "closeRate: '1.2' is out of range (must be between 0 and 1)"
    assert details[by_reason["invalid_month"]].startswith("month: '2025-13' is not a month")
    assert details[by_reason["month_out_of_range"]] == "month: '2023-12' is outside the accepted months 2024-01..2026-12"
    assert details[by_reason["invalid_dealer_id"]].startswith("dealerId: 'bad dealer!' must be")
    assert details[13].startswith("expected 12 fields, found 3")
    assert raws[13] == "only,three,fields"
    assert json.loads(raws[by_reason["invalid_number"]])["leadCR"] == "4%"
    assert "appears on lines 14, 18" in details[14] and details[14] == details[18]
    assert all(r["detail"] and r["raw"] for r in rejects)

    accepted_lines = [r["line_no"] for r in raw_rows(engine)]
    assert accepted_lines == [2, 3, 4, 5, 6, 15, 16, 17]
    assert not set(accepted_lines) & set(expected)
    assert_ledger_agrees_with_tables(engine)
    assert archived(landing, ".processed") and landing_files(landing) == []


def test_rejected_rows_from_jsonl_keep_their_lines(engine, landing, load_options):
    good = [dict(zip(HEADER, row(intent=f"i{n}").split(","))) for n in range(6)]
    lines = [json.dumps(good[0]), "{oops", json.dumps(good[1] | {"impressions": -3}), "", json.dumps(good[2]), "[]"]
    lines += [json.dumps(g) for g in good[3:]] + [json.dumps(good[0] | {"month": "2025-11-02"})]
    land(landing, "mixed.jsonl", "\n".join(lines) + "\n")
    (report,) = run(engine, landing, replace(load_options, reject_budget=0.9))
    assert report.status == "loaded"
    assert {r["line_no"]: r["reason"] for r in rejected_rows(engine)} == {
        1: "duplicate_key_in_batch",
        2: "malformed_row",
        3: "out_of_range",
        6: "malformed_row",
        10: "duplicate_key_in_batch",
    }
    assert [r["line_no"] for r in raw_rows(engine)] == [5, 7, 8, 9]
    assert_ledger_agrees_with_tables(engine)


def test_duplicate_key_in_batch_quarantines_every_copy(engine, landing, load_options):
    lines = [HEAD, *valid_rows(20)]
    # three copies of one key, written three ways (the month snaps, the values are trimmed)
    lines[3] = row("twin", intent="hours")
    lines[8] = row(" twin ", month="2025-11-15", intent=" hours", impressions="999")
    lines[15] = row("twin", month="2025-11-01", intent="hours", avgGross="1")
    # same dealer/month/channel with another intent, or no intent, is another key
    lines += [row("twin", intent="oil_change"), row("twin", intent=""), row("twin", intent="")]
    land(landing, "dups.csv", "\n".join(lines) + "\n")
    (report,) = run(engine, landing, replace(load_options, reject_budget=0.5))
    rejects = rejected_rows(engine)
    assert [(r["line_no"], r["reason"]) for r in rejects] == [
        (4, "duplicate_key_in_batch"),
        (9, "duplicate_key_in_batch"),
        (16, "duplicate_key_in_batch"),
        (23, "duplicate_key_in_batch"),
        (24, "duplicate_key_in_batch"),
    ]
    assert "(dealer_id twin, month 2025-11, channel google_organic, intent_cluster hours) appears on lines 4, 9, 16" in rejects[0]["detail"]
    assert "intent_cluster (none)) appears on lines 23, 24" in rejects[3]["detail"]
    assert rejects[0]["detail"] == rejects[1]["detail"] == rejects[2]["detail"]
    remaining = raw_rows(engine)
    assert [(r["dealer_id"], r["intent_cluster"]) for r in remaining if r["dealer_id"] == "twin"] == [("twin", "oil_change")]
    assert len(remaining) == report.rows_accepted == 17 + 1
    assert report.rejected_by_reason == {"duplicate_key_in_batch": 5}
    assert_ledger_agrees_with_tables(engine)


def dump(engine, batch_id):
    def strip(rows):
        return [{k: v for k, v in r.items() if k != "batch_id"} for r in rows]

    return strip(raw_rows(engine, batch_id)), strip(rejected_rows(engine, batch_id))


def test_in_memory_and_sql_duplicate_checks_agree(engine, landing, load_options, monkeypatch):
    lines = [HEAD, *valid_rows(30), row("a"), row("b"), row("a", month="2025-11-09"), row("c"), row("b"), row("a")]
    body = "\n".join(lines) + "\n"
    options = replace(load_options, reject_budget=0.5)
    clean = "\n".join([HEAD, *valid_rows(10)]) + "\n"

    sql_checks = []
    original = ingest._reject_duplicate_keys

    def spy(connection, batch_id, *args, **kwargs):  # the real query runs; this only records that it did
        sql_checks.append(batch_id)
        return original(connection, batch_id, *args, **kwargs)

    monkeypatch.setattr(ingest, "_reject_duplicate_keys", spy)

    land(landing, "first.csv", body)
    land(landing, "clean-first.csv", clean)
    in_memory = {r.file_name: r for r in run(engine, landing, options)}
    # in memory, the fingerprints prove the clean file has no repeated key: no SQL check for it
    assert sql_checks == [in_memory["first.csv"].batch_id]

    monkeypatch.setattr(ingest, "IN_MEMORY_KEY_LIMIT", 1)
    land(landing, "second.csv", body + "\n")  # other bytes, same rows
    land(landing, "clean-second.csv", clean + "\n")
    in_sql = {r.file_name: r for r in run(engine, landing, options)}
    # past the limit, every file is checked in the warehouse
    assert sorted(sql_checks[1:]) == sorted(r.batch_id for r in in_sql.values())

    first, second = in_memory["first.csv"], in_sql["second.csv"]
    assert second.status == "loaded" and second.batch_id != first.batch_id
    assert (first.rows_accepted, first.rows_rejected) == (second.rows_accepted, second.rows_rejected) == (31, 5)
    assert first.rejected_by_reason == second.rejected_by_reason == {"duplicate_key_in_batch": 5}
    assert dump(engine, first.batch_id) == dump(engine, second.batch_id)
    assert dump(engine, in_memory["clean-first.csv"].batch_id) == dump(engine, in_sql["clean-second.csv"].batch_id)
    assert in_sql["clean-second.csv"].rows_accepted == 10
    assert_ledger_agrees_with_tables(engine)


# whole-file rejects -------------------------------------------------------------------------------------

WHOLE_FILE_REJECTS = {
    "empty": ("empty.csv", b"", "empty_file"),
    "blank": ("blank.csv", b"\n\n", "empty_file"),
    "empty-jsonl": ("empty.jsonl", b"", "empty_file"),
    "header-only": ("header.csv", f"{HEAD}\n".encode(), "header_only"),
    "header-only-no-newline": ("header2.csv", HEAD.encode(), "header_only"),
    "header-and-blank-lines": ("header3.csv", f"{HEAD}\n\n\n".encode(), "header_only"),
    "undecodable-body": ("latin1.csv", (HEAD + "\n" + row("café") + "\n").encode("latin-1"), "undecodable"),
    "undecodable-malformed-row": ("latin1b.csv", (HEAD + "\n" + row() + "\nx,\xe9\n").encode("latin-1"), "undecodable"),
    "undecodable-jsonl": ("latin1.jsonl", '{"dealerId": "caf\u00e9"}\n'.encode("latin-1"), "undecodable"),
    "nul-in-text": ("nul.csv", (HEAD + "\n" + row(channel="goo\0gle") + "\n").encode(), "undecodable"),
    "nul-in-jsonl": ("nul.jsonl", b'{"dealerId": "a", "channel": "x\\u0000"}\n', "undecodable"),
    "cr-line-ends": ("mac.csv", (HEAD + "\r" + row() + "\r").encode(), "malformed_file"),
    "missing-column": ("nomonth.csv", HEAD.replace("month,", "").encode() + b"\n" + b"a,x\n", "missing_columns"),
    "ambiguous-header": ("twice.csv", f"{HEAD},dealer_id\n{row()},x\n".encode(), "ambiguous_header"),
    "corrupt-gzip": ("broken.csv.gz", gzip.compress(demo_csv().encode())[:40], "undecodable"),
    "over-budget": ("budget.csv", "\n".join([HEAD, *valid_rows(18), row(leadCR="x"), row(leadCR="y")]).encode() + b"\n", "too_many_rejects"),
}


@pytest.mark.parametrize("case", list(WHOLE_FILE_REJECTS))
def test_whole_file_rejects(engine, landing, load_options, case):
    name, data, reason = WHOLE_FILE_REJECTS[case]
    land(landing, name, data)
    (report,) = run(engine, landing, load_options)
    assert (report.status, report.reason) == ("rejected", reason)
    assert report.detail
    assert count(engine, rar_raw_events) == 0
    assert count(engine, rar_rejected_rows) == 0
    (batch,) = ledger(engine)
    assert (batch["status"], batch["reason"], batch["detail"]) == ("rejected", reason, report.detail)
    assert (batch["rows_read"], batch["rows_accepted"], batch["rows_rejected"]) == (0, 0, 0)
    assert batch["file_name"] == name and batch["sha256"] == report.sha256
    assert landing_files(landing) == []
    assert archived(landing, ".rejected") == [f"{batch['batch_id']:08d}-{report.sha256[:12]}-{name}"]
    assert Path(batch["archived_as"]).read_bytes() == data
    assert archived(landing, ".processed") == []


def test_over_budget_detail_counts_the_reasons(engine, landing, load_options):
    land(landing, "budget.csv", "\n".join([HEAD, *valid_rows(18), row(leadCR="x"), row(month="1999-01")]) + "\n")
    (report,) = run(engine, landing, load_options)
    assert report.reason == "too_many_rejects"
    assert "2 of 20 rows were rejected" in report.detail
    assert "invalid_number 1" in report.detail and "month_out_of_range 1" in report.detail
    # exactly at the budget is fine: 1 of 20 = 5%
    land(landing, "at-budget.csv", "\n".join([HEAD, *valid_rows(19), row(leadCR="x")]) + "\n")
    (report,) = run(engine, landing, load_options)
    assert (report.status, report.rows_accepted, report.rows_rejected) == ("loaded", 19, 1)


def test_too_large(engine, landing, load_options):
    data = demo_csv().encode()
    land(landing, "big.csv", data)
    (report,) = run(engine, landing, replace(load_options, max_file_bytes=len(data) - 1))
    assert (report.status, report.reason) == ("rejected", "too_large")
    assert f"{len(data):,} bytes" in report.detail
    assert count(engine, rar_raw_events) == 0
    assert [(b["status"], b["reason"]) for b in ledger(engine)] == [("rejected", "too_large")]
    assert len(archived(landing, ".rejected")) == 1
    land(landing, "small.csv", data)  # the same bytes at the limit load
    (report,) = run(engine, landing, replace(load_options, max_file_bytes=len(data)))
    assert (report.status, report.rows_accepted) == ("loaded", 15)


# identity, corrections, unknown columns -------------------------------------------------------------------


def test_same_bytes_under_two_names_load_once(engine, landing, load_options):
    land(landing, "monday.csv", demo_csv(), age=20)
    land(landing, "monday-copy.csv", demo_csv(), age=10)
    first, second = run(engine, landing, load_options)
    assert (first.file_name, first.status, first.rows_accepted) == ("monday.csv", "loaded", 15)
    assert (second.file_name, second.status, second.rows_accepted, second.rows_read) == ("monday-copy.csv", "duplicate", 0, 0)
    assert second.sha256 == first.sha256 and second.batch_id != first.batch_id
    assert count(engine, rar_raw_events) == 15
    batches = {b["file_name"]: b for b in ledger(engine)}
    assert batches["monday-copy.csv"]["status"] == "duplicate"
    assert batches["monday-copy.csv"]["duplicate_of"] == first.batch_id
    assert batches["monday-copy.csv"]["rows_accepted"] == 0
    assert archived(landing, ".duplicates") == [f"{second.batch_id:08d}-{second.sha256[:12]}-monday-copy.csv"]
    assert len(archived(landing, ".processed")) == 1 and landing_files(landing) == []

    # delivered again later, after the original was archived, and under the original name
    land(landing, "monday.csv", demo_csv())
    (third,) = run(engine, landing, load_options)
    assert third.status == "duplicate"
    assert count(engine, rar_raw_events) == 15
    assert len(archived(landing, ".duplicates")) == 2
    assert_ledger_agrees_with_tables(engine)


def test_corrected_file_with_new_bytes_loads_as_a_new_batch(engine, landing, load_options):
    land(landing, "nov.csv", demo_csv())
    (first,) = run(engine, landing, load_options)
    land(landing, "nov.csv", demo_csv(scale=0.5))  # the same keys, corrected impressions
    (second,) = run(engine, landing, load_options)
    assert (second.status, second.rows_accepted) == ("loaded", 15)
    assert second.batch_id != first.batch_id and second.sha256 != first.sha256
    old, new = raw_rows(engine, first.batch_id), raw_rows(engine, second.batch_id)
    key = ("dealer_id", "month", "channel", "intent_cluster")
    assert [tuple(r[k] for k in key) for r in old] == [tuple(r[k] for k in key) for r in new]
    assert [r["impressions"] for r in new] == [round(r["impressions"] * 0.5) for r in old]
    assert len(archived(landing, ".processed")) == 2  # same name, no collision
    assert_ledger_agrees_with_tables(engine)


def test_unknown_columns_are_recorded(engine, landing, load_options):
    land(landing, "extra.csv", f"utm_source,{HEAD},Notes\nnews,{row()},hi\n", age=2)
    record = dict(zip(HEADER, row(intent="x").split(","))) | {"zeta": 1, "alpha": None}
    land(landing, "extra.jsonl", json.dumps(record) + "\n", age=1)
    csv_report, jsonl_report = run(engine, landing, load_options)
    assert csv_report.unknown_columns == ["utm_source", "Notes"]
    assert jsonl_report.unknown_columns == ["alpha", "zeta"]
    batches = {b["file_name"]: b for b in ledger(engine)}
    assert json.loads(batches["extra.csv"]["unknown_columns"]) == ["utm_source", "Notes"]
    assert json.loads(batches["extra.jsonl"]["unknown_columns"]) == ["alpha", "zeta"]
    assert count(engine, rar_raw_events) == 2


def test_file_replaced_after_listing_is_skipped(engine, landing, load_options):
    path = land(landing, "late.csv", demo_csv())
    (found,) = ingest.scan_landing(landing, 0).ready
    land(landing, "late.csv", demo_csv(scale=2))  # replaced by a new version after the scan
    report = ingest.load_file(engine, landing, found, load_options)
    assert report.status == "skipped" and "changed" in report.detail
    assert ledger(engine) == [] and count(engine, rar_raw_events) == 0
    assert path.exists()
    (report,) = run(engine, landing, load_options)
    assert (report.status, report.rows_accepted) == ("loaded", 15)
    assert raw_rows(engine)[0]["impressions"] == 600000


def test_file_that_grows_while_loading_is_skipped_and_loaded_later(engine, landing, load_options, monkeypatch):
    path = land(landing, "growing.csv", demo_csv())
    original = ingest.validate_chunk

    def writer_appends_meanwhile(*args, **kwargs):
        with open(path, "a") as out:  # a writer that did not use a temporary name is still writing
            out.write(row("late-row") + "\n")
        return original(*args, **kwargs)

    monkeypatch.setattr(ingest, "validate_chunk", writer_appends_meanwhile)
    (report,) = run(engine, landing, load_options)
    assert report.status == "skipped" and "changed while it was loading" in report.detail
    assert ledger(engine) == [] and count(engine, rar_raw_events) == 0 and count(engine, rar_rejected_rows) == 0
    assert landing_files(landing) == ["growing.csv"]
    monkeypatch.undo()
    os.utime(path, (SETTLED, SETTLED))
    (report,) = run(engine, landing, load_options)
    assert (report.status, report.rows_accepted) == ("loaded", 16)


# crashes and failed moves ---------------------------------------------------------------------------------

CRASH = """
import os, signal, sys
from datetime import date
from pathlib import Path
from rar_pipeline import ingest
from rar_pipeline.warehouse.engine import open_warehouse

original = ingest.record_outcome

def record_then_die(connection, report):
    original(connection, report)
    os.kill(os.getpid(), signal.SIGKILL)

ingest.record_outcome = record_then_die
engine = open_warehouse(sys.argv[1])
options = ingest.LoadOptions(first_month=date(2024, 1, 1), last_month=date(2026, 12, 1), max_file_bytes=10**9, reject_budget=0.05)
ingest.ingest_landing(engine, Path(sys.argv[2]), options, 0, 10)
sys.exit("record_outcome was never reached")
"""


def test_crash_between_insert_and_commit_leaves_nothing_and_reruns_exactly_once(engine, warehouse_url, landing, load_options):
    data = "\n".join([HEAD, *valid_rows(40), row(leadCR="oops")]) + "\n"
    land(landing, "crash.csv", data)
    project = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", CRASH, warehouse_url, str(landing)], cwd=project, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == -signal.SIGKILL, result.stderr

    assert count(engine, rar_raw_events) == 0
    assert count(engine, rar_rejected_rows) == 0
    assert ledger(engine) == []
    assert landing_files(landing) == ["crash.csv"]

    (report,) = run(engine, landing, load_options)
    assert (report.status, report.rows_accepted, report.rows_rejected) == ("loaded", 40, 1)
    assert count(engine, rar_raw_events) == 40
    assert count(engine, rar_rejected_rows) == 1
    assert [b["status"] for b in ledger(engine)] == ["loaded"]
    assert run(engine, landing, load_options) == []
    assert count(engine, rar_raw_events) == 40
    assert_ledger_agrees_with_tables(engine)


def test_failed_move_after_commit_does_not_reload(engine, landing, load_options, monkeypatch):
    def cannot_move(*args, **kwargs):
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(ingest, "archive", cannot_move)
    land(landing, "stuck.csv", demo_csv())
    (report,) = run(engine, landing, load_options)
    assert (report.status, report.rows_accepted, report.archived_as) == ("loaded", 15, None)
    assert landing_files(landing) == ["stuck.csv"]
    (batch,) = ledger(engine)
    assert batch["archived_as"] is None

    # still cannot move: no reload, no new ledger row
    (again,) = run(engine, landing, load_options)
    assert (again.status, again.batch_id, again.rows_accepted) == ("loaded", report.batch_id, 0)
    assert count(engine, rar_raw_events) == 15 and len(ledger(engine)) == 1

    monkeypatch.undo()
    (finally_moved,) = run(engine, landing, load_options)
    assert (finally_moved.status, finally_moved.batch_id) == ("loaded", report.batch_id)
    assert count(engine, rar_raw_events) == 15
    (batch,) = ledger(engine)
    assert batch["archived_as"] == finally_moved.archived_as
    assert Path(batch["archived_as"]).parent == landing / ".processed"
    assert landing_files(landing) == []
    assert_ledger_agrees_with_tables(engine)


def test_failed_move_of_a_duplicate_and_a_reject_never_loads_rows(engine, landing, load_options, monkeypatch):
    land(landing, "orig.csv", demo_csv(), age=5)
    run(engine, landing, load_options)
    monkeypatch.setattr(ingest, "archive", lambda *a, **k: (_ for _ in ()).throw(OSError("read-only")))
    land(landing, "copy.csv", demo_csv())
    land(landing, "empty.csv", b"")
    for _ in range(2):
        reports = {r.file_name: r.status for r in run(engine, landing, load_options)}
        assert reports == {"copy.csv": "duplicate", "empty.csv": "rejected"}
    assert count(engine, rar_raw_events) == 15
    assert Counter(b["status"] for b in ledger(engine))["loaded"] == 1
