"""Database plumbing every service shares: model base classes, engines, sessions.

Each service declares its own ``Base`` (so each keeps its own metadata and its own
Alembic history) and mixes in :class:`Entity` for the conventions of DESIGN.md:
UUID keys, created/updated timestamps in UTC, and a version column that SQLAlchemy
uses for optimistic concurrency.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import orjson
from sqlalchemy import (
    DateTime,
    Engine,
    Integer,
    Select,
    Table,
    Uuid,
    any_,
    bindparam,
    create_engine,
    event,
    insert,
    inspect,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.orm import (
    Mapped,
    Mapper,
    Session,
    declared_attr,
    make_transient_to_detached,
    mapped_column,
    sessionmaker,
)
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored and returned in UTC, aware, on every backend.

    SQLite keeps no zone, so values come back naive there; they were written as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; aidlink stores aware UTC times only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Entity:
    """Columns every aggregate table carries."""

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False
    )
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        # An UPDATE that finds another writer's version raises StaleDataError
        # instead of silently overwriting it.
        return {"version_id_col": cls.version}


def _prepare_sqlite(engine: Engine, *, immediate: bool = True) -> None:
    """WAL, a busy timeout and BEGIN IMMEDIATE, so several processes can share a file.

    pysqlite starts transactions lazily and upgrades read locks to write locks, which
    fails at once with "database is locked" under concurrency no matter the timeout.
    Taking the write lock at BEGIN makes writers queue on the busy timeout instead.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Read-only engines take no write lock: in WAL mode readers never wait.
        if immediate:
            _begin_immediate(conn)
        else:
            conn.exec_driver_sql("BEGIN")

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, record: Any) -> None:
        if record.info.pop(_LARGE_CACHE, False) and dbapi_connection is not None:
            try:
                dbapi_connection.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
                dbapi_connection.execute("PRAGMA shrink_memory")
            except sqlite3.Error as exc:
                # Not given back its memory: replaced by a fresh connection at its next
                # checkout rather than kept with a large cache (or lost to the pool).
                log.warning("could not give back a connection's page cache: %s", exc)
                record.invalidate(exc)


# How long a writer waits for SQLite's write lock, and how often it asks for it.
SQLITE_BUSY_MS = 30_000
SQLITE_BUSY_PAUSES = (0.001, 0.002, 0.003, 0.005)


def _begin_immediate(conn: Any) -> None:
    """``BEGIN IMMEDIATE``, asking for the write lock every few milliseconds.

    SQLite's own busy handler sleeps longer the longer it waits (up to 100 ms between
    two tries): a writer that has waited a while misses the short gaps between another
    writer's transactions in a row (a matching run's slices, 25 ms apart), and a need
    posted during a run waited for several of them (up to 2.3 s). Asked every 5 ms at
    most, it comes in at the first gap. Out of patience, it tries once more through
    SQLAlchemy, so that the error is raised as any other statement's."""
    raw = conn.connection.driver_connection
    try:
        try:
            raw.execute("PRAGMA busy_timeout=0")
            polled = _polled_begin(raw, time.monotonic() + SQLITE_BUSY_MS / 1000)
        except sqlite3.Error:
            polled = False  # the last try below raises it as SQLAlchemy's error
        if not polled:
            # Still without waiting: the patience is spent.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    finally:
        with contextlib.suppress(sqlite3.Error):
            raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")


# SQLite's result codes of a database another connection holds.
_SQLITE_BUSY = frozenset({getattr(sqlite3, "SQLITE_BUSY", 5), getattr(sqlite3, "SQLITE_LOCKED", 6)})


def _polled_begin(raw: Any, deadline: float) -> bool:
    """Whether ``BEGIN IMMEDIATE`` got the write lock before ``deadline`` (False, too,
    on any error but a busy database: the caller's last try raises it)."""
    for pause in itertools.chain(SQLITE_BUSY_PAUSES, itertools.repeat(SQLITE_BUSY_PAUSES[-1])):
        try:
            raw.execute("BEGIN IMMEDIATE")
            return True
        except sqlite3.Error as exc:
            # The primary code: an extended one (SQLITE_BUSY_RECOVERY, ...) keeps it in
            # its low byte.
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _SQLITE_BUSY:
                return False
        if time.monotonic() + pause >= deadline:
            return False
        time.sleep(pause)
    return False


# SQLite's page cache a connection keeps (its own default, 2,000 KiB), and what a large
# write asks for the length of its transaction (:func:`sqlite_large_cache`).
SQLITE_CACHE_KIB = 2000
SQLITE_LARGE_CACHE_KIB = 65536
_LARGE_CACHE = "aidlink_large_cache"


