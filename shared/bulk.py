"""Writes of tens of thousands of rows in a transaction kept short.

SQLAlchemy's ``executemany`` passes every value of every row through its parameter
handling and the driver's, in Python, while the transaction is open (on SQLite, while
it holds the database's one write lock). Here the rows are made ready first, outside
the transaction, in the form the driver sends:

- on SQLite, values already through each column's bind processor (the very values
  SQLAlchemy would send), a few hundred rows to a statement (``INSERT ... VALUES
  (...), (...)``, ``UPDATE ... FROM (VALUES ...)``; row by row on a SQLite older than
  3.33, which has no ``UPDATE ... FROM``), sent with no parameter processing of
  SQLAlchemy's (``exec_driver_sql``). The driver lets go of the GIL for each
  statement it runs: one a row, as ``executemany`` of a one-row statement sends them,
  a thread of the process that runs Python meanwhile (a run counting its next slices)
  made the writer wait for the GIL at every row, holding the write lock seconds;
- on PostgreSQL, the text of a ``COPY ... FROM STDIN``, sent in one piece into a
  temporary table, from which one ``INSERT ... SELECT`` or one ``UPDATE ... FROM``
  writes the table.

A :class:`BulkInsert` adds rows. A :class:`BulkCompareAndSet` sets columns of rows found
by key only where other columns still hold the values the caller read, and answers how
many rows it changed: fewer than it was given means another writer came in between,
and the caller rolls back what it wrote and takes the slow, locking path.

Both run on the session's own connection, in its transaction, and every statement but
the COPY into the temporary table goes through SQLAlchemy's connection: its listeners
see it, and its errors are SQLAlchemy's (the COPY's too, and a connection it finds lost
is invalidated; the pool's other connections are checked when next taken, see
``shared.db.ping_when_idle``).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import sqlite3
import sys
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, Column, Dialect, Table, Uuid, bindparam, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

_paused = 0
_was_enabled = True
_pause_lock = threading.Lock()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector held off during a piece of work that makes and
    drops hundreds of thousands of objects without cycles (a matching run's rows,
    proposals and events): every full collection walks all the objects alive, and at
    20,000 lines a side they took half of a run's read and a fifth of the run.
    Reference counting still frees each object when its last user lets go; a cycle
    made meanwhile waits for the first collection after. The collector is the
    process's: paused work is counted, and the collector comes back (if it was on)
    when the last of it ends. Also a decorator."""
    global _paused, _was_enabled
    with _pause_lock:
        if _paused == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _pause_lock:
            _paused -= 1
            if _paused == 0 and _was_enabled:
                gc.enable()


# The GIL switch interval while work writes and counts side by side (seconds).
BUSY_SWITCH_INTERVAL = 0.0005
_switching = 0
_was_interval = 0.005
_switch_lock = threading.Lock()


@contextlib.contextmanager
def switching_often(interval: float = BUSY_SWITCH_INTERVAL) -> Iterator[None]:
    """Threads of the process handed the GIL every ``interval`` seconds rather than
    every 5 ms (``sys.setswitchinterval``), while a thread that computes (a matching
    run counting its next slices) runs beside one that waits on the database (the
    run writing the slices counted): each time the writer's statement comes back, it
    waits for the GIL until the interval ends, and a slice's two dozen statements
    waited 5 ms each. The interval is the process's: the work is counted, and the
    interval the process had comes back when the last of it ends."""
    global _switching, _was_interval
    with _switch_lock:
        if _switching == 0:
            _was_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(interval, _was_interval))
        _switching += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switching -= 1
            if _switching == 0:
                sys.setswitchinterval(_was_interval)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


