"""Streaming readers: CSV and JSONL, plain and gzip; whole-file rejects and malformed rows."""

from __future__ import annotations

import gzip
import io
import json

import pytest

from rar_pipeline import batch_reader
from rar_pipeline.batch_reader import BatchReader, FileRejected, file_format
from rar_pipeline.contract import Reason
from rar_pipeline.seed import HEADER

HEAD = ",".join(HEADER)
SNAKE_HEAD = "dealer_id,month,channel,impressions,share_ai_snippet,ctr_baseline,ctr_drop_when_ai,lead_cr,close_rate,avg_gross,recoverable_share,intent_cluster"


def row(dealer="demo-rooftop", intent="hours", channel="google_organic") -> str:
    return f"{dealer},2025-11,{channel},150000,0.34,0.055,0.31,0.04,0.18,2050,0.45,{intent}"


class Result:
    def __init__(self, chunks, reader):
        self.chunks = chunks
        self.unknown_columns = reader.unknown_columns
        self.rows = []  # (line, {field: text})
        self.malformed = []
        for chunk in chunks:
            names = list(chunk.columns)
            values = [chunk.columns[name].to_pylist() for name in names]
            for position, line in enumerate(chunk.line_numbers.tolist()):
                self.rows.append((line, {name: column[position] for name, column in zip(names, values)}))
            self.malformed.extend(chunk.malformed)

    @property
    def lines(self):
        return [line for line, _ in self.rows]

    def column(self, name):
        return [values[name] for _, values in self.rows]


def read(data: bytes, kind: str = "csv", gzipped: bool = False, block_bytes: int = batch_reader.BLOCK_BYTES) -> Result:
    reader = BatchReader(io.BytesIO(data), kind, gzipped, block_bytes)
    return Result(list(reader.chunks()), reader)


def rejected(data: bytes, kind: str = "csv", gzipped: bool = False) -> FileRejected:
    with pytest.raises(FileRejected) as caught:
        read(data, kind, gzipped)
    return caught.value


def test_file_format():
    assert file_format("a.csv") == ("csv", False)
    assert file_format("A.CSV") == ("csv", False)
    assert file_format("a.jsonl") == ("jsonl", False)
    assert file_format("a.csv.gz") == ("csv", True)
    assert file_format("a.jsonl.GZ") == ("jsonl", True)
    for name in ("a.json", "a.gz", "a.txt", "a.csv.bak", "a.tsv", "csv"):
        assert file_format(name) is None


# CSV ---------------------------------------------------------------------------------------------


def test_csv_camel_case():
    result = read(f"{HEAD}\n{row('a')}\n{row('b', intent='')}\n".encode())
    assert result.lines == [2, 3]
    assert result.malformed == [] and result.unknown_columns == []
    first = result.rows[0][1]
    assert first == {
        "dealer_id": "a",
        "month": "2025-11",
        "channel": "google_organic",
        "impressions": "150000",
        "share_ai_snippet": "0.34",
        "ctr_baseline": "0.055",
        "ctr_drop_when_ai": "0.31",
        "lead_cr": "0.04",
        "close_rate": "0.18",
        "avg_gross": "2050",
        "recoverable_share": "0.45",
        "intent_cluster": "hours",
    }
    assert result.column("intent_cluster") == ["hours", ""]


def test_csv_snake_case_and_reordered_columns():
    names = SNAKE_HEAD.split(",")
    order = list(reversed(range(len(names))))
    values = row("a").split(",")
    data = ",".join(names[i] for i in order) + "\n" + ",".join(values[i] for i in order) + "\n"
    result = read(data.encode())
    assert result.rows == read(f"{HEAD}\n{row('a')}\n".encode()).rows


def test_csv_intent_column_is_optional():
    head = HEAD.replace(",intentCluster", "")
    body = row("a").rsplit(",", 1)[0]
    result = read(f"{head}\n{body}\n".encode())
    assert result.lines == [2]
    assert "intent_cluster" not in result.rows[0][1]


def test_csv_bom_and_crlf():
    data = ("\ufeff" + HEAD + "\r\n" + row("a") + "\r\n" + row("b") + "\r\n").encode()
    result = read(data)
    assert result.lines == [2, 3]
    assert result.column("dealer_id") == ["a", "b"]
    assert result.column("intent_cluster") == ["hours", "hours"]  # no stray \r


def test_csv_without_final_newline():
    result = read(f"{HEAD}\n{row('a')}\n{row('b')}".encode())
    assert result.column("dealer_id") == ["a", "b"]


