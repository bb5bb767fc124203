"""Pooled server connections are pinged only after lying idle (shared.db.ping_when_idle):
one used a moment ago goes out as it is, one idle longer is pinged, and one that no
longer answers is replaced by a fresh connection before anyone uses it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from shared.db import ping_when_idle


def _engine(
    tmp_path: Path, idle: float, pings: list[Any], alive: list[bool], failure: str = "lost"
) -> Any:
    engine = create_engine(f"sqlite:///{tmp_path / 'pool.db'}")
    real = engine.dialect.do_ping
    dbapi = engine.dialect.loaded_dbapi

    def ping(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        if not alive[0]:
            alive[0] = True  # the next (fresh) connection answers
            if failure == "lost":  # what the driver says of a connection gone
                raise dbapi.ProgrammingError("Cannot operate on a closed database.")
            raise dbapi.OperationalError("disk I/O error")
        return bool(real(dbapi_connection))

    engine.dialect.do_ping = ping  # type: ignore[method-assign]
    ping_when_idle(engine, idle=idle)
    return engine


def _use(engine: Any) -> Any:
    with engine.connect() as conn:
        assert conn.execute(text("select 1")).scalar() == 1
        return conn.connection.dbapi_connection


def test_a_connection_used_a_moment_ago_is_not_pinged(tmp_path: Path) -> None:
    pings: list[Any] = []
    engine = _engine(tmp_path, 60.0, pings, [True])
    first = _use(engine)
    for _ in range(5):
        assert _use(engine) is first
    assert pings == []


def test_an_idle_connection_is_pinged_and_kept_when_it_answers(tmp_path: Path) -> None:
    pings: list[Any] = []
    engine = _engine(tmp_path, 0.05, pings, [True])
    first = _use(engine)  # a fresh connection: no ping
    assert pings == []
    time.sleep(0.1)
    assert _use(engine) is first
    assert pings == [first]


def test_an_idle_connection_that_no_longer_answers_is_replaced(tmp_path: Path) -> None:
    pings: list[Any] = []
    alive = [True]
    engine = _engine(tmp_path, 0.05, pings, alive)
    first = _use(engine)
    time.sleep(0.1)
    alive[0] = False
    second = _use(engine)
    assert second is not first
    assert pings == [first]  # the fresh one went out unpinged
    with pytest.raises(Exception, match="closed"):
        first.execute("select 1")


def test_a_ping_failing_otherwise_than_for_a_lost_connection_is_raised(
    tmp_path: Path,
) -> None:
    pings: list[Any] = []
    alive = [True]
    engine = _engine(tmp_path, 0.05, pings, alive, failure="other")
    _use(engine)
    time.sleep(0.1)
    alive[0] = False
    with pytest.raises(Exception, match="disk I/O error"):
        _use(engine)