def sqlite_large_cache(session: Any, kib: int = SQLITE_LARGE_CACHE_KIB) -> None:
    """On SQLite, a page cache of ``kib`` KiB for the session's connection until it
    returns to the pool (then SQLite's default again, the memory given back).

    A write of thousands of rows into a table of many indexes touches pages all over
    each index: within the default 2 MB the cache spills dirty pages to the WAL and
    reads them back during the transaction (a matching run's slice of 2,500 proposals
    took a third longer). Elsewhere nothing changes."""
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return
    connection.exec_driver_sql(f"PRAGMA cache_size=-{int(kib)}")
    connection.connection.info[_LARGE_CACHE] = True


# Ids per ``IN (...)``: well under every backend's limit of bound parameters (SQLite's
# is 32,766 since 3.32 and 999 before; PostgreSQL's 65,535).
IN_CHUNK = 500


def in_chunks(ids: Iterable[Any], size: int = IN_CHUNK) -> Iterator[list[Any]]:
    """``ids`` (each once) in lists of at most ``size``: one ``IN (...)`` each."""
    batch: list[Any] = []
    for each in dict.fromkeys(ids):
        batch.append(each)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def move_once(session: Any, row: Any, *conditions: Any, **values: Any) -> bool:
    """Update the entity ``row`` (with a ``version``) to ``values`` only where
    ``conditions`` still hold, in one conditional ``UPDATE``, and read it back: of two
    callers at once only one moves it (the other's statement waits on the row lock,
    then matches nothing). Returns whether this caller moved it."""
    model = type(row)
    result = session.execute(
        update(model)
        .where(model.id == row.id, *conditions)
        .values(version=model.version + 1, **values)
        .execution_options(synchronize_session=False)
    )
    session.refresh(row)
    return bool(getattr(result, "rowcount", 0))


def one_of(column: Any, values: list[Any], dialect: str) -> Any:
    """``column IN (values)`` for a list of ids that may run to thousands: on PostgreSQL
    ``column = ANY(:values)``, one array parameter whatever the number of values (an
    IN list is a placeholder per value, which the driver parses in the statement's
    text at every call and the statement cache keeps apart by count); elsewhere the
    IN list, which the caller keeps under the parameter limit (:func:`in_chunks`)."""
    if dialect == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)


def upsert_insert(session: Any) -> Any:
    """The ``insert`` construct of the session's (or connection's) dialect that knows
    ``ON CONFLICT`` (PostgreSQL's or SQLite's), for inserts that must not fail on a row
    another transaction made first."""
    from sqlalchemy.dialects import postgresql, sqlite

    bind = session.get_bind() if hasattr(session, "get_bind") else session
    return postgresql.insert if bind.dialect.name == "postgresql" else sqlite.insert