def test_csv_quoted_commas_and_quotes():
    quoted_channel = row(channel='"google, organic"')
    quoted_quotes = row(intent='"say ""hi"""')
    data = f"{HEAD}\n{quoted_channel}\n{quoted_quotes}\n"
    result = read(data.encode())
    assert result.malformed == []
    assert result.column("channel") == ["google, organic", "google_organic"]
    assert result.column("intent_cluster") == ["hours", 'say "hi"']


def test_csv_blank_lines_are_skipped_and_do_not_shift_line_numbers():
    data = f"{HEAD}\n{row('a')}\n\n{row('b')}\n,,,,,,,,,,,\n\r\n{row('c')}\n\n".encode()
    result = read(data)
    assert result.malformed == []
    assert result.rows and [(line, values["dealer_id"]) for line, values in result.rows] == [(2, "a"), (4, "b"), (7, "c")]


def test_csv_wrong_field_count_is_a_malformed_row():
    data = f"{HEAD}\n{row('a')}\nx,y\n{row('b')}\n{row('c')},extra\n{row('d')}\n".encode()
    result = read(data)
    assert [(line, values["dealer_id"]) for line, values in result.rows] == [(2, "a"), (4, "b"), (6, "d")]
    assert [(m.line_no, m.reason, m.raw) for m in result.malformed] == [
        (3, Reason.MALFORMED_ROW, "x,y"),
        (5, Reason.MALFORMED_ROW, row("c") + ",extra"),
    ]
    assert result.malformed[0].detail.startswith("expected 12 fields, found 2")
    assert result.malformed[1].detail.startswith("expected 12 fields, found 13")
    assert sum(chunk.rows_read for chunk in result.chunks) == 5


@pytest.mark.parametrize("block_bytes", [160, 257, 700, 4096])
def test_csv_line_numbers_across_several_blocks(block_bytes):
    lines = [HEAD]
    good, bad = [], []
    for index in range(120):
        line_no = index + 2
        if index % 7 == 3 or index % 13 == 12:
            lines.append(f"bad,row,{index}")
            bad.append(line_no)
        elif index % 11 == 5:
            lines.append("")
        else:
            lines.append(row(f"d{index}"))
            good.append((line_no, f"d{index}"))
    # a run of malformed rows, and a malformed last line
    lines += ["x"] * 5 + ["tail,row"]
    bad += list(range(len(lines) - 5, len(lines) + 1))
    result = read(("\n".join(lines) + "\n").encode(), block_bytes=block_bytes)
    if block_bytes < 1000:
        assert len(result.chunks) > 3
    assert [(line, values["dealer_id"]) for line, values in result.rows] == good
    assert sorted(m.line_no for m in result.malformed) == bad
    assert [m.line_no for m in result.malformed] == bad  # reported in order
    assert sum(chunk.rows_read for chunk in result.chunks) == len(good) + len(bad)


def test_csv_unterminated_quote_on_the_last_line():
    data = f'{HEAD}\n{row("a")}\n{row("b")}\n"unterminated,2025-11,x\n'.encode()
    result = read(data)
    assert result.column("dealer_id") == ["a", "b"]
    assert [(m.line_no, m.reason) for m in result.malformed] == [(4, Reason.MALFORMED_ROW)]
    assert result.malformed[0].raw.startswith('"unterminated')


def test_csv_unterminated_quote_in_the_middle_is_reported_on_its_line():
    data = f'{HEAD}\n{row("a")}\n{row(chr(34) + "b")}\n{row("c")}\n'.encode()
    result = read(data)
    assert result.lines[:1] == [2]
    assert [m.line_no for m in result.malformed] == [3]
    # the open quote swallows what follows; nothing after it becomes a row
    assert result.column("dealer_id") == ["a"]


def test_csv_unknown_columns_are_reported_and_ignored():
    data = f"utm_source,{HEAD},notes\nnewsletter,{row('a')},free text\n".encode()
    result = read(data)
    assert result.unknown_columns == ["utm_source", "notes"]
    assert result.column("dealer_id") == ["a"]
    assert set(result.rows[0][1]) == {name for name in SNAKE_HEAD.split(",")}


@pytest.mark.parametrize("column", ["dealerId", "month", "impressions", "avgGross"])
def test_csv_missing_required_column_rejects_the_file(column):
    names = HEADER.copy()
    position = names.index(column)
    names.pop(position)
    values = row("a").split(",")
    values.pop(position)
    error = rejected(f"{','.join(names)}\n{','.join(values)}\n".encode())
    assert error.reason == "missing_columns"
    assert column in error.detail


