"""Rows written in bulk past SQLAlchemy's parameter handling (shared.bulk) read back as
SQLAlchemy wrote them, whatever their text holds, and a compare-and-set changes only
the rows that still read as the caller read them."""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest
from sqlalchemy import Table, Text, func, insert, select
from sqlalchemy import cast as cast_

from services.dispatch.allocations import service as saga
from services.dispatch.models import Allocation
from shared import bulk
from shared.bulk import (
    SQLITE_ROWS_PER_STATEMENT,
    BulkCompareAndSet,
    BulkInsert,
    sqlite_rows_per_statement,
)
from shared.db import utcnow
from tests.support.stack import Stack

# What a proposal writes, and a column it leaves empty.
COLUMNS = (*saga.ALLOCATION_COLUMNS, "status_reason")
AWKWARD = 'tab\there, line\nbreak, CR\r, back\\slash, "quote", \\N, 口罩 😷'


def _row(need: Any, line: Any, **values: Any) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": uuid.uuid4(),
        "run_id": None,
        "pledge_id": uuid.uuid4(),
        "pledge_line_id": uuid.uuid4(),
        "donor_org_id": uuid.uuid4(),
        "donor_anonymous": True,
        "need_id": need,
        "need_line_id": line,
        "recipient_org_id": uuid.uuid4(),
        "item": "mask",
        "quantity": 7,
        "status": "proposed",
        "status_reason": None,
        "reason": {"text": AWKWARD, "fill": 0.25, "none": None, "list": [1, "二"]},
        "version": 1,
        "created_at": now,
        "updated_at": now,
        **values,
    }


@pytest.fixture
def need_line(stack: Stack) -> tuple[uuid.UUID, uuid.UUID]:
    from tests.integration.test_propose_many import _need

    rt = stack.runtime("dispatch")
    with rt.unit_of_work() as session:
        need = _need(session, rt.outbox, 10)
        return need.id, need.lines[0].id


def test_rows_inserted_in_bulk_read_back_as_written(
    stack: Stack, need_line: tuple[uuid.UUID, uuid.UUID]
) -> None:
    rt = stack.runtime("dispatch")
    table = cast(Table, Allocation.__table__)
    writer = BulkInsert(table, COLUMNS)
    rows = [_row(*need_line, status_reason=AWKWARD), _row(*need_line, run_id=uuid.uuid4())]
    ready = writer.prepare(rt.engine.dialect, [tuple(r[c] for c in COLUMNS) for r in rows])
    assert ready.count == 2
    with rt.unit_of_work() as session:
        writer.write(session, ready)
    with rt.session_factory() as session:
        for row in rows:
            found = session.get(Allocation, row["id"])
            assert found is not None
            assert {c: getattr(found, c) for c in COLUMNS} == row


@pytest.mark.parametrize("reason", [{"text": AWKWARD, "n": [1, None]}, None])
def test_a_row_written_in_bulk_is_stored_as_sqlalchemy_stores_it(
    stack: Stack, need_line: tuple[uuid.UUID, uuid.UUID], reason: Any
) -> None:
    """Compared as the database holds them (each column as text), not as read back:
    what a reader of the table without the models sees is the same."""
    rt = stack.runtime("dispatch")
    table = cast(Table, Allocation.__table__)
    by_sqlalchemy = _row(*need_line, status_reason=AWKWARD, reason=reason)
    in_bulk = {**by_sqlalchemy, "id": uuid.uuid4()}
    writer = BulkInsert(table, COLUMNS)
    ready = writer.prepare(rt.engine.dialect, [tuple(in_bulk[c] for c in COLUMNS)])
    with rt.unit_of_work() as session:
        session.execute(insert(table), [by_sqlalchemy])
        writer.write(session, ready)
    stored = {}
    with rt.engine.connect() as connection:
        for row in (by_sqlalchemy, in_bulk):
            found = connection.execute(
                select(*(cast_(table.c[c], Text) for c in COLUMNS if c != "id")).where(
                    table.c.id == row["id"]
                )
            ).one()
            stored[row["id"]] = tuple(found)
    assert stored[in_bulk["id"]] == stored[by_sqlalchemy["id"]]
    with pytest.raises(ValueError, match="has a default: give its value"):
        BulkInsert(table, [c for c in COLUMNS if c != "version"])


