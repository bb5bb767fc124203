"""Writes of tens of thousands of rows in a transaction kept short.

SQLAlchemy's ``executemany`` passes every value of every row through its parameter
handling and the driver's, in Python, while the transaction is open (on SQLite, while
it holds the database's one write lock). Here the rows are made ready first, outside
the transaction, in the form the driver sends:

- on SQLite, tuples of values already through each column's bind processor (the very
  values SQLAlchemy would send), run by the driver's own ``executemany``;
- on PostgreSQL, the text of a ``COPY ... FROM STDIN``, sent in one piece: into the
  table for an insert, into a temporary table joined by one ``UPDATE`` for a
  compare-and-set.

A :class:`BulkInsert` adds rows. A :class:`BulkCompareAndSet` sets columns of rows found
by key only where other columns still hold the values the caller read, and answers how
many rows it changed: fewer than it was given means another writer came in between,
and the caller rolls back what it wrote and takes the slow, locking path.

Both run on the session's own connection, in its transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Dialect, Table, bindparam, insert, update
from sqlalchemy.orm import Session

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


@dataclass(frozen=True)
class Ready:
    """Rows made ready for one dialect by :meth:`BulkInsert.prepare` or
    :meth:`BulkCompareAndSet.prepare`."""

    dialect: str
    count: int
    rows: list[tuple[Any, ...]] | None = None  # SQLite
    text: str | None = None  # PostgreSQL's COPY (encoded by the connection's encoding)


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
                found.append(_copy_value)
        self._encoders[dialect.name] = found
        return found

    def ready(self, dialect: Dialect, rows: Iterable[Sequence[Any]]) -> Ready:
        """``rows`` (one value per column, in order) in the form the driver sends."""
        encoders = self.encoders(dialect)
        if dialect.name == "postgresql":
            lines = [
                "\t".join([encode(value) for value, encode in zip(row, encoders, strict=True)])
                for row in rows
            ]
            return Ready(dialect.name, len(lines), text="".join(line + "\n" for line in lines))
        processed = [
            tuple(
                value if encode is None else encode(value)
                for value, encode in zip(row, encoders, strict=True)
            )
            for row in rows
        ]
        return Ready(dialect.name, len(processed), rows=processed)


def _raw(session: Session) -> Any:
    """The driver's connection under the session's, in its transaction."""
    return session.connection().connection.dbapi_connection


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
        dialect = session.get_bind().dialect
        cursor = _raw(session).cursor()
        try:
            if ready.dialect == "postgresql":
                assert ready.text is not None
                with cursor.copy(_copy_into(dialect, self.table.name, self.names)) as copy:
                    copy.write(ready.text)
            else:
                compiled = insert(self.table).compile(dialect=dialect, column_keys=self.names)
                order = [self.names.index(name) for name in compiled.positiontup or ()]
                assert ready.rows is not None
                cursor.executemany(
                    str(compiled), [tuple(row[i] for i in order) for row in ready.rows]
                )
        finally:
            cursor.close()


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
        key = self.key
        cursor = _raw(session).cursor()
        try:
            if ready.dialect == "postgresql":
                return self._postgresql(session, cursor, ready)
            t = self.table
            statement = (
                update(t)
                .where(
                    t.c[key] == bindparam("k_"),
                    *(t.c[name].is_(bindparam(f"was_{name}")) for name in self.expect_columns),
                )
                .values({name: bindparam(f"new_{name}") for name in self.set_columns})
            )
            compiled = statement.compile(dialect=session.get_bind().dialect)
            # Each row's values in the order of the statement's parameters.
            slots = ["k_", *(f"new_{n}" for n in self.set_columns)]
            slots += [f"was_{n}" for n in self.expect_columns]
            order = [slots.index(name) for name in compiled.positiontup or ()]
            assert ready.rows is not None
            cursor.executemany(str(compiled), [tuple(row[i] for i in order) for row in ready.rows])
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def _postgresql(self, session: Session, cursor: Any, ready: Ready) -> int:
        # Every name below comes from the table's metadata, quoted by the dialect; the
        # values travel in the COPY's data alone.
        dialect = session.get_bind().dialect
        q = dialect.identifier_preparer.quote
        table, key = q(self.table.name), q(self.key)
        staging = q(f"_cas_{self.table.name}")
        names = [self.key, *self.set_columns, *(f"{name}_was" for name in self.expect_columns)]
        typed = ", ".join(
            f"{q(name)} {column.type.compile(dialect=dialect)}"
            for name, column in zip(names, self._columns.columns, strict=True)
        )
        # Should a statement fail, the transaction is aborted and the table goes with it
        # (ON COMMIT DROP); dropped here once used, so that a second write may make it.
        cursor.execute(f"CREATE TEMPORARY TABLE {staging} ({typed}) ON COMMIT DROP")
        assert ready.text is not None
        with cursor.copy(_copy_into(dialect, f"_cas_{self.table.name}", names)) as copy:
            copy.write(ready.text)
        cursor.execute(
            f"SELECT 1 FROM {table} WHERE {key} IN (SELECT {key} FROM {staging}) "  # noqa: S608
            f"ORDER BY {key} FOR UPDATE"
        )
        sets = ", ".join(f"{q(name)} = s.{q(name)}" for name in self.set_columns)
        expects = "".join(
            f" AND t.{q(name)} IS NOT DISTINCT FROM s.{q(name + '_was')}"
            for name in self.expect_columns
        )
        cursor.execute(
            f"UPDATE {table} AS t SET {sets} FROM {staging} AS s "  # noqa: S608
            f"WHERE t.{key} = s.{key}{expects}"
        )
        changed = int(cursor.rowcount)
        cursor.execute(f"DROP TABLE {staging}")
        return changed


def _copy_into(dialect: Dialect, table: str, names: Sequence[str]) -> str:
    """``COPY table (names) FROM STDIN``, the names quoted by the dialect."""
    q = dialect.identifier_preparer.quote
    return f"COPY {q(table)} ({', '.join(q(name) for name in names)}) FROM STDIN"