@pytest.mark.parametrize(
    "header",
    [
        HEAD + ",dealerId",
        HEAD + ",dealer_id",
        HEAD.replace("avgGross", "avg_gross") + ",avgGross",
        HEAD + ",notes,notes",
    ],
)
def test_csv_duplicate_header_is_ambiguous(header):
    extra = header.count(",") - HEAD.count(",")
    error = rejected(f"{header}\n{row('a')}{',x' * extra}\n".encode())
    assert error.reason == "ambiguous_header"


@pytest.mark.parametrize("data", [b"", b"\n", b"\r\n", b"  \n", b"\xef\xbb\xbf", b"\xef\xbb\xbf\r\n"])
def test_csv_empty_file(data):
    assert rejected(data).reason == "empty_file"


@pytest.mark.parametrize("data", [f"{HEAD}\n", f"{HEAD}\r\n", f"{HEAD}", f"\ufeff{HEAD}", f"{HEAD}\n\n\n"])
def test_csv_header_only_gives_no_rows(data):
    result = read(data.encode())
    assert result.rows == [] and result.malformed == []


@pytest.mark.parametrize(
    "data",
    [
        (HEAD + "\n" + row("café") + "\n").encode("latin-1"),  # body
        (HEAD.replace("month", "mönth") + ",month\n").encode("latin-1"),  # header
        f"{HEAD}\n{row('a')}\n".encode("utf-16"),
        HEAD.encode() + b"\n" + row("a").encode() + b"\n" + b"\xff\xfe,2025-11" + row("b").encode()[12:] + b"\n",
    ],
)
def test_csv_non_utf8_is_undecodable(data):
    assert rejected(data).reason == "undecodable"


def test_csv_undecodable_bytes_in_a_later_block():
    lines = [HEAD] + [row(f"d{i}") for i in range(50)] + [row("café")]
    data = "\n".join(lines).encode("latin-1") + b"\n"
    with pytest.raises(FileRejected) as caught:
        read(data, block_bytes=300)
    assert caught.value.reason == "undecodable"


@pytest.mark.parametrize(
    "data",
    [
        (HEAD + "\n" + row(channel="goo\0gle") + "\n").encode(),  # a kept column
        (HEAD + "\n" + row() + "\nx,\0\n").encode(),  # a malformed row's raw copy
        "\n".join([HEAD] + [row(f"d{i}") for i in range(30)] + [row(intent="\0")]).encode(),  # in a later block
    ],
)
def test_csv_nul_characters_reject_the_file(data):
    # PostgreSQL text cannot hold NUL: the whole file is rejected instead of failing the load
    with pytest.raises(FileRejected) as caught:
        read(data, block_bytes=400)
    assert caught.value.reason == "undecodable"


def test_csv_nul_in_an_ignored_column_is_fine():
    result = read(f"notes,{HEAD}\nbin\0ary,{row('a')}\n".encode())
    assert result.column("dealer_id") == ["a"]


def test_csv_cr_only_line_ends_reject_the_file():
    error = rejected((HEAD + "\r" + row("a") + "\r" + row("b") + "\r").encode())
    assert error.reason == "malformed_file"
    assert "line ends" in error.detail


# JSONL ------------------------------------------------------------------------------------------


def jsonl(*records) -> bytes:
    return b"".join((r if isinstance(r, str) else json.dumps(r)).encode() + b"\n" for r in records)


RECORD = dict(zip(HEADER, row("a").split(",")))


def test_jsonl_values_become_text():
    record = {
        "dealerId": "a",
        "month": "2025-11",
        "channel": "bing",
        "impressions": 150000,
        "shareAISnippet": 0.34,
        "ctrBaseline": 1e-05,
        "ctrDropWhenAI": "0.31",
        "leadCR": None,
        "closeRate": True,
        "avgGross": [1, 2],
        "recoverable_share": {"x": 1},
        "whatever": 1,
    }
    result = read(jsonl(record), "jsonl")
    assert result.lines == [1]
    assert result.rows[0][1] == {
        "dealer_id": "a",
        "month": "2025-11",
        "channel": "bing",
        "impressions": "150000",
        "share_ai_snippet": "0.34",
        "ctr_baseline": "1e-05",
        "ctr_drop_when_ai": "0.31",
        "lead_cr": None,
        "close_rate": "true",
        "avg_gross": "[1, 2]",
        "recoverable_share": '{"x": 1}',
        "intent_cluster": None,
    }
    assert result.unknown_columns == ["whatever"]


