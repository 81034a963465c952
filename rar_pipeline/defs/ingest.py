"""`rar/raw_events`: the landing zone loaded into the warehouse, with its reconciliation check."""

from collections import Counter

import dagster as dg

from rar_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from rar_pipeline.ingest import FileReport, ingest_landing
from rar_pipeline.ledger import loaded_row_total, reconcile_batches

RAW_EVENTS_KEY = dg.AssetKey(["rar", "raw_events"])
RAW_EVENTS_COLUMNS = dg.TableSchema(
    columns=[
        dg.TableColumn("batch_id", "integer", description="ledger row (rar_batches) of the file"),
        dg.TableColumn("line_no", "bigint", description="line of the row in its file (header = 1)"),
        dg.TableColumn("dealer_id", "varchar(128)"),
        dg.TableColumn("month", "date", description="first day of the month"),
        dg.TableColumn("channel", "text"),
        dg.TableColumn("impressions", "bigint"),
        dg.TableColumn("share_ai_snippet", "double"),
        dg.TableColumn("ctr_baseline", "double"),
        dg.TableColumn("ctr_drop_when_ai", "double"),
        dg.TableColumn("lead_cr", "double"),
        dg.TableColumn("close_rate", "double"),
        dg.TableColumn("avg_gross", "double", description="gross profit per sale, USD"),
        dg.TableColumn("recoverable_share", "double"),
        dg.TableColumn("intent_cluster", "text", description="empty string = no intent"),
    ]
)


@dg.asset(
    key=RAW_EVENTS_KEY,
    group_name="ingest",
    kinds={"python", "sql"},
    owners=["team:data-engineering"],
    metadata={"dagster/column_schema": RAW_EVENTS_COLUMNS, "dagster/table_name": "rar_raw_events"},
    check_specs=[
        dg.AssetCheckSpec(
            "ledger_reconciles",
            asset=RAW_EVENTS_KEY,
            blocking=True,
            description="For every file of the run: rows read = accepted + rejected, and the ledger "
            "counts equal the rows in rar_raw_events and rar_rejected_rows.",
        )
    ],
)
def raw_events(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingZoneResource
) -> dg.MaterializeResult:
    """Every RaR event delivered to the landing zone, validated, exactly once.

    A batch file (CSV or JSONL, optionally gzipped) holds one row per dealer × month × channel ×
    intent with the impressions and rates that drive Revenue at Risk. Each materialization loads
    every pending, stable file in `RAR_LANDING_DIR` (oldest first, bounded per run). A file is
    identified by the SHA-256 of its bytes, so a re-delivery under any name adds nothing. Bad rows
    go to `rar_rejected_rows` with a reason code and line number while the rest of the file loads;
    a file that is unusable as a whole (empty, missing columns, too many bad rows) is rejected
    entirely. Each file commits in one transaction with its ledger row in `rar_batches`, then moves
    to `.processed/`, `.duplicates/` or `.rejected/`.
    """
    engine = warehouse.get_engine()
    reports = ingest_landing(
        engine, landing.path, landing.load_options(), landing.settle_seconds, landing.max_files_per_run
    )
    for report in reports:
        log = context.log.warning if report.status in ("rejected", "skipped") else context.log.info
        log(f"{report.file_name}: {report.status} ({report.rows_accepted} accepted, {report.rows_rejected} rejected)"
            + (f" — {report.detail}" if report.detail else ""))
    with engine.connect() as connection:
        problems = reconcile_batches(connection, [r.batch_id for r in reports if r.batch_id is not None])
        row_total = loaded_row_total(connection)
    return dg.MaterializeResult(
        metadata=_run_metadata(reports, row_total),
        check_results=[
            dg.AssetCheckResult(
                check_name="ledger_reconciles",
                passed=not problems,
                metadata={"files_checked": len(reports), "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none")},
            )
        ],
    )


def _run_metadata(reports: list[FileReport], row_total: int) -> dict:
    status = Counter(report.status for report in reports)
    by_reason: Counter[str] = Counter()
    months: set[str] = set()
    for report in reports:
        by_reason.update(report.rejected_by_reason)
        months.update(report.months)
    table = "\n".join(
        ["| file | status | rows | accepted | rejected | note |", "|---|---|---|---|---|---|"]
        + [
            f"| {r.file_name} | {r.status} | {r.rows_read} | {r.rows_accepted} | {r.rows_rejected} | "
            f"{(r.reason or r.detail or '').replace('|', '/')[:120]} |"
            for r in reports[:50]
        ]
    )
    return {
        "files_loaded": status["loaded"],
        "files_duplicate": status["duplicate"],
        "files_rejected": status["rejected"],
        "files_skipped": status["skipped"],
        "rows_accepted": sum(r.rows_accepted for r in reports),
        "rows_rejected": sum(r.rows_rejected for r in reports),
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "months_touched": sorted(months),
        "batch_ids": [r.batch_id for r in reports if r.status == "loaded" and r.batch_id is not None],
        "files": dg.MetadataValue.md(table if reports else "no pending files"),
        "dagster/row_count": row_total,
    }