def test_a_compare_and_set_changes_only_rows_that_read_as_they_were_read(
    stack: Stack, need_line: tuple[uuid.UUID, uuid.UUID]
) -> None:
    rt = stack.runtime("dispatch")
    table = cast(Table, Allocation.__table__)
    rows = [_row(*need_line, quantity=q) for q in (1, 2, 3)]
    with rt.unit_of_work() as session:
        BulkInsert(table, COLUMNS).write(
            session,
            BulkInsert(table, COLUMNS).prepare(
                rt.engine.dialect, [tuple(r[c] for c in COLUMNS) for r in rows]
            ),
        )
    with pytest.raises(ValueError, match="updated_at changes on every update"):
        BulkCompareAndSet(table, "id", ("status",), ("quantity",))
    cas = BulkCompareAndSet(
        table, "id", ("status", "status_reason", "updated_at"), ("quantity", "status_reason")
    )
    first, second, third = (r["id"] for r in rows)
    now = utcnow()
    ready = cas.prepare(
        rt.engine.dialect,
        [
            (first, "cancelled", AWKWARD, now, 1, None),  # reads as read (NULL matches NULL)
            (second, "cancelled", "x", now, 5, None),  # its quantity is 2, not 5
            (third, "cancelled", "y", now, 3, "something"),  # its reason is NULL
        ],
    )
    with rt.unit_of_work() as session:
        assert cas.write(session, ready) == 1
    with rt.session_factory() as session:
        found = {a.id: (a.status, a.status_reason) for a in session.scalars(select(Allocation))}
        changed = session.get(Allocation, first)
        assert changed is not None and changed.updated_at == now
    assert found == {
        first: ("cancelled", AWKWARD),
        second: ("proposed", None),
        third: ("proposed", None),
    }


def test_rows_made_ready_for_one_backend_are_refused_on_another(
    stack: Stack, need_line: tuple[uuid.UUID, uuid.UUID]
) -> None:
    from sqlalchemy.dialects import postgresql, sqlite

    rt = stack.runtime("dispatch")
    other = sqlite.dialect() if rt.engine.dialect.name == "postgresql" else postgresql.dialect()
    writer = BulkInsert(cast(Table, Allocation.__table__), COLUMNS)
    ready = writer.prepare(other, [tuple(_row(*need_line)[c] for c in COLUMNS)])
    with rt.unit_of_work() as session, pytest.raises(ValueError, match="made ready for"):
        writer.write(session, ready)
    with pytest.raises(ValueError, match="has no column 'colour'"):
        BulkInsert(cast(Table, Allocation.__table__), (*COLUMNS, "colour"))


def test_a_bulk_write_that_fails_raises_sqlalchemys_error_and_writes_nothing(
    stack: Stack, need_line: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """A row the table refuses (a NOT NULL column left empty) and, on PostgreSQL, a value
    its COPY cannot read: SQLAlchemy's error of the kind, as any statement gives, and
    the transaction rolls back whole."""
    from sqlalchemy.exc import DBAPIError, IntegrityError

    rt = stack.runtime("dispatch")
    table = cast(Table, Allocation.__table__)
    writer = BulkInsert(table, COLUMNS)
    good = _row(*need_line)
    empty_status = _row(*need_line, status=None)
    ready = writer.prepare(
        rt.engine.dialect, [tuple(r[c] for c in COLUMNS) for r in (good, empty_status)]
    )
    with pytest.raises(IntegrityError), rt.unit_of_work() as session:
        writer.write(session, ready)
    if rt.engine.dialect.name == "postgresql":
        # Read by the COPY itself, on the driver's cursor.
        unreadable = writer.prepare(
            rt.engine.dialect, [tuple(_row(*need_line, quantity="seven")[c] for c in COLUMNS)]
        )
        with pytest.raises(DBAPIError, match="invalid input syntax"), rt.unit_of_work() as s:
            writer.write(s, unreadable)
    with rt.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Allocation)) == 0
    # The connection is usable again.
    with rt.unit_of_work() as session:
        writer.write(session, writer.prepare(rt.engine.dialect, [tuple(good[c] for c in COLUMNS)]))
    with rt.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Allocation)) == 1


