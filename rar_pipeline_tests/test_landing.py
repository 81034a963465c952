"""The landing zone: what is ready, what is ignored, safe opening, collision-free archiving."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from rar_pipeline.landing import (
    ARCHIVE_FOLDERS,
    DeliveryError,
    LandingFile,
    LandingFileChanged,
    archive,
    deliver,
    open_landing_file,
    scan_landing,
    sha256_of,
)

OLD = time.time() - 3600  # an mtime long settled


def put(folder: Path, name: str, data: bytes = b"dealerId\n", mtime: float = OLD) -> Path:
    path = folder / name
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def listed(landing: Path, name: str) -> LandingFile:
    (found,) = [f for f in scan_landing(landing, 0).ready if f.name == name]
    return found


def test_scan_lists_only_supported_regular_files(landing, tmp_path):
    for name in ("a.csv", "b.jsonl", "c.csv.gz", "d.JSONL.GZ", "E.CSV"):
        put(landing, name)
    # ignored without a word: dotfiles and the archive folders
    put(landing, ".hidden.csv")
    for folder in ARCHIVE_FOLDERS.values():
        (landing / folder).mkdir()
        put(landing / folder, "inside.csv")
    # ignored with a reason
    put(landing, "x.csv.tmp")
    put(landing, "y.csv.part")
    put(landing, "z.tmp")
    put(landing, "notes.txt")
    put(landing, "data.json")
    put(landing, "archive.gz")
    (landing / "folder.csv").mkdir()
    put(landing / "folder.csv", "nested.csv")
    put(landing, "target.csv.bak")
    (landing / "inside-link.csv").symlink_to(landing / "a.csv")
    outside = put(tmp_path, "outside.csv")
    (landing / "escape.csv").symlink_to(outside)
    (landing / "dangling.csv").symlink_to(tmp_path / "missing.csv")
    (landing / "dir-link.csv").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(landing / "pipe.csv")

    scan = scan_landing(landing, settle_seconds=5)
    assert sorted(f.name for f in scan.ready) == ["E.CSV", "a.csv", "b.jsonl", "c.csv.gz", "d.JSONL.GZ"]
    assert scan.settling == []
    assert dict(scan.ignored) == {
        "x.csv.tmp": "temporary file",
        "y.csv.part": "temporary file",
        "z.tmp": "temporary file",
        "notes.txt": "not .csv/.jsonl(.gz)",
        "data.json": "not .csv/.jsonl(.gz)",
        "archive.gz": "not .csv/.jsonl(.gz)",
        "target.csv.bak": "not .csv/.jsonl(.gz)",
        "folder.csv": "folder",
        "inside-link.csv": "symlink",
        "escape.csv": "symlink",
        "dangling.csv": "symlink",
        "dir-link.csv": "symlink",
        "pipe.csv": "not a regular file",
    }
    for found in scan.ready:
        assert found.path.parent == landing
        assert found.size == len(b"dealerId\n")


def test_scan_of_a_missing_folder_is_empty(tmp_path):
    scan = scan_landing(tmp_path / "nope", 0)
    assert (scan.ready, scan.settling, scan.ignored) == ([], [], [])


def test_fresh_file_is_settling_until_settle_seconds_passed(landing):
    written = 1_700_000_000.0
    put(landing, "fresh.csv", mtime=written)
    for now, state in ((written, "settling"), (written + 4.9, "settling"), (written + 5, "ready"), (written + 60, "ready")):
        scan = scan_landing(landing, settle_seconds=5, now=now)
        assert [f.name for f in getattr(scan, state)] == ["fresh.csv"], now
        other = "ready" if state == "settling" else "settling"
        assert getattr(scan, other) == []
    # an mtime in the future (clock skew, or a writer that sets it) is not settled either
    assert [f.name for f in scan_landing(landing, 5, now=written - 100).settling] == ["fresh.csv"]
    # real clock: just written
    put(landing, "now.csv", mtime=time.time())
    scan = scan_landing(landing, settle_seconds=30)
    assert [f.name for f in scan.settling] == ["now.csv"]
    assert [f.name for f in scan.ready] == ["fresh.csv"]


def test_ready_is_oldest_first(landing):
    put(landing, "b.csv", mtime=OLD - 10)
    put(landing, "c.csv", mtime=OLD - 20)
    put(landing, "a.csv", mtime=OLD - 10)
    assert [f.name for f in scan_landing(landing, 0).ready] == ["c.csv", "a.csv", "b.csv"]


def test_identity_changes_when_the_file_changes(landing):
    path = put(landing, "a.csv")
    before = listed(landing, "a.csv")
    assert listed(landing, "a.csv").identity == before.identity
    with open(path, "ab") as out:
        out.write(b"more\n")
    os.utime(path, (OLD, OLD))
    assert listed(landing, "a.csv").identity != before.identity


# open_landing_file ---------------------------------------------------------------------------------


def test_open_reads_the_listed_file(landing):
    put(landing, "a.csv", b"abc\n")
    with open_landing_file(landing, listed(landing, "a.csv")) as stream:
        assert stream.read() == b"abc\n"


def test_open_refuses_a_file_swapped_after_listing(landing, tmp_path):
    put(landing, "a.csv", b"original\n")
    found = listed(landing, "a.csv")
    replacement = put(tmp_path, "other.csv", b"imposter\n")  # same size, another inode
    os.replace(replacement, landing / "a.csv")
    with pytest.raises(LandingFileChanged, match="changed after it was listed"):
        open_landing_file(landing, found)


def test_open_refuses_a_file_that_grew(landing):
    path = put(landing, "a.csv", b"original\n")
    found = listed(landing, "a.csv")
    with open(path, "ab") as out:
        out.write(b"more\n")
    with pytest.raises(LandingFileChanged):
        open_landing_file(landing, found)


def test_open_refuses_a_symlink_put_in_its_place(landing, tmp_path):
    put(landing, "a.csv", b"original\n")
    found = listed(landing, "a.csv")
    secret = put(tmp_path, "secret.csv", b"original\n")
    (landing / "a.csv").unlink()
    (landing / "a.csv").symlink_to(secret)
    with pytest.raises(LandingFileChanged, match="cannot be opened"):
        open_landing_file(landing, found)


def test_open_refuses_a_fifo_put_in_its_place_without_hanging(landing):
    put(landing, "a.csv", b"original\n")
    found = listed(landing, "a.csv")
    (landing / "a.csv").unlink()
    os.mkfifo(landing / "a.csv")
    with pytest.raises(LandingFileChanged):
        open_landing_file(landing, found)


def test_open_refuses_a_vanished_file(landing):
    put(landing, "a.csv")
    found = listed(landing, "a.csv")
    (landing / "a.csv").unlink()
    with pytest.raises(LandingFileChanged, match="cannot be opened"):
        open_landing_file(landing, found)


def test_open_refuses_paths_outside_the_landing_folder(landing, tmp_path):
    outside = put(tmp_path, "outside.csv", b"secret\n")
    info = outside.stat()
    outside_file = LandingFile(outside, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
    with pytest.raises(LandingFileChanged, match="not directly inside"):
        open_landing_file(landing, outside_file)
    dotdot = replace(outside_file, path=landing / ".." / "outside.csv")
    with pytest.raises(LandingFileChanged, match="not directly inside"):
        open_landing_file(landing, dotdot)
    (landing / "sub").mkdir()
    nested = put(landing / "sub", "nested.csv")
    info = nested.stat()
    with pytest.raises(LandingFileChanged, match="not directly inside"):
        open_landing_file(landing, LandingFile(nested, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino))
    # a symlinked subfolder that points back at the landing folder is still a different folder name,
    # but resolves to the landing folder: the file it reaches is a real landing file, so it opens
    (landing / "self").symlink_to(landing, target_is_directory=True)
    inside = put(landing, "inside.csv", b"ok\n")
    info = inside.stat()
    through = LandingFile(landing / "self" / "inside.csv", info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
    with open_landing_file(landing, through) as stream:
        assert stream.read() == b"ok\n"


def test_sha256_of_rewinds(landing):
    data = os.urandom(3 * 1024 * 1024 + 17)
    put(landing, "a.csv", data)
    with open_landing_file(landing, listed(landing, "a.csv")) as stream:
        stream.read(10)
        assert sha256_of(stream) == hashlib.sha256(data).hexdigest()
        assert stream.tell() == 0


# archive --------------------------------------------------------------------------------------------


def test_archive_names_cannot_collide(landing):
    sha = "ab" * 32
    first_path = put(landing, "same.csv", b"first\n")
    first = archive(landing, listed(landing, "same.csv"), "loaded", 1, sha)
    put(landing, "same.csv", b"second\n")
    second = archive(landing, listed(landing, "same.csv"), "loaded", 2, sha)
    put(landing, "same.csv", b"third\n")
    third = archive(landing, listed(landing, "same.csv"), "rejected", 3, "cd" * 32)
    assert not first_path.exists()
    assert first != second
    assert first.read_bytes() == b"first\n" and second.read_bytes() == b"second\n"
    assert first == landing / ".processed" / f"00000001-{sha[:12]}-same.csv"
    assert third == landing / ".rejected" / f"00000003-{'cd' * 6}-same.csv"
    assert third.read_bytes() == b"third\n"
    put(landing, "dup.csv", b"dup\n")
    assert archive(landing, listed(landing, "dup.csv"), "duplicate", 4, sha).parent == landing / ".duplicates"
    # archived files are never listed again
    assert scan_landing(landing, 0).ready == []


def test_deliver_copies_atomically_and_never_overwrites(landing, tmp_path):
    source = put(tmp_path, "batch.csv", b"one\n")
    landed, digest = deliver(landing, source)
    assert landed == landing / "batch.csv" and landed.read_bytes() == b"one\n"
    assert digest == hashlib.sha256(b"one\n").hexdigest()
    assert [f.name for f in scan_landing(landing, 5).ready] == ["batch.csv"]  # keeps the old mtime
    source.write_bytes(b"two\n")
    second, _ = deliver(landing, source)
    assert second != landed and second.name.startswith("batch-") and second.name.endswith(".csv")
    assert landed.read_bytes() == b"one\n" and second.read_bytes() == b"two\n"
    assert sorted(p.name for p in landing.iterdir()) == sorted([landed.name, second.name])  # no temp left
    with pytest.raises(DeliveryError):
        deliver(landing, put(tmp_path, "notes.txt"))
    with pytest.raises(DeliveryError):
        deliver(landing, tmp_path / "missing.csv")
