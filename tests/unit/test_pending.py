"""What a transaction collects for after its commit follows its savepoints
(shared.pending.Pending): a savepoint released keeps its share, one rolled back or
closed after a failing flush drops it, a transaction ended without its commit drops
everything, and the commit hands the rest over once."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from shared.db import make_engine
from shared.pending import Pending

ROWS = Table("rows", MetaData(), Column("id", Integer, primary_key=True))


def _sessions(tmp_path: Path) -> tuple[sessionmaker[Session], Pending, list[list[str]]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'pending.db'}")
    ROWS.metadata.create_all(engine)
    factory = sessionmaker(bind=engine)
    pending = Pending("test.pending")
    pending.listen(factory)
    handed: list[list[str]] = []

    from sqlalchemy import event

    @event.listens_for(factory, "after_commit")
    def _committed(session: Session) -> None:
        if not session.in_nested_transaction():
            handed.append(pending.take(session) or [])

    return factory, pending, handed


def test_savepoints_released_keep_their_share_and_undone_ones_drop_it(tmp_path: Path) -> None:
    factory, pending, handed = _sessions(tmp_path)
    with factory() as session, session.begin():
        pending.append(session, "before")
        with session.begin_nested():
            pending.append(session, "released")
            with session.begin_nested():
                pending.append(session, "released inside")
        savepoint = session.begin_nested()
        pending.extend(session, ["rolled back", "with it"])
        savepoint.rollback()
        session.execute(insert(ROWS), [{"id": 1}])
        # A flush failing inside a savepoint rolls it back with no rollback event of
        # its own: its share goes all the same.
        with pytest.raises(IntegrityError), session.begin_nested():
            pending.append(session, "failed flush")
            session.execute(insert(ROWS), [{"id": 1}])
        outer = session.begin_nested()
        pending.append(session, "in a savepoint rolled back")
        inner = session.begin_nested()
        pending.append(session, "released, its parent rolled back")
        inner.commit()
        outer.rollback()
        pending.append(session, "after")
    assert handed == [["before", "released", "released inside", "after"]]
    assert "test.pending" not in session.info


def test_a_transaction_ended_without_its_commit_hands_nothing_over(tmp_path: Path) -> None:
    factory, pending, handed = _sessions(tmp_path)
    with pytest.raises(RuntimeError), factory() as session, session.begin():
        pending.append(session, "lost")
        raise RuntimeError("given up")
    with factory() as session, session.begin():
        pending.append(session, "next")
    assert handed == [["next"]]