@pytest.mark.parametrize("update_from", [True, False], ids=["update-from", "row-by-row"])
def test_more_rows_than_one_statement_carries_are_all_written_and_counted(
    stack: Stack,
    need_line: tuple[uuid.UUID, uuid.UUID],
    monkeypatch: pytest.MonkeyPatch,
    update_from: bool,
) -> None:
    """On SQLite a few hundred rows go in each statement: two full statements and the
    rows left over, for the insert and for the compare-and-set, whose count adds up
    the statements' counts; a SQLite without UPDATE ... FROM (before 3.33) sets them
    row by row, with the same outcome."""
    monkeypatch.setattr(bulk, "_SQLITE_UPDATE_FROM", update_from)
    rt = stack.runtime("dispatch")
    table = cast(Table, Allocation.__table__)
    cas = BulkCompareAndSet(table, "id", ("status", "updated_at"), ("quantity",))
    per = sqlite_rows_per_statement(len(COLUMNS))
    assert sqlite_rows_per_statement(4) == SQLITE_ROWS_PER_STATEMENT
    rows = [_row(*need_line, quantity=1 + n % 3) for n in range(2 * per + 7)]
    writer = BulkInsert(table, COLUMNS)
    with rt.unit_of_work() as session:
        writer.write(
            session,
            writer.prepare(rt.engine.dialect, [tuple(r[c] for c in COLUMNS) for r in rows]),
        )
    now = utcnow()
    # Every row but those of quantity 3 reads as read.
    ready = cas.prepare(
        rt.engine.dialect,
        [(r["id"], "cancelled", now, r["quantity"] if r["quantity"] < 3 else 9) for r in rows],
    )
    with rt.unit_of_work() as session:
        changed = cas.write(session, ready)
    expected = {r["id"] for r in rows if r["quantity"] < 3}
    assert changed == len(expected)
    with rt.session_factory() as session:
        statuses = {
            key: status for key, status in session.execute(select(Allocation.id, Allocation.status))
        }
    assert len(statuses) == len(rows)
    assert {key for key, status in statuses.items() if status == "cancelled"} == expected


def test_a_compare_and_set_given_a_key_twice_changes_its_row_once(
    stack: Stack, need_line: tuple[uuid.UUID, uuid.UUID]
) -> None:
    rt = stack.runtime("dispatch")
    table = cast(Table, Allocation.__table__)
    row = _row(*need_line, quantity=4)
    writer = BulkInsert(table, COLUMNS)
    with rt.unit_of_work() as session:
        writer.write(session, writer.prepare(rt.engine.dialect, [tuple(row[c] for c in COLUMNS)]))
    cas = BulkCompareAndSet(table, "id", ("status", "updated_at"), ("status",))
    now = utcnow()
    ready = cas.prepare(
        rt.engine.dialect,
        [(row["id"], "cancelled", now, "proposed"), (row["id"], "released", now, "proposed")],
    )
    with rt.unit_of_work() as session:
        assert cas.write(session, ready) == 1
    with rt.session_factory() as session:
        found = session.get(Allocation, row["id"])
        assert found is not None and found.status in {"cancelled", "released"}


def test_a_sqlite_connection_s_own_limit_on_parameters_is_kept(
    stack: Stack, need_line: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """A SQLite built or set with a lower limit on a statement's bound values than the
    default gets statements of fewer rows: none is refused for too many variables."""
    import sqlite3

    rt = stack.runtime("dispatch")
    if rt.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's limit on bound parameters")
    table = cast(Table, Allocation.__table__)
    rows = [_row(*need_line, quantity=2) for _ in range(40)]
    writer = BulkInsert(table, COLUMNS)
    cas = BulkCompareAndSet(table, "id", ("status", "updated_at"), ("quantity",))
    now = utcnow()
    with rt.unit_of_work() as session:
        raw = cast(Any, session.connection().connection.dbapi_connection)
        was = raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 3 * len(COLUMNS))
        try:
            writer.write(
                session,
                writer.prepare(rt.engine.dialect, [tuple(r[c] for c in COLUMNS) for r in rows]),
            )
            ready = cas.prepare(rt.engine.dialect, [(r["id"], "cancelled", now, 2) for r in rows])
            assert cas.write(session, ready) == len(rows)
        finally:
            raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, was)
    assert sqlite_rows_per_statement(len(COLUMNS), 3 * len(COLUMNS)) == 3
