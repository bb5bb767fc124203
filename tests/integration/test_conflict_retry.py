"""A service's write request whose transaction the database ended to break a deadlock
(or a serialization conflict) is run again, and answered 503 with Retry-After if the
conflict outlasts the attempts: never a 500, never half-written. A read is not run again,
nor is a write that failed for another reason. On PostgreSQL, two requests that lock the
same two rows in opposite orders both succeed."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from shared.config import Settings
from shared.web import CONFLICT_ATTEMPTS


class _Orig(Exception):
    """A driver error as psycopg raises it, with its SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def _dispatch(settings: Settings) -> Flask:
    from services.dispatch.app import create_app

    return create_app(settings)


def test_a_write_that_lost_a_deadlock_is_run_again(settings: Settings) -> None:
    app = _dispatch(settings)
    calls: list[str] = []
    failing: dict[str, Any] = {"count": 0, "sqlstate": "40P01"}

    def view() -> Any:
        calls.append("call")
        if len(calls) <= failing["count"]:
            raise OperationalError("UPDATE ...", {}, _Orig(failing["sqlstate"]))
        return {"done": len(calls)}

    app.add_url_rule("/probe/conflict", "probe_conflict", view, methods=["GET", "POST"])
    client = app.test_client()

    # Lost once: run again, answered as if nothing had happened.
    failing["count"] = 1
    answer = client.post("/probe/conflict")
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {"done": 2}

    # A serialization failure is the same kind of answer.
    calls.clear()
    failing.update(count=1, sqlstate="40001")
    assert client.post("/probe/conflict").status_code == 200
    assert len(calls) == 2

    # Lost every time: the attempts, then 503 with Retry-After, naming what happened.
    calls.clear()
    failing.update(count=99, sqlstate="40P01")
    answer = client.post("/probe/conflict")
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "1"
    assert answer.get_json()["type"].endswith("/concurrent-conflict")
    assert len(calls) == CONFLICT_ATTEMPTS

    # A read is not run again (it changed nothing and is asked again at no cost).
    calls.clear()
    failing.update(count=1, sqlstate="40P01")
    assert client.get("/probe/conflict").status_code == 503
    assert len(calls) == 1

    # Any other database error is not a conflict: once, and a 500.
    calls.clear()
    failing.update(count=1, sqlstate="23505")
    assert client.post("/probe/conflict").status_code == 500
    assert len(calls) == 1
    app.extensions["aidlink"].dispose()


def test_two_writes_locking_two_rows_in_opposite_orders_both_succeed(
    settings: Settings,
) -> None:
    if not settings.database_url("dispatch").startswith("postgresql"):
        pytest.skip("on SQLite writers take the database's one write lock in turn")
    app = _dispatch(settings)
    rt = app.extensions["aidlink"]
    with rt.unit_of_work() as session:
        session.execute(text("INSERT INTO matching_locks (item) VALUES ('mask'), ('gloves_exam')"))
    both_hold_one = threading.Barrier(2, timeout=10)
    attempts: dict[str, int] = {"forward": 0, "backward": 0}

    def view(order: str) -> Any:
        attempts[order] += 1
        first, second = ("mask", "gloves_exam") if order == "forward" else ("gloves_exam", "mask")
        with rt.unit_of_work() as session:
            lock = text("SELECT item FROM matching_locks WHERE item = :item FOR UPDATE")
            session.execute(lock, {"item": first})
            if attempts[order] == 1:
                # Each holds its first row before asking for the other's: a deadlock.
                both_hold_one.wait()
            session.execute(lock, {"item": second})
            session.execute(
                text("UPDATE matching_locks SET requested_at = now() WHERE item = :item"),
                {"item": second},
            )
        return {"order": order}

    app.add_url_rule("/probe/<order>", "probe_order", view, methods=["POST"])
    answers: dict[str, int] = {}

    def post(order: str) -> None:
        answers[order] = app.test_client().post(f"/probe/{order}").status_code

    threads = [threading.Thread(target=post, args=(order,)) for order in attempts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == {"forward": 200, "backward": 200}
    # PostgreSQL ended one of the two; that one ran again.
    assert sorted(attempts.values()) == [1, 2]
    rt.dispose()