def json_text(value: Any) -> str:
    """What JSON columns store, written by orjson (a matching run writes tens of
    thousands of events and reasons: a seventh of the standard library's time); what
    orjson refuses (an integer past 64 bits) by the standard library as before. Keys
    that are not strings are written as strings, as ``json.dumps`` writes them. Unlike
    ``json.dumps``, NaN and infinities are written as ``null`` (valid JSON, which
    PostgreSQL requires), and UUIDs and datetimes as their text rather than refused;
    the services hand JSON columns plain JSON values anyway."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


def json_value(text: str | bytes) -> Any:
    """What a JSON column holds, read by orjson (a matching run reads tens of
    thousands of lines' restrictions and standards: a third of the standard library's
    time); what orjson refuses (an integer past 64 bits, which :func:`json_text` may
    have written) by the standard library as before."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def make_engine(url: str, *, read_only: bool = False, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite files get their folder created and are tuned for
    sharing. JSON columns are written by :func:`json_text` and read by
    :func:`json_value`."""
    kwargs.setdefault("json_serializer", json_text)
    kwargs.setdefault("json_deserializer", json_value)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
        engine = create_engine(url, **kwargs)
        _prepare_sqlite(engine, immediate=not read_only)
        return engine
    engine = create_engine(url, **kwargs)
    if "pool_pre_ping" not in kwargs:
        ping_when_idle(engine)
    return engine


class OneRowRead:
    """A prebuilt ``SELECT`` of at most one row, run on a pooled DBAPI connection
    outside any session: the statement is compiled once per dialect, with its values
    written in, and each column's value goes through its type as SQLAlchemy would give
    it. For a read made on every request of a hot path (the ledger's version), where a
    session's begin, bookkeeping and close cost more than the statement. One statement
    needs no transaction of its own: it sees one committed state on every backend."""

    def __init__(self, statement: Select[*tuple[Any, ...]]) -> None:
        self.statement = statement
        self._compiled: dict[str, tuple[str, list[Any]]] = {}

    def _for(self, engine: Engine) -> tuple[str, list[Any]]:
        dialect = engine.dialect
        built = self._compiled.get(dialect.name)
        if built is None:
            sql = str(
                self.statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
            )
            processors = [
                column.type.dialect_impl(dialect).result_processor(dialect, None)
                for column in self.statement.selected_columns
            ]
            built = self._compiled[dialect.name] = (sql, processors)
        return built

    def __call__(self, engine: Engine) -> tuple[Any, ...] | None:
        sql, processors = self._for(engine)
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(sql)
                row = cursor.fetchone()
            finally:
                cursor.close()
        except engine.dialect.loaded_dbapi.Error:
            # A failure goes the way of every other statement's: the statement is run
            # again on a Connection of the engine, which tells a lost connection from
            # other errors, replaces the pool's connections when the server went away
            # (503 with Retry-After, shared.problems), and raises SQLAlchemy's errors.
            connection.invalidate()
            with engine.connect() as retried:
                again = retried.execute(self.statement).first()
            return None if again is None else tuple(again)
        finally:
            # Back to the pool, which ends whatever the driver began (a rollback).
            connection.close()
        if row is None:
            return None
        return tuple(
            value if process is None else process(value)
            for value, process in zip(row, processors, strict=True)
        )


#: PostgreSQL's answers that ask for the transaction to be run again: a deadlock it
#: broke by ending this transaction (40P01), or a serialization failure (40001).
RETRY_SQLSTATES = frozenset({"40P01", "40001"})


def conflict_to_retry(exc: BaseException) -> bool:
    """Whether ``exc`` is the database ending a transaction that, run again, will most
    likely succeed: it lost a deadlock or a serialization check to a concurrent one."""
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) in RETRY_SQLSTATES


#: Seconds a pooled server connection may lie unused and still be handed out without a
#: ping. SQLAlchemy's ``pool_pre_ping`` pings at every checkout: one round trip in seven
#: of a posted need's, and as many in every worker's task, for connections used a
#: moment before. A connection dropped within this window fails its first statement,
#: as one dropped mid-transaction does with any ping: the pool then replaces every
#: connection older than the failure, a task is retried, and a web request is answered
#: 503 with ``Retry-After`` (``shared.problems``).
PING_AFTER_IDLE = 1.0


def ping_when_idle(engine: Engine, idle: float = PING_AFTER_IDLE) -> None:
    """Ping a connection at checkout only when it lay in the pool longer than ``idle``
    seconds. A dead one is replaced by a fresh connection, and every other connection
    of the pool made before it too, as ``pool_pre_ping`` does (the pool's documented
    answer to an ``InvalidatePoolError`` raised by a checkout listener); an error that
    is not a lost connection is raised as it is."""

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["aidlink_checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.pop("aidlink_checked_in", None)
        if since is None or time.monotonic() - since < idle:
            return
        dialect = engine.dialect
        try:
            alive = dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if not dialect.is_disconnect(exc, dbapi_connection, None):
                raise
            raise InvalidatePoolError(f"a pooled connection no longer answers: {exc}") from exc
        if not alive:
            raise InvalidatePoolError("a pooled connection no longer answers")


def make_session_factory(engine: Engine) -> sessionmaker[Any]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def columns_of(row: Any) -> dict[str, Any]:
    """Every column of a mapped object, by column name, as it stands; a column with a
    default that the object leaves unset is refused (the insert would store NULL
    where SQLAlchemy's own would have given the default)."""
    mapper: Mapper[Any] = inspect(type(row))
    values = {}
    for attribute in mapper.column_attrs:
        column = attribute.columns[0]
        value = getattr(row, attribute.key)
        if value is None and column.default is not None:
            raise ValueError(
                f"{type(row).__tablename__}.{column.key} has a default: give its value"
            )
        values[column.key] = value
    return values


def insert_as_built(session: Session, parent: Any, children: list[Any]) -> None:
    """Write a new aggregate and its rows as built (every column with a default given;
    one left unset is NULL), by one Core insert per table in ``session``'s transaction, then
    keep the objects in the session as the rows they now are
    (``make_transient_to_detached``, SQLAlchemy's way to attach rows written
    otherwise). A post of a need or a pledge is a small transaction, which the ORM's
    unit of work (the object graph sorted and flushed) made a sixth dearer."""
    if session.new:
        session.flush()  # a place named for the first time: the aggregate refers to it
    # Through the session, whose listeners see a write (an Idempotency-Key is marked
    # applied by the commit of a transaction that wrote).
    session.execute(insert(cast(Table, type(parent).__table__)), [columns_of(parent)])
    if children:
        session.execute(
            insert(cast(Table, type(children[0]).__table__)),
            [columns_of(child) for child in children],
        )
    for row in (parent, *children):
        # A column the object left unset was written NULL: say so, or reading it
        # afterwards would ask the database for it, and the object has no session then.
        for attribute in inspect(type(row)).column_attrs:
            if attribute.key not in row.__dict__:
                setattr(row, attribute.key, None)
        make_transient_to_detached(row)
    session.add(parent)