def test_jsonl_bad_lines_are_malformed_rows_with_line_numbers():
    data = jsonl(RECORD, "{not json", "", "[1, 2]", '"text"', "42", "null", "true", RECORD | {"dealerId": "b"}, '{"a": 1} trailing')
    result = read(data, "jsonl")
    assert [(line, values["dealer_id"]) for line, values in result.rows] == [(1, "a"), (9, "b")]
    assert [(m.line_no, m.reason) for m in result.malformed] == [
        (2, Reason.MALFORMED_ROW),
        (4, Reason.MALFORMED_ROW),
        (5, Reason.MALFORMED_ROW),
        (6, Reason.MALFORMED_ROW),
        (7, Reason.MALFORMED_ROW),
        (8, Reason.MALFORMED_ROW),
        (10, Reason.MALFORMED_ROW),
    ]
    assert result.malformed[0].detail.startswith("bad JSON")
    assert result.malformed[1].detail == "expected one JSON object per line"
    assert result.malformed[0].raw.startswith("{not json")


def test_jsonl_bom_crlf_and_snake_case_keys():
    snake = {name: RECORD[alias] for name, alias in zip(SNAKE_HEAD.split(","), HEADER)}
    data = b"\xef\xbb\xbf" + json.dumps(RECORD).encode() + b"\r\n" + json.dumps(snake).encode() + b"\r\n"
    result = read(data, "jsonl")
    assert result.lines == [1, 2]
    assert result.rows[0][1] == result.rows[1][1]


def test_jsonl_chunks_keep_line_numbers(monkeypatch):
    monkeypatch.setattr(batch_reader, "JSONL_CHUNK_ROWS", 3)
    records = [RECORD | {"dealerId": f"d{i}"} for i in range(8)]
    data = jsonl(*records[:4], "oops", *records[4:])
    result = read(data, "jsonl")
    assert len(result.chunks) == 3
    assert result.lines == [1, 2, 3, 4, 6, 7, 8, 9]
    assert [m.line_no for m in result.malformed] == [5]
    assert result.column("dealer_id") == [f"d{i}" for i in range(8)]


@pytest.mark.parametrize("data", [b"", b"\n \n\r\n", b"\xef\xbb\xbf\n"])
def test_jsonl_empty_file(data):
    assert rejected(data, "jsonl").reason == "empty_file"
    assert rejected(gzip.compress(data), "jsonl", gzipped=True).reason == "empty_file"


@pytest.mark.parametrize("line", ['{"dealerId": "a\\u0000b", "month": "2025-11"}', '{"dealerId": \x00}'])
def test_jsonl_nul_characters_reject_the_file(line):
    assert rejected(jsonl(RECORD, line), "jsonl").reason == "undecodable"


def test_jsonl_non_utf8_is_undecodable():
    data = jsonl(RECORD) + b'{"dealerId": "caf\xe9"}\n'
    error = rejected(data, "jsonl")
    assert error.reason == "undecodable"
    assert "line 2" in error.detail


# gzip -------------------------------------------------------------------------------------------


def test_gzip_csv_and_jsonl_read_like_the_plain_files():
    csv_data = f"\ufeff{HEAD}\r\n{row('a')}\r\nx,y\r\n{row('b')}\r\n".encode()
    plain, zipped = read(csv_data), read(gzip.compress(csv_data), gzipped=True)
    assert zipped.rows == plain.rows and plain.lines == [2, 4]
    assert [m.line_no for m in zipped.malformed] == [3]
    jsonl_data = jsonl(RECORD, "nope", RECORD | {"dealerId": "b"})
    plain, zipped = read(jsonl_data, "jsonl"), read(gzip.compress(jsonl_data), "jsonl", True)
    assert zipped.rows == plain.rows and plain.lines == [1, 3]
    assert [m.line_no for m in zipped.malformed] == [2]


def test_gzip_across_several_blocks():
    lines = [HEAD] + [row(f"d{i}") for i in range(200)]
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    result = read(data, gzipped=True, block_bytes=500)
    assert len(result.chunks) > 10
    assert result.lines == list(range(2, 202))


def corrupt_variants():
    csv_data = gzip.compress(f"{HEAD}\n{row('a')}\n{row('b')}\n".encode())
    jsonl_data = gzip.compress(jsonl(RECORD, RECORD))
    for kind, data in (("csv", csv_data), ("jsonl", jsonl_data)):
        yield pytest.param(kind, b"this is not gzip at all, just text\n" * 3, id=f"{kind}-not-gzip")
        yield pytest.param(kind, data[: len(data) // 2], id=f"{kind}-truncated")
        yield pytest.param(kind, data[:-8] + bytes(8), id=f"{kind}-bad-crc")
        yield pytest.param(kind, b"", id=f"{kind}-empty")


@pytest.mark.parametrize("kind, data", list(corrupt_variants()))
def test_corrupt_gzip_is_undecodable(kind, data):
    error = rejected(data, kind, gzipped=True)
    assert error.reason == ("undecodable" if data else "empty_file")
