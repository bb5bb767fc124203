"""A service's write request whose transaction the database ended to break a deadlock
(or a serialization conflict) is run again when its view is marked to be, and answered
503 with Retry-After otherwise or if the conflict outlasts the attempts: never a 500,
never half-written, never done twice. A read is not run again, nor a write that failed
for another reason, nor one that already committed work of its own. An Idempotency-Key
is stamped by the attempt that commits. On PostgreSQL, two requests that lock the same
two rows in opposite orders both succeed."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.web import CONFLICT_ATTEMPTS, retries_on_conflict


class _Orig(Exception):
    """A driver error as psycopg raises it, with its SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def _conflict(sqlstate: str = "40P01") -> OperationalError:
    return OperationalError("UPDATE ...", {}, _Orig(sqlstate))


def _dispatch(settings: Settings) -> Flask:
    from services.dispatch.app import create_app

    return create_app(settings)


def test_a_marked_write_that_lost_a_deadlock_is_run_again(settings: Settings) -> None:
    app = _dispatch(settings)
    rt = app.extensions["aidlink"]
    calls: list[str] = []
    failing: dict[str, Any] = {
        "count": 0,
        "sqlstate": "40P01",
        "commit_first": False,
        "savepoint_first": False,
    }

    def view() -> Any:
        calls.append("call")
        if failing["commit_first"]:
            # Work of its own committed before the conflict: never run twice.
            with rt.unit_of_work() as session:
                session.execute(text("INSERT INTO matching_locks (item) VALUES (:i)"), {"i": "x"})
        if failing.get("savepoint_first"):
            # A savepoint released, then the conflict in the same transaction.
            with rt.unit_of_work() as session:
                with session.begin_nested():
                    session.execute(
                        text("INSERT INTO matching_locks (item) VALUES (:i)"), {"i": "y"}
                    )
                if len(calls) <= failing["count"]:
                    raise _conflict(failing["sqlstate"])
        if len(calls) <= failing["count"]:
            raise _conflict(failing["sqlstate"])
        return {"done": len(calls)}

    @retries_on_conflict
    def marked() -> Any:
        return view()

    app.add_url_rule("/probe/conflict", "probe_conflict", marked, methods=["GET", "POST"])
    app.add_url_rule("/probe/unmarked", "probe_unmarked", view, methods=["POST"])
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

    # A view not marked (it may call another system, or commit more than once) is
    # not run again: 503 at once, for the client to send again.
    calls.clear()
    failing.update(count=1)
    answer = client.post("/probe/unmarked")
    assert answer.status_code == 503 and len(calls) == 1

    # A savepoint released is not work committed: run again.
    calls.clear()
    failing.update(count=1, savepoint_first=True)
    answer = client.post("/probe/conflict")
    assert answer.status_code == 200 and len(calls) == 2
    failing["savepoint_first"] = False

    # Nor a marked one that committed work of its own before the conflict.
    calls.clear()
    failing.update(count=1, commit_first=True)
    assert client.post("/probe/conflict").status_code == 503
    assert len(calls) == 1
    failing["commit_first"] = False

    # A read is not run again (it changed nothing and is asked again at no cost).
    calls.clear()
    failing.update(count=1)
    assert client.get("/probe/conflict").status_code == 503
    assert len(calls) == 1

    # Any other database error is not a conflict: once, and a 500.
    calls.clear()
    failing.update(count=1, sqlstate="23505")
    assert client.post("/probe/conflict").status_code == 500
    assert len(calls) == 1
    rt.dispose()


def test_the_attempt_that_commits_stamps_the_idempotency_key(settings: Settings) -> None:
    """The first attempt stamps the key as its commit begins and then loses the
    conflict at the commit, taking the stamp with it: the attempt that commits stamps
    it again, so a repeat of the request gets the answer and the work is done once."""
    from services.dispatch.models import MatchingLock
    from services.dispatch.models import messaging as dispatch_messaging
    from shared.db import utcnow
    from shared.events import new_event
    from shared.identity import INTERNAL_HEADER, Identity, sign_internal

    # The relay inline, as the tests' and a development server's default: it commits
    # a transaction of its own in the request right after the work's.
    app = _dispatch(settings.with_overrides(outbox_relay="inline"))
    rt = app.extensions["aidlink"]
    commits = {"refused": 0}

    def refuse_first_commit(session: Session) -> None:
        # After the key's stamp (its listener came first), as a deadlock at the
        # commit's last flush would.
        if session.info.get("probe") and commits["refused"] == 0:
            commits["refused"] += 1
            raise _conflict()

    event.listen(rt.session_factory, "before_commit", refuse_first_commit)

    def view() -> Any:
        with rt.unit_of_work() as session:
            session.info["probe"] = True
            session.add(MatchingLock(item=f"probe-{uuid.uuid4().hex[:8]}"))
            rt.outbox.add(
                session,
                new_event(
                    "org.member_removed",
                    {"org_id": uuid.uuid4(), "user_id": uuid.uuid4(), "removed_at": utcnow()},
                    producer="dispatch",
                    aggregate_id=uuid.uuid4(),
                    aggregate_version=1,
                ),
            )
        return {"done": True}, 201

    app.add_url_rule(
        "/api/v1/probe-work", "probe_work", retries_on_conflict(view), methods=["POST"]
    )
    identity = Identity(
        user_id=uuid.uuid4(), org_id=uuid.uuid4(), roles=frozenset({"coordinator"}), via="session"
    )
    headers = {
        INTERNAL_HEADER: sign_internal(identity, rt.settings.internal_key, "dispatch", 600),
        "Idempotency-Key": "probe-1",
    }
    client = app.test_client()
    first = client.post("/api/v1/probe-work", headers=headers)
    assert first.status_code == 201, first.get_json()
    assert commits["refused"] == 1
    with rt.session_factory() as session:
        key = session.scalars(select(dispatch_messaging.idempotency)).one()
        assert key.applied_at is not None
        made = session.scalars(select(MatchingLock).where(MatchingLock.item.like("probe-%")))
        assert len(list(made)) == 1
        # Its event was relayed and marked so: the relay's own commit, in the same
        # request, found the key applied rather than stamping it again.
        [row] = session.scalars(select(dispatch_messaging.outbox)).all()
        assert row.published_at is not None
    again = client.post("/api/v1/probe-work", headers=headers)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    with rt.session_factory() as session:
        made = session.scalars(select(MatchingLock).where(MatchingLock.item.like("probe-%")))
        assert len(list(made)) == 1
    rt.dispose()


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

    app.add_url_rule("/probe/<order>", "probe_order", retries_on_conflict(view), methods=["POST"])
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
