"""The warehouse tables: one SQLAlchemy `MetaData`, evolved by the Alembic migrations beside it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
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

EVENT_VALUE_COLUMNS = (
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
)

# Every accepted row of every loaded batch, as delivered (validated and typed, month snapped to the 1st).
# No foreign key to rar_batches on purpose: the per-row check made COPY five times slower, and the
# loader writes a batch's rows and its ledger row in one transaction anyway.
rar_raw_events = Table(
    "rar_raw_events",
    metadata,
    Column("batch_id", Integer, primary_key=True),
    Column("line_no", BigInteger, primary_key=True),
    *(column.copy() for column in EVENT_VALUE_COLUMNS),
    Column("key_hash", BigInteger, nullable=False, comment="64-bit fingerprint of the natural key"),
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

RAW_EVENT_COLUMNS = [column.name for column in rar_raw_events.columns]
