"""Sensors: new files in the landing zone, and months touched by newly loaded batches."""

import hashlib
import time

import dagster as dg

from rar_pipeline.defs.jobs import rar_ingest_job, rar_monthly_job
from rar_pipeline.defs.monthly import PRESSURE_KEY, SCORE_ADJUSTMENTS_KEY
from rar_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from rar_pipeline.landing import LandingScan, scan_landing
from rar_pipeline.ledger import RefreshRequest, refresh_plan
from rar_pipeline.months import current_month


# A requested file still in the landing zone this long after it arrived is requested again.
LEFTOVER_RETRY_SECONDS = 600


def next_landing_cursor(scan: LandingScan, requested_up_to: int) -> tuple[list, int]:
    """Which ready files are new, and the new cursor.

    The cursor is one integer: files whose ctime (set by the kernel on arrival, rename or write,
    and never set back by `cp -p` or `mv`) is at or below it were already requested. It only moves
    forward, and never past a file that is still being written, so that file is not skipped once
    it settles.
    """
    new = [found for found in scan.ready if found.ctime_ns > requested_up_to]
    cursor = max([requested_up_to] + [found.ctime_ns for found in new])
    if scan.settling:
        cursor = max(requested_up_to, min(cursor, min(found.ctime_ns for found in scan.settling) - 1))
    return new, cursor


@dg.sensor(
    name="rar_landing_sensor",
    job=rar_ingest_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Lists RAR_LANDING_DIR (no file is opened) and requests rar_ingest_job for new, stable batch files.",
)
def rar_landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZoneResource):
    scan = scan_landing(landing.path, landing.settle_seconds)
    new, cursor = next_landing_cursor(scan, int(context.cursor or 0))
    context.update_cursor(str(cursor))
    # The run loads every pending file, the new ones included; the run key makes a re-evaluated tick harmless.
    if new:
        context.log.info(f"{len(new)} new file(s): {', '.join(found.name for found in new[:10])}")
        return dg.RunRequest(run_key=f"landing-{_identity(scan.ready)}", tags={"rar/new_files": str(len(new))})
    now = time.time()
    left_over = [found for found in scan.ready if now - found.ctime_ns / 1e9 >= LEFTOVER_RETRY_SECONDS]
    if left_over:
        # Requested earlier but still here (a failed run, or more than RAR_MAX_FILES_PER_RUN at once):
        # ask again, at most once an hour for the same files.
        hour = int(now // 3600)
        return dg.RunRequest(run_key=f"landing-retry-{_identity(scan.ready)}-h{hour}", tags={"rar/left_over_files": str(len(left_over))})
    return dg.SkipReason(
        f"0 new files; {len(scan.settling)} still being written; "
        f"{len(scan.ready)} already requested; {len(scan.ignored)} ignored"
    )


def _identity(files) -> str:
    return hashlib.sha256("\n".join(sorted(found.identity for found in files)).encode()).hexdigest()[:20]


def refresh_run_request(request: RefreshRequest) -> dg.RunRequest:
    """The rar_monthly_job run for one month; the run key is the month and the newest batch in it."""
    month = request.month.isoformat()
    if request.scores_only:
        # New scores change the adjustments and can make a P0 true, which rar/pressure queues.
        return dg.RunRequest(
            run_key=f"scores-{month}-b{request.up_to_batch}",
            partition_key=month,
            asset_selection=[PRESSURE_KEY, SCORE_ADJUSTMENTS_KEY],
            tags={"rar/refresh": "dealer_scores"},
        )
    return dg.RunRequest(run_key=f"refresh-{month}-b{request.up_to_batch}", partition_key=month, tags={"rar/refresh": "events"})


@dg.sensor(
    name="rar_month_refresh_sensor",
    job=rar_monthly_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reads the ledger for batches loaded since its cursor and rebuilds exactly the months they touched.",
)
def rar_month_refresh_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    after = int(context.cursor or 0)
    with warehouse.get_engine().connect() as connection:
        requests, cursor = refresh_plan(connection, after, current_month())
    context.update_cursor(str(cursor))
    if not requests:
        return dg.SkipReason(f"no batches loaded after batch {after}" if cursor == after else f"batches {after + 1}..{cursor} touched no month")
    return [refresh_run_request(request) for request in requests]
