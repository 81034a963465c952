"""`rar_landing_sensor`, evaluated with `build_sensor_context` against a real landing folder.

The sensor only lists the folder (it never opens a file), so these tests need no warehouse.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rar_pipeline.defs.jobs import rar_ingest_job
from rar_pipeline.defs.resources import LandingZoneResource
from rar_pipeline.defs.sensors import next_landing_cursor, rar_landing_sensor
from rar_pipeline.landing import LandingFile, LandingScan
from rar_pipeline.seed import demo_rows, write_batch

HOUR = 3600


def settled_file(folder: Path, name: str) -> Path:
    """A complete batch file whose mtime is an hour old (as `cp -p` or `deliver` would leave it)."""
    path = folder / name
    write_batch(path, demo_rows())
    old = time.time() - HOUR
    os.utime(path, (old, old))  # sets ctime to now: the moment the file "arrived"
    return path


def tick(landing: Path, cursor: str | None, settle_seconds: float = 5.0):
    """One sensor evaluation; returns (result, cursor after the tick)."""
    context = dg.build_sensor_context(
        cursor=cursor, resources={"landing": LandingZoneResource(landing_dir=str(landing), settle_seconds=settle_seconds)}
    )
    result = rar_landing_sensor(context)
    return result, context.cursor


def test_sensor_is_running_by_default_and_targets_the_ingest_job():
    assert rar_landing_sensor.name == "rar_landing_sensor"
    assert rar_landing_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert rar_landing_sensor.job_name == rar_ingest_job.name == "rar_ingest_job"
    assert rar_landing_sensor.required_resource_keys == {"landing"}


def test_first_tick_on_an_empty_folder_skips_and_says_what_it_saw(landing):
    result, cursor = tick(landing, None)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == "0 new files; 0 still being written; 0 already requested; 0 ignored"
    assert cursor == "0"


def test_first_tick_when_the_folder_does_not_exist_yet(tmp_path):
    result, cursor = tick(tmp_path / "not-created-yet", None)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message.startswith("0 new files; 0 still being written")
    assert cursor == "0"


def test_new_stable_file_requests_one_run_and_advances_the_cursor(landing):
    path = settled_file(landing, "rooftops.csv")
    ctime_ns = os.stat(path).st_ctime_ns

    result, cursor = tick(landing, None)

    assert isinstance(result, dg.RunRequest)
    assert result.run_key.startswith("landing-") and len(result.run_key) > len("landing-") + 8
    assert result.tags["rar/new_files"] == "1"
    assert cursor == str(ctime_ns)

    # Re-evaluating the same tick (same cursor, same file) yields the same run key, so Dagster
    # launches the run only once.
    again, again_cursor = tick(landing, None)
    assert again.run_key == result.run_key and again_cursor == cursor

    # The next tick, from the advanced cursor, sees the file as already requested.
    skipped, next_cursor = tick(landing, cursor)
    assert isinstance(skipped, dg.SkipReason)
    assert skipped.skip_message == "0 new files; 0 still being written; 1 already requested; 0 ignored"
    assert next_cursor == cursor


def test_run_key_is_derived_from_the_file_identity(landing):
    path = settled_file(landing, "rooftops.csv")
    first, cursor = tick(landing, None)

    # Same name and bytes, but a new arrival (new inode, new mtime): a new identity and a new key.
    path.unlink()
    settled_file(landing, "rooftops.csv")
    older = time.time() - 2 * HOUR
    os.utime(path, (older, older))
    second, _ = tick(landing, cursor)
    assert isinstance(second, dg.RunRequest)
    assert second.run_key != first.run_key


def test_file_still_being_written_is_not_requested_and_does_not_move_the_cursor(landing):
    growing = landing / "growing.csv"
    growing.write_text("dealerId,month\n")  # mtime = now: still being written for a 60 s settle time
    ctime_ns = os.stat(growing).st_ctime_ns

    result, cursor = tick(landing, None, settle_seconds=60)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == "0 new files; 1 still being written; 0 already requested; 0 ignored"
    assert int(cursor) < ctime_ns

    # It keeps growing; still nothing, and the cursor stays behind it.
    with open(growing, "a") as out:
        out.write("germain-toyota-naples,2025-11\n")
    result, cursor = tick(landing, cursor, settle_seconds=60)
    assert "1 still being written" in result.skip_message
    assert int(cursor) < os.stat(growing).st_ctime_ns

    # Once it is stable it is requested: the cursor never skipped past it.
    old = time.time() - HOUR
    os.utime(growing, (old, old))
    result, cursor = tick(landing, cursor, settle_seconds=60)
    assert isinstance(result, dg.RunRequest)
    assert cursor == str(os.stat(growing).st_ctime_ns)


def test_cursor_stays_behind_a_settling_file_that_arrived_before_a_ready_one(landing):
    growing = landing / "growing.csv"
    growing.write_text("dealerId,month\n")
    growing_ctime = os.stat(growing).st_ctime_ns
    ready = settled_file(landing, "ready.csv")
    assert os.stat(ready).st_ctime_ns > growing_ctime

    result, cursor = tick(landing, None, settle_seconds=60)
    assert isinstance(result, dg.RunRequest) and result.tags["rar/new_files"] == "1"
    assert int(cursor) < growing_ctime

    old = time.time() - HOUR
    os.utime(growing, (old, old))
    later, _ = tick(landing, cursor, settle_seconds=60)
    # The settled file is new now (the ready one may be requested again; the run key dedupes it).
    assert isinstance(later, dg.RunRequest)


def test_a_second_new_file_gets_a_different_run_key(landing):
    settled_file(landing, "first.csv")
    first, cursor = tick(landing, None)
    settled_file(landing, "second.jsonl")
    second, second_cursor = tick(landing, cursor)

    assert isinstance(first, dg.RunRequest) and isinstance(second, dg.RunRequest)
    assert second.run_key != first.run_key
    assert second.tags["rar/new_files"] == "1"
    assert int(second_cursor) == os.stat(landing / "second.jsonl").st_ctime_ns > int(cursor)

    skipped, _ = tick(landing, second_cursor)
    assert skipped.skip_message == "0 new files; 0 still being written; 2 already requested; 0 ignored"


def test_two_new_files_in_one_tick_make_one_run_request(landing):
    settled_file(landing, "a.csv")
    settled_file(landing, "b.csv.gz")  # name only matters here: the sensor never opens files
    result, cursor = tick(landing, None)
    assert isinstance(result, dg.RunRequest)
    assert result.tags["rar/new_files"] == "2"
    assert int(cursor) == max(os.stat(landing / n).st_ctime_ns for n in ("a.csv", "b.csv.gz"))


def test_things_that_are_not_ready_batch_files_never_trigger_a_run(landing, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = settled_file(outside, "secret.csv")

    settled_file(landing, ".hidden.csv")  # dotfile: not even counted
    (landing / ".processed").mkdir()  # archive folders are dot-folders
    settled_file(landing / ".processed", "00000001-abc-old.csv")
    settled_file(landing, "upload.csv.tmp")
    settled_file(landing, "upload.csv.part")
    settled_file(landing, "notes.txt")
    (landing / "subfolder.csv").mkdir()
    settled_file(landing / "subfolder.csv", "nested.csv")
    (landing / "link.csv").symlink_to(target)
    (landing / "dangling.csv").symlink_to(tmp_path / "missing.csv")
    os.mkfifo(landing / "pipe.csv")

    result, cursor = tick(landing, None, settle_seconds=0)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == "0 new files; 0 still being written; 0 already requested; 7 ignored"
    assert cursor == "0"


# next_landing_cursor --------------------------------------------------------------------------


def found(name: str, ctime_ns: int) -> LandingFile:
    return LandingFile(Path("/landing") / name, size=10, mtime_ns=ctime_ns, ctime_ns=ctime_ns, inode=ctime_ns)


def test_next_landing_cursor_examples():
    scan = LandingScan(ready=[found("a.csv", 100), found("b.csv", 200)])
    assert next_landing_cursor(scan, 0) == ([scan.ready[0], scan.ready[1]], 200)
    assert next_landing_cursor(scan, 100) == ([scan.ready[1]], 200)
    assert next_landing_cursor(scan, 200) == ([], 200)
    assert next_landing_cursor(scan, 500) == ([], 500)  # never moves back

    settling = LandingScan(ready=[found("a.csv", 300)], settling=[found("s.csv", 150)])
    new, cursor = next_landing_cursor(settling, 0)
    assert [f.name for f in new] == ["a.csv"] and cursor == 149
    # The cursor never moves back, even for a settling file it had already passed.
    new, cursor = next_landing_cursor(settling, 160)
    assert [f.name for f in new] == ["a.csv"] and cursor >= 160


ctimes = st.integers(min_value=1, max_value=10_000)


@settings(max_examples=300, deadline=None)
@given(
    ready=st.lists(ctimes, max_size=8),
    settling=st.lists(ctimes, max_size=4),
    requested_up_to=st.integers(min_value=0, max_value=10_000),
)
def test_next_landing_cursor_is_monotonic_and_never_skips_a_file(ready, settling, requested_up_to):
    scan = LandingScan(
        ready=[found(f"r{i}.csv", c) for i, c in enumerate(ready)],
        settling=[found(f"s{i}.csv", c) for i, c in enumerate(settling)],
    )
    new, cursor = next_landing_cursor(scan, requested_up_to)

    assert cursor >= requested_up_to  # monotonic
    # Exactly the ready files past the old cursor are new.
    assert sorted(f.name for f in new) == sorted(f.name for f in scan.ready if f.ctime_ns > requested_up_to)
    # A file still being written that the old cursor had not passed is not passed now either.
    for pending in scan.settling:
        if pending.ctime_ns > requested_up_to:
            assert pending.ctime_ns > cursor
    # Without settling files the cursor covers every requested file: the next tick requests none.
    if not scan.settling:
        assert next_landing_cursor(scan, cursor) == ([], cursor)
    # Ticking again never moves the cursor back.
    assert next_landing_cursor(scan, cursor)[1] >= cursor


@pytest.mark.parametrize("cursor", [None, "", "0"])
def test_missing_or_zero_cursor_means_nothing_requested_yet(landing, cursor):
    settled_file(landing, "a.csv")
    result, _ = tick(landing, cursor)
    assert isinstance(result, dg.RunRequest)


def test_sensor_with_the_code_locations_landing_resource(tmp_path):
    """Wired as `build_definitions` wires it: the landing folder comes from RAR_HOME / RAR_LANDING_DIR."""
    from rar_pipeline.config import load_settings
    from rar_pipeline.definitions import build_definitions

    defs = build_definitions(load_settings({"RAR_HOME": str(tmp_path), "RAR_LANDING_DIR": str(tmp_path / "drop")}))
    settled_file(tmp_path / "drop", "rooftops.csv")
    context = dg.build_sensor_context(resources={"landing": defs.resources["landing"]})
    result = defs.resolve_sensor_def("rar_landing_sensor")(context)
    assert isinstance(result, dg.RunRequest)
    assert context.cursor == str(os.stat(tmp_path / "drop" / "rooftops.csv").st_ctime_ns)


def test_files_left_over_from_an_earlier_request_are_requested_again_hourly(tmp_path, monkeypatch):
    """A failed run (or a burst over RAR_MAX_FILES_PER_RUN) leaves requested files behind: retried."""
    from types import SimpleNamespace

    from rar_pipeline.defs import sensors

    landing = tmp_path / "landing"
    landing.mkdir()
    batch = landing / "left.csv"
    batch.write_text("dealerId,month\n")
    resource = LandingZoneResource(landing_dir=str(landing), settle_seconds=0)
    first = rar_landing_sensor(dg.build_sensor_context(cursor=None, resources={"landing": resource}))
    assert isinstance(first, dg.RunRequest)
    cursor = str(batch.stat().st_ctime_ns)

    # Just requested: no second request while that run may still be queued.
    again = rar_landing_sensor(dg.build_sensor_context(cursor=cursor, resources={"landing": resource}))
    assert isinstance(again, dg.SkipReason) and "1 already requested" in again.skip_message

    # Still there long after it arrived: requested again, with an hourly run key.
    later = time.time() + sensors.LEFTOVER_RETRY_SECONDS + 1
    monkeypatch.setattr(sensors, "time", SimpleNamespace(time=lambda: later))  # the sensor's clock only
    retry = rar_landing_sensor(dg.build_sensor_context(cursor=cursor, resources={"landing": resource}))
    assert isinstance(retry, dg.RunRequest)
    assert retry.run_key.startswith("landing-retry-") and retry.run_key.endswith(f"-h{int(later // 3600)}")
    assert retry.tags == {"rar/left_over_files": "1"}