@dataclass(frozen=True)
class Ready:
    """Rows made ready for one dialect by :meth:`BulkInsert.prepare` or
    :meth:`BulkCompareAndSet.prepare`."""

    dialect: str
    count: int
    rows: list[tuple[Any, ...]] | None = None  # SQLite
    text: str | None = None  # PostgreSQL's COPY (encoded by the connection's encoding)

    def batches(
        self, parameters: int | None = None
    ) -> tuple[int, list[tuple[Any, ...]], tuple[Any, ...]]:
        """SQLite: the rows as the parameters of statements of many rows each, each
        with at most ``parameters`` values (the connection's limit): how many rows a
        statement, the values of each full statement in one flat tuple, and those of
        the rows left over (fewer; empty if none)."""
        assert self.rows is not None
        width = len(self.rows[0]) if self.rows else 1
        per = sqlite_rows_per_statement(width, parameters)
        full = len(self.rows) - len(self.rows) % per
        flat = itertools.chain.from_iterable
        return (
            per,
            [tuple(flat(self.rows[i : i + per])) for i in range(0, full, per)],
            tuple(flat(self.rows[full:])),
        )


# Rows a statement on SQLite: a few hundred, under the number of bound parameters a
# statement may have (the connection's own limit where the driver tells it; else
# SQLite's default, 32,766 since 3.32 and 999 before).
SQLITE_ROWS_PER_STATEMENT = 500
_SQLITE_PARAMETERS = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999
_SQLITE_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33)


def _sqlite_parameters(connection: Any) -> int:
    """The most bound parameters a statement may have on ``connection`` (SQLAlchemy's),
    as its SQLite says (``getlimit``, Python 3.11), else SQLite's default."""
    raw = connection.connection.dbapi_connection
    getlimit = getattr(raw, "getlimit", None)
    if getlimit is None:
        return _SQLITE_PARAMETERS
    return int(getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))


