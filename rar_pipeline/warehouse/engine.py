"""Connecting to the warehouse: SQLite (embedded default) or PostgreSQL, with one-line errors."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 60_000
# PostgreSQL advisory lock keys (any constants work; kept together so they never collide).
MIGRATION_LOCK = 72_416_001  # concurrent `db upgrade`s
INGEST_LOCK = 72_416_002  # file loads, so batch ids commit in increasing order
CURRENT_PRESSURE_LOCK = 72_416_003  # the dealers' current pressure in secondary_metrics


class WarehouseError(RuntimeError):
    """A warehouse problem the user can fix; the message is one sentence and never holds a password."""


def describe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


def create_warehouse_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise WarehouseError(
            "RAR_DATABASE_URL is not a database URL; use sqlite:///path/to/rar.db or postgresql://user@host:5432/db."
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise WarehouseError(f"RAR_DATABASE_URL uses {backend!r}; the warehouse supports sqlite and postgresql.")
    try:
        if backend == "sqlite":
            return _sqlite_engine(parsed)
        return create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    except NoSuchModuleError:
        raise WarehouseError(f"no database driver for {parsed.drivername!r}; use postgresql:// (psycopg2).") from None


def _sqlite_engine(parsed) -> Engine:
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record):
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin (real transactions).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection):
        # A writer takes the lock up front: upgrading a read lock later fails at once with SQLITE_BUSY.
        mode = "IMMEDIATE" if connection.get_execution_options().get("rar_writer") else "DEFERRED"
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def write_connection(engine: Engine) -> Connection:
    """A connection for a writing transaction (on SQLite it takes the write lock at BEGIN)."""
    return engine.connect().execution_options(rar_writer=True)


def advisory_lock(connection: Connection, key: int) -> None:
    """Hold a PostgreSQL advisory lock until the transaction ends.

    SQLite needs none: writers open their transaction with BEGIN IMMEDIATE, one at a time.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def check_connection(engine: Engine) -> None:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else "connection failed"
        raise WarehouseError(
            f"cannot reach the warehouse at {engine.url.render_as_string(hide_password=True)}: "
            f"{reason}; check RAR_DATABASE_URL and that the server is running."
        ) from None


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def schema_is_current(engine: Engine) -> bool:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision() == head


def upgrade_schema(engine: Engine) -> None:
    """Apply pending Alembic migrations (safe to call from several processes at once)."""
    check_connection(engine)
    config = _alembic_config()
    with write_connection(engine) as connection, connection.begin():
        advisory_lock(connection, MIGRATION_LOCK)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def open_warehouse(url: str) -> Engine:
    """An engine on an up-to-date schema: a new, empty database is created on first use."""
    engine = create_warehouse_engine(url)
    try:
        check_connection(engine)
        if not schema_is_current(engine):
            upgrade_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine
