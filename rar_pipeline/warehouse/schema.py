"""The warehouse tables: one SQLAlchemy `MetaData`, evolved by the Alembic migrations beside it."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()

# The ledger: one row per delivered file. A file's identity is the SHA-256 of its bytes; at most one
# `loaded` batch per identity (the partial unique index), so the same bytes never load twice.
rar_batches = Table(
    "rar_batches",
    metadata,
    Column("batch_id", Integer, primary_key=True, autoincrement=True),
    Column("sha256", String(64), nullable=False),
    Column("file_name", String(512), nullable=False),
    Column("file_format", String(16), nullable=False),
    Column("kind", String(16), nullable=False, server_default="events", comment="events | dealer_scores"),
    Column("size_bytes", BigInteger, nullable=False),
    Column("status", String(16), nullable=False, comment="loaded | rejected | duplicate"),
    Column("reason", String(32), comment="whole-file reject reason code"),
    Column("detail", Text),
    Column("duplicate_of", Integer, ForeignKey("rar_batches.batch_id")),
    Column("rows_read", BigInteger, nullable=False, server_default="0"),
    Column("rows_accepted", BigInteger, nullable=False, server_default="0"),
    Column("rows_rejected", BigInteger, nullable=False, server_default="0"),
    Column("rejected_by_reason", Text, comment="JSON object reason -> count"),
    Column("unknown_columns", Text, comment="JSON list of ignored input columns"),
    Column("months", Text, comment="JSON list of months (YYYY-MM-DD) with accepted rows"),
    Column("loaded_at", DateTime(timezone=True), nullable=False),
    Column("archived_as", String(1024), comment="where the file was moved after commit"),
    Index("ix_rar_batches_sha256", "sha256"),
    Index(
        "uq_rar_batches_loaded_sha256",
        "sha256",
        unique=True,
        sqlite_where=text("status = 'loaded'"),
        postgresql_where=text("status = 'loaded'"),
    ),
)


def event_value_columns() -> list[Column]:
    """The validated event fields (a fresh set per table: a Column belongs to one table)."""
    return [
        Column("dealer_id", String(128), nullable=False),
        Column("month", Date, nullable=False),
        Column("channel", Text, nullable=False),
        Column("impressions", BigInteger, nullable=False),
        Column("share_ai_snippet", Double, nullable=False),
        Column("ctr_baseline", Double, nullable=False),
        Column("ctr_drop_when_ai", Double, nullable=False),
        Column("lead_cr", Double, nullable=False),
        Column("close_rate", Double, nullable=False),
        Column("avg_gross", Double, nullable=False),
        Column("recoverable_share", Double, nullable=False),
        Column("intent_cluster", Text, nullable=False, server_default=""),
    ]


# Every accepted row of every loaded batch, as delivered (validated and typed, month snapped to the 1st).
# Bulk-loaded, so kept lean on purpose: no foreign key to rar_batches (the per-row check made COPY five
# times slower; the loader writes a batch's rows and its ledger row in one transaction anyway) and no
# primary key ((batch_id, line_no) is unique by construction). Rows arrive in batch order, so on
# PostgreSQL a BRIN index finds a batch's rows for almost no upkeep.
rar_raw_events = Table(
    "rar_raw_events",
    metadata,
    Column("batch_id", Integer, nullable=False),
    Column("line_no", BigInteger, nullable=False, comment="line of the row in its file (header = 1)"),
    *event_value_columns(),
    Index("ix_rar_raw_events_batch_id", "batch_id", postgresql_using="brin"),
)

rar_rejected_rows = Table(
    "rar_rejected_rows",
    metadata,
    Column("batch_id", Integer, ForeignKey("rar_batches.batch_id"), primary_key=True),
    Column("line_no", BigInteger, primary_key=True),
    Column("reason", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("raw", Text, nullable=False, comment="capped copy of the input row"),
    Index("ix_rar_rejected_rows_reason", "reason"),
)


# Which months each loaded batch has rows for: the refresh sensor and the monthly rebuilds read it.
rar_batch_months = Table(
    "rar_batch_months",
    metadata,
    Column("batch_id", Integer, ForeignKey("rar_batches.batch_id"), primary_key=True),
    Column("month", Date, primary_key=True),
    Column("kind", String(16), nullable=False, comment="events | dealer_scores"),
    Index("ix_rar_batch_months_month", "month"),
)

MONEY = Numeric(14, 2)
DERIVED_COLUMNS = ("ai_sessions", "lost_sessions", "lost_leads", "lost_sales", "rar", "recoverable")

# The canonical events of each month: the latest batch wins per natural key, with the per-event chain.
# One row per (month, dealer_id, channel, intent_cluster) by construction, verified by the blocking
# check `latest_batch_per_key`; no unique index on purpose: maintaining one on four text columns made
# rewriting a month of 1M events four times slower than the month index alone.
rar_events = Table(
    "rar_events",
    metadata,
    *event_value_columns(),
    *(Column(name, Double, nullable=False) for name in DERIVED_COLUMNS),
    Column("batch_id", Integer, nullable=False, comment="the batch this row comes from"),
    Column("line_no", BigInteger, nullable=False),
    Index("ix_rar_events_month", "month"),
)

rar_monthly = Table(
    "rar_monthly",
    metadata,
    Column("dealer_id", String(128), primary_key=True),
    Column("month", Date, primary_key=True),
    Column("lost_sessions", BigInteger, nullable=False),
    Column("lost_leads", BigInteger, nullable=False),
    Column("lost_sales", MONEY, nullable=False),
    Column("rar", MONEY, nullable=False, comment="monthly gross profit at risk, USD"),
    Column("recoverable", MONEY, nullable=False),
    Column("impressions", BigInteger, nullable=False),
    Column("event_count", Integer, nullable=False),
    Column("top_losing_intents", JSON, nullable=False, comment='[{"intent": name, "rar": cents}], at most 5'),
    Column("recovery_rate", Double, comment="recoverable / rar; NULL when rar = 0"),
    Column("zero_click_rate", Double, comment="lost_sessions / impressions; NULL when no impressions"),
    Column("is_complete", Boolean, nullable=False, comment="false while the month is still running"),
    Column("computed_at", DateTime(timezone=True), nullable=False),
)

rar_intent_monthly = Table(
    "rar_intent_monthly",
    metadata,
    Column("dealer_id", String(128), primary_key=True),
    Column("month", Date, primary_key=True),
    Column("intent_cluster", Text, primary_key=True),
    Column("rank", Integer, nullable=False, comment="1 = the dealer's biggest losing intent that month"),
    Column("rar", MONEY, nullable=False),
    Column("recoverable", MONEY, nullable=False),
    Column("lost_sessions", BigInteger, nullable=False),
    Column("event_count", Integer, nullable=False),
    Column("is_complete", Boolean, nullable=False),
    Column("computed_at", DateTime(timezone=True), nullable=False),
)

rar_pressure = Table(
    "rar_pressure",
    metadata,
    Column("dealer_id", String(128), primary_key=True),
    Column("month", Date, primary_key=True),
    Column("rar", MONEY, nullable=False),
    Column("pressure", Double, nullable=False, comment="min(rar / cap, 1)"),
    Column("cap", Double, nullable=False),
    Column("trend", String(8), nullable=False, comment="up | down | stable vs the previous calendar month"),
    Column("trend_pct", Double, nullable=False),
    Column("previous_rar", MONEY, comment="RaR of the previous calendar month, when it has data"),
    Column("lost_sessions", BigInteger, nullable=False),
    Column("zero_click_proxy", Double, nullable=False, comment="lost_sessions / (lost_sessions + 10,000)"),
    Column("is_complete", Boolean, nullable=False),
    Column("computed_at", DateTime(timezone=True), nullable=False),
)

# The dashboard's per-dealer current values; `rar_pressure` is that of the dealer's latest month with data.
secondary_metrics = Table(
    "secondary_metrics",
    metadata,
    Column("dealer_id", String(128), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("value_num", Double, nullable=False),
    Column("month", Date, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def score_value_columns() -> list[Column]:
    return [
        Column("dealer_id", String(128), nullable=False),
        Column("month", Date, nullable=False),
        Column("aiv", Double, nullable=False, comment="AI visibility, 0..100"),
        Column("ati", Double, nullable=False, comment="AI trust, 0..100"),
        Column("qai", Double, nullable=False, comment="quality index, 0..100"),
        Column("zero_click_coverage", Double, comment="0..1, when known"),
        Column("schema_coverage", Double, comment="0..1, when known"),
    ]


rar_raw_dealer_scores = Table(
    "rar_raw_dealer_scores",
    metadata,
    Column("batch_id", Integer, primary_key=True),
    Column("line_no", BigInteger, primary_key=True),
    *score_value_columns(),
)

dealer_scores = Table(
    "dealer_scores",
    metadata,
    *score_value_columns(),
    Column("batch_id", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("dealer_id", "month"),
)

rar_score_adjustments = Table(
    "rar_score_adjustments",
    metadata,
    Column("dealer_id", String(128), primary_key=True),
    Column("month", Date, primary_key=True),
    Column("scores_month", Date, nullable=False, comment="month of the score snapshot used"),
    Column("pressure", Double, nullable=False),
    Column("trend", String(8), nullable=False),
    *(Column(name, Double, nullable=False) for name in ("aiv", "ati", "qai")),
    *(Column(f"{name}_adjusted", Double, nullable=False) for name in ("aiv", "ati", "qai")),
    *(Column(f"{name}_delta", Double, nullable=False, comment="adjusted - base, points") for name in ("aiv", "ati", "qai")),
    Column("computed_at", DateTime(timezone=True), nullable=False),
)

# Alerts waiting for (or done with) delivery; written with rar_pressure, delivered by the Slack op.
rar_alert_outbox = Table(
    "rar_alert_outbox",
    metadata,
    Column("alert_id", Integer, primary_key=True, autoincrement=True),
    Column("dedupe_key", String(256), nullable=False, unique=True, comment="kind:dealer:month:level — never alerted twice"),
    Column("kind", String(16), nullable=False, comment="pressure | p0"),
    Column("dealer_id", String(128), nullable=False),
    Column("month", Date, nullable=False),
    Column("level", Double, nullable=False, comment="pressure level alerted (tenths, at least the threshold)"),
    Column("pressure", Double, nullable=False),
    Column("rar", MONEY, nullable=False),
    Column("recoverable", MONEY, nullable=False),
    Column("trend", String(8), nullable=False),
    Column("p0", String(8), nullable=False, comment="true | false | unknown"),
    Column("fix_pack", JSON, nullable=False, comment='[{"intent", "rar", "actions": [...]}], top 3'),
    Column("status", String(16), nullable=False, comment="pending | sent | failed | dry_run"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text, comment="redacted: never holds the webhook URL"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True)),
    Index("ix_rar_alert_outbox_status", "status"),
)