def sqlite_rows_per_statement(width: int, parameters: int | None = None) -> int:
    """How many rows of ``width`` values one SQLite statement carries, under
    ``parameters`` bound values (SQLite's default limit if not given)."""
    limit = parameters if parameters is not None else _SQLITE_PARAMETERS
    return max(1, min(SQLITE_ROWS_PER_STATEMENT, limit // max(1, width)))


def _values(rows: int, width: int) -> str:
    """``(?, ?), (?, ?)``: the placeholders of ``rows`` rows of ``width`` values."""
    one = "(" + ", ".join("?" * width) + ")"
    return ", ".join([one] * rows)


def _copy_value(value: Any) -> str:
    """``value`` in PostgreSQL's COPY text format, for a column of a type that reads
    its own text form (uuid, integer, text, boolean, timestamp)."""
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    if isinstance(value, int | uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given; aidlink stores aware UTC times only")
        return value.isoformat()
    raise TypeError(f"no COPY text form for {type(value).__name__}")


def _copy_uuid(value: Any) -> str:
    """A uuid column's value in COPY's text form: its 32 hex digits, which PostgreSQL
    reads as it reads the hyphenated form, at a third of ``str``'s cost (a plan's rows
    carry hundreds of thousands of ids); anything else as :func:`_copy_value` gives it."""
    if type(value) is uuid.UUID:
        return value.hex
    return _copy_value(value)


def _copy_int(value: Any) -> str:
    """An integer column's value in COPY's text form."""
    if type(value) is int:
        return str(value)
    return _copy_value(value)


def _copy_text(value: Any) -> str:
    """A text column's value in COPY's text form."""
    if type(value) is str:
        return value.translate(_COPY_ESCAPES)
    return _copy_value(value)


def _copy_datetime(value: Any) -> str:
    """A timestamp column's value in COPY's text form."""
    if type(value) is datetime and value.tzinfo is not None:
        return value.isoformat()
    return _copy_value(value)


def _copy_encoder(column: Column[Any]) -> Any:
    """What writes ``column``'s values in COPY's text form: one made for its type (a
    plan's rows carry hundreds of thousands of values), else :func:`_copy_value`. Each
    takes the values of its own type first and hands any other to ``_copy_value``,
    which knows them all (None, booleans) or refuses them."""
    python_type: Any
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return _copy_value
    if isinstance(column.type, Uuid):
        return _copy_uuid
    if python_type is int:
        return _copy_int
    if python_type is str:
        return _copy_text
    if python_type is datetime:
        return _copy_datetime
    return _copy_value


class _Columns:
    def __init__(self, table: Table, names: Sequence[str]) -> None:
        missing = [name for name in names if name not in table.c]
        if missing:
            raise ValueError(f"{table.name} has no column {missing[0]!r}")
        self.table = table
        self.columns: list[Column[Any]] = [table.c[name] for name in names]
        self._encoders: dict[str, list[Any]] = {}

    def encoders(self, dialect: Dialect) -> list[Any]:
        """Per column, what turns a value into what the driver sends: on SQLite the
        column's bind processor (None: as it is), on PostgreSQL its COPY text. A JSON
        column's value is JSON whatever it is (None is JSON ``null``, as SQLAlchemy
        writes it by default)."""
        found = self._encoders.get(dialect.name)
        if found is not None:
            return found
        found = []
        serialize = getattr(dialect, "_json_serializer", None) or json.dumps
        for column in self.columns:
            if dialect.name != "postgresql":
                found.append(column.type.dialect_impl(dialect).bind_processor(dialect))
            elif isinstance(column.type, JSON):
                if column.type.none_as_null:
                    raise ValueError(f"{column.name}: JSON columns with none_as_null are not kept")
                found.append(lambda value: str(serialize(value)).translate(_COPY_ESCAPES))
            else:
                found.append(_copy_encoder(column))
        self._encoders[dialect.name] = found
        return found

    def ready(self, dialect: Dialect, rows: Iterable[Sequence[Any]]) -> Ready:
        """``rows`` (one value per column, in order) in the form the driver sends."""
        encoders = self.encoders(dialect)
        rows = list(rows)
        width = len(encoders)
        for n, row in enumerate(rows):
            if len(row) != width:
                raise ValueError(f"row {n} has {len(row)} values for {width} columns")
        # Column by column: one ``map`` per column costs far less than a generator per
        # row, for tens of thousands of rows.
        columns = [
            list(map(encode, values)) if encode is not None else values
            for values, encode in zip(zip(*rows), encoders)  # noqa: B905 (widths checked)
        ]
        if dialect.name == "postgresql":
            text = "".join([line + "\n" for line in map("\t".join, zip(*columns, strict=True))])
            return Ready(dialect.name, len(rows), text=text)
        return Ready(dialect.name, len(rows), rows=list(zip(*columns, strict=True)))


def _copy(session: Session, sql: str, text: str) -> None:
    """``COPY ... FROM STDIN`` of ``text`` on the session's connection, in its
    transaction: the one statement made on the driver's own cursor (SQLAlchemy has no
    COPY), its failure raised as SQLAlchemy's error of the kind, a lost connection
    invalidated as for any other statement."""
    connection = session.connection()
    dialect = connection.dialect
    dbapi_connection = connection.connection.dbapi_connection
    cursor = cast(Any, dbapi_connection).cursor()
    try:
        with cursor.copy(sql) as copy:
            copy.write(text)
    except dialect.loaded_dbapi.Error as exc:
        lost = dialect.is_disconnect(exc, dbapi_connection, cursor)
        if lost:
            connection.invalidate(exc)
        raise DBAPIError.instance(
            sql, None, exc, dialect.loaded_dbapi.Error, connection_invalidated=lost, dialect=dialect
        ) from exc
    finally:
        cursor.close()


def _staged(session: Session, table: Table, names: Sequence[str], columns: Any, text: str) -> str:
    """A temporary table of ``names`` typed as ``columns`` (dropped at the latest when
    the transaction ends), filled from ``text`` by COPY; its quoted name. Every other
    statement goes through SQLAlchemy's connection, so that its events (logging,
    metrics) see it and its errors are SQLAlchemy's."""
    connection = session.connection()
    q = connection.dialect.identifier_preparer.quote
    staging = f"_bulk_{table.name}"
    typed = ", ".join(
        f"{q(name)} {column.type.compile(dialect=connection.dialect)}"
        for name, column in zip(names, columns, strict=True)
    )
    connection.exec_driver_sql(f"CREATE TEMPORARY TABLE {q(staging)} ({typed}) ON COMMIT DROP")
    _copy(session, _copy_into(connection.dialect, staging, names), text)
    return q(staging)


def _check(ready: Ready, session: Session) -> None:
    name = session.get_bind().dialect.name
    if ready.dialect != name:
        raise ValueError(f"rows made ready for {ready.dialect}, written on {name}")


class BulkInsert:
    """``INSERT`` of many rows of ``table``'s ``columns``."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        defaulted = [c.name for c in table.c if c.default is not None and c.name not in columns]
        if defaulted:
            # SQLAlchemy's own INSERT would give it its default; here the caller does.
            raise ValueError(f"{table.name}.{defaulted[0]} has a default: give its value")
        self._columns = _Columns(table, columns)
        self.table = table
        self.names = list(columns)

    def prepare(self, dialect: Dialect, rows: Iterable[Sequence[Any]]) -> Ready:
        """Outside the transaction: ``rows`` as the driver sends them."""
        return self._columns.ready(dialect, rows)

    def write(self, session: Session, ready: Ready) -> None:
        """In the session's transaction: the rows inserted."""
        _check(ready, session)
        if not ready.count:
            return
        connection = session.connection()
        dialect = connection.dialect
        if ready.dialect == "postgresql":
            # Copied into a table of its own, then inserted by one statement that
            # SQLAlchemy's connection runs (and its listeners see).
            assert ready.text is not None
            staging = _staged(session, self.table, self.names, self._columns.columns, ready.text)
            q = dialect.identifier_preparer.quote
            names = ", ".join(q(name) for name in self.names)
            connection.exec_driver_sql(
                f"INSERT INTO {q(self.table.name)} ({names}) SELECT {names} FROM {staging}"  # noqa: S608
            )
            connection.exec_driver_sql(f"DROP TABLE {staging}")
            return
        q = dialect.identifier_preparer.quote
        names = ", ".join(q(name) for name in self.names)
        into = f"INSERT INTO {q(self.table.name)} ({names}) VALUES "  # noqa: S608
        width = len(self.names)
        per, full, rest = ready.batches(_sqlite_parameters(connection))
        if full:
            connection.exec_driver_sql(into + _values(per, width), full)
        if rest:
            connection.exec_driver_sql(into + _values(len(rest) // width, width), rest)


class BulkCompareAndSet:
    """``UPDATE table SET <set> WHERE <key> = ? AND <expect> = ?`` for many rows: each
    row given as its key, the new values of ``set_columns``, then the values of
    ``expect_columns`` the caller read (NULL matches NULL). :meth:`write` answers how
    many rows it changed. On PostgreSQL the rows are locked in key order first, as
    every writer that locks many rows of these tables does, so that two cannot
    deadlock."""

    def __init__(
        self, table: Table, key: str, set_columns: Sequence[str], expect_columns: Sequence[str]
    ) -> None:
        unset = [c.name for c in table.c if c.onupdate is not None and c.name not in set_columns]
        if unset:
            # SQLAlchemy's own UPDATE would set it; here the caller gives its value.
            raise ValueError(f"{table.name}.{unset[0]} changes on every update: set it too")
        self.table = table
        self.key = key
        self.set_columns = list(set_columns)
        self.expect_columns = list(expect_columns)
        self._columns = _Columns(table, [key, *set_columns, *expect_columns])

    def prepare(self, dialect: Dialect, rows: Iterable[Sequence[Any]]) -> Ready:
        """Outside the transaction: ``rows`` (key, new values, values read), sorted by
        key, as the driver sends them."""
        return self._columns.ready(dialect, sorted(rows, key=lambda row: row[0]))

    def write(self, session: Session, ready: Ready) -> int:
        """In the session's transaction: the rows whose ``expect_columns`` still hold
        the values read, changed; how many."""
        _check(ready, session)
        if not ready.count:
            return 0
        connection = session.connection()
        if ready.dialect == "postgresql":
            return self._postgresql(session, ready)
        assert ready.rows is not None
        if len({row[0] for row in ready.rows}) < ready.count or not _SQLITE_UPDATE_FROM:
            # A key twice: the rows apply one after the other, as the caller gave them
            # (and so on a SQLite older than 3.33, which has no UPDATE ... FROM).
            return self._one_by_one(session, ready.rows)
        # One statement a few hundred rows: UPDATE ... FROM (VALUES ...), the values'
        # columns named column1, column2, ... by SQLite, in the order of the row.
        q = connection.dialect.identifier_preparer.quote
        table = q(self.table.name)
        width = 1 + len(self.set_columns) + len(self.expect_columns)
        sets = ", ".join(
            f"{q(name)} = v.column{n}" for n, name in enumerate(self.set_columns, start=2)
        )
        first_expected = 2 + len(self.set_columns)
        expects = "".join(
            f" AND {table}.{q(name)} IS v.column{n}"
            for n, name in enumerate(self.expect_columns, start=first_expected)
        )

        def statement(rows: int) -> str:
            return (
                f"UPDATE {table} SET {sets} FROM (VALUES {_values(rows, width)}) AS v "  # noqa: S608
                f"WHERE {table}.{q(self.key)} = v.column1{expects}"
            )

        per, full, rest = ready.batches(_sqlite_parameters(connection))
        changed = 0
        if full:
            # The driver adds up the rows each statement of an executemany changed.
            changed += int(connection.exec_driver_sql(statement(per), full).rowcount)
        if rest:
            changed += int(connection.exec_driver_sql(statement(len(rest) // width), rest).rowcount)
        return changed

    def _one_by_one(self, session: Session, rows: list[tuple[Any, ...]]) -> int:
        connection = session.connection()
        t, key = self.table, self.key
        statement = (
            update(t)
            .where(
                t.c[key] == bindparam("k_"),
                *(t.c[name].is_(bindparam(f"was_{name}")) for name in self.expect_columns),
            )
            .values({name: bindparam(f"new_{name}") for name in self.set_columns})
        )
        compiled = statement.compile(dialect=connection.dialect)
        # Each row's values in the order of the statement's parameters.
        slots = ["k_", *(f"new_{n}" for n in self.set_columns)]
        slots += [f"was_{n}" for n in self.expect_columns]
        order = [slots.index(name) for name in compiled.positiontup or ()]
        result = connection.exec_driver_sql(
            str(compiled), [tuple(row[i] for i in order) for row in rows]
        )
        return int(result.rowcount)

    def _postgresql(self, session: Session, ready: Ready) -> int:
        # Every name below comes from the table's metadata, quoted by the dialect; the
        # values travel in the COPY's data alone.
        connection = session.connection()
        q = connection.dialect.identifier_preparer.quote
        table, key = q(self.table.name), q(self.key)
        names = [self.key, *self.set_columns, *(f"{name}_was" for name in self.expect_columns)]
        assert ready.text is not None
        staging = _staged(session, self.table, names, self._columns.columns, ready.text)
        connection.exec_driver_sql(
            f"SELECT 1 FROM {table} WHERE {key} IN (SELECT {key} FROM {staging}) "  # noqa: S608
            f"ORDER BY {key} FOR UPDATE"
        )
        sets = ", ".join(f"{q(name)} = s.{q(name)}" for name in self.set_columns)
        expects = "".join(
            f" AND t.{q(name)} IS NOT DISTINCT FROM s.{q(name + '_was')}"
            for name in self.expect_columns
        )
        result = connection.exec_driver_sql(
            f"UPDATE {table} AS t SET {sets} FROM {staging} AS s "  # noqa: S608
            f"WHERE t.{key} = s.{key}{expects}"
        )
        connection.exec_driver_sql(f"DROP TABLE {staging}")
        return int(result.rowcount)


def _copy_into(dialect: Dialect, table: str, names: Sequence[str]) -> str:
    """``COPY table (names) FROM STDIN``, the names quoted by the dialect."""
    q = dialect.identifier_preparer.quote
    return f"COPY {q(table)} ({', '.join(q(name) for name in names)}) FROM STDIN"
