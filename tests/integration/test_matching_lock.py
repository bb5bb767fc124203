"""Runs of one item never overlap: the lock holds across runtimes (as across processes)
and a holder that died loses it when it expires."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from services.dispatch.app import create_app
from services.dispatch.matching import service as matching_service
from services.dispatch.models import MatchingLock, MatchingRun
from shared.db import utcnow
from tests.support.stack import BACKEND, Stack, eventually


def test_a_second_holder_is_refused_until_the_first_releases_or_expires(stack: Stack) -> None:
    one = stack.runtime("dispatch")
    # Another process of the same service: its own app, engine and pool.
    other_app = create_app(stack.settings, testing=True)
    two = other_app.extensions["aidlink"]
    try:
        assert matching_service.acquire(one, ["mask", "gloves_exam"], "one") == []
        assert matching_service.acquire(two, ["gloves_exam"], "two") == ["gloves_exam"]
        # All or nothing: holding "fruit" and wanting "mask" leaves "fruit" free again.
        assert matching_service.acquire(two, ["fruit", "mask"], "two") == ["mask"]
        assert matching_service.acquire(one, ["fruit"], "one-b") == []
        matching_service.release(one, ["fruit"], "one-b")

        # Only the holder releases.
        matching_service.release(two, ["mask"], "two")
        assert matching_service.acquire(two, ["mask"], "two") == ["mask"]
        matching_service.release(one, ["mask", "gloves_exam"], "one")
        assert matching_service.acquire(two, ["mask"], "two") == []

        # A holder that died: its lock lapses.
        with two.unit_of_work() as session:
            session.execute(
                update(MatchingLock)
                .where(MatchingLock.item == "mask")
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
        assert matching_service.acquire(one, ["mask"], "one") == []
    finally:
        two.dispose()


def test_a_manual_run_while_the_item_is_locked_is_a_409(stack: Stack) -> None:
    from tests.support.auth import admin

    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    dispatch = stack.runtime("dispatch")
    assert matching_service.acquire(dispatch, ["mask"], "someone") == []
    busy = client.post(
        "/api/v1/matching/runs", json={"dry_run": True, "items": ["mask"]}, headers=boss.headers
    )
    assert busy.status_code == 409
    assert busy.json["item"] == "mask"
    matching_service.release(dispatch, ["mask"], "someone")
    free = client.post(
        "/api/v1/matching/runs", json={"dry_run": True, "items": ["mask"]}, headers=boss.headers
    )
    assert free.status_code == 201
    assert free.json["status"] == "preview"


def test_a_manual_run_waits_its_turn_behind_a_run_about_to_finish(stack: Stack) -> None:
    from tests.support.auth import admin

    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    dispatch = stack.runtime("dispatch")
    # A run on events holds the item, and finishes a moment later.
    assert matching_service.acquire(dispatch, ["mask"], "run on events") == []
    finishing = threading.Timer(
        1.0, matching_service.release, args=(dispatch, ["mask"], "run on events")
    )
    finishing.start()
    try:
        turn = client.post(
            "/api/v1/matching/runs",
            json={"dry_run": True, "items": ["mask"]},
            headers=boss.headers,
        )
    finally:
        finishing.join()
    assert turn.status_code == 201, turn.json
    assert turn.json["status"] == "preview"


def test_changes_while_a_run_is_on_its_way_join_it_instead_of_queueing_more(
    stack: Stack,
) -> None:
    rt = stack.runtime("dispatch")
    queued: list[str] = []
    rt.celery.send_task = lambda name, args, **_: queued.append(args[0])

    def change(*items: str) -> None:
        with rt.unit_of_work() as session:
            for item in items:
                matching_service.request_matching(session, item)

    change("mask")
    change("mask", "gloves_exam")
    change("mask")
    # One run of each item is on its way; the later changes wait for it.
    assert queued == ["mask", "gloves_exam"]

    # The mask run starts (it reads everything committed so far): a change after
    # that needs a run of its own.
    assert matching_service.acquire(rt, ["mask"], "run") == []
    matching_service.release(rt, ["mask"], "run")
    change("mask")
    change("gloves_exam")
    assert queued == ["mask", "gloves_exam", "mask"]

    # A request whose run never started (its task was lost with a worker) is made
    # again once it is a minute past the debounce.
    with rt.unit_of_work() as session:
        session.execute(
            update(MatchingLock)
            .where(MatchingLock.item == "gloves_exam")
            .values(
                requested_at=utcnow() - timedelta(seconds=62 + stack.settings.matching_debounce)
            )
        )
    change("gloves_exam")
    assert queued == ["mask", "gloves_exam", "mask", "gloves_exam"]


def test_a_request_whose_run_could_not_be_queued_does_not_hold_up_the_next(
    stack: Stack,
) -> None:
    rt = stack.runtime("dispatch")
    queued: list[str] = []
    broker_down = True

    def send_task(name: str, args: list[str], **_: object) -> None:
        if broker_down:
            raise ConnectionError("broker unreachable")
        queued.append(args[0])

    rt.celery.send_task = send_task
    with rt.unit_of_work() as session:
        matching_service.request_matching(session, "mask")
    assert queued == []
    with rt.session_factory() as session:
        lock = session.get(MatchingLock, "mask")
        assert lock is not None and lock.requested_at is None  # withdrawn

    broker_down = False
    with rt.unit_of_work() as session:
        matching_service.request_matching(session, "mask")
    assert queued == ["mask"]


def test_a_run_queued_while_another_holds_the_item_runs_once_it_is_free(stack: Stack) -> None:
    rt = stack.runtime("dispatch")
    worker = stack.start_worker("dispatch")
    # Another run holds the item; it may have read before the change below.
    assert matching_service.acquire(rt, ["mask"], "another run") == []
    with rt.unit_of_work() as session:
        matching_service.request_matching(session, "mask")

    def runs() -> list[MatchingRun]:
        with rt.session_factory() as session:
            return list(session.scalars(select(MatchingRun).where(MatchingRun.trigger == "event")))

    # The queued run finds the item taken, and comes back rather than giving up.
    eventually(lambda: worker.log().count("is already running") >= 2, timeout=60)
    assert "dispatch.match_item" in worker.log() and "retry" in worker.log().lower()
    assert runs() == []
    matching_service.release(rt, ["mask"], "another run")
    eventually(lambda: len(runs()) == 1, timeout=60)
    assert runs()[0].items == ["mask"]
    # Nothing to match: kept for the history, but no preview waits for a coordinator.
    assert runs()[0].status == "empty"


def test_a_change_that_rolls_back_asks_for_no_run(stack: Stack) -> None:
    rt = stack.runtime("dispatch")
    queued: list[str] = []
    rt.celery.send_task = lambda name, args, **_: queued.append(args[0])

    class Refused(Exception):
        pass

    try:
        with rt.unit_of_work() as session:
            matching_service.request_matching(session, "fruit")
            raise Refused
    except Refused:
        pass
    assert queued == []
    with rt.session_factory() as session:
        assert session.get(MatchingLock, "fruit") is None  # nothing written for it

    # The next change that commits asks for the run, making the item's lock row.
    with rt.unit_of_work() as session:
        matching_service.request_matching(session, "fruit")
    assert queued == ["fruit"]
    with rt.session_factory() as session:
        lock = session.get(MatchingLock, "fruit")
        assert lock is not None and lock.requested_at is not None and lock.holder is None


def test_many_first_requests_of_an_item_at_once_make_one_lock_row_and_one_run(
    stack: Stack,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rt = stack.runtime("dispatch")
    queued: list[str] = []
    rt.celery.send_task = lambda name, args, **_: queued.append(args[0])

    def change(_: int) -> None:
        with rt.unit_of_work() as session:
            matching_service.request_matching(session, "vegetables")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(change, range(16)))

    # Each change committed (none failed on the row another made first), one run asked.
    assert queued == ["vegetables"]
    with rt.session_factory() as session:
        rows = session.scalars(select(MatchingLock).where(MatchingLock.item == "vegetables"))
        assert len(list(rows)) == 1


@pytest.mark.skipif(
    BACKEND != "servers", reason="SQLite's one writer at a time already keeps the run out"
)
def test_no_run_starts_while_a_change_that_joined_it_is_committing(stack: Stack) -> None:
    rt = stack.runtime("dispatch")
    rt.celery.send_task = lambda name, args, **_: None
    with rt.unit_of_work() as session:
        matching_service.request_matching(session, "mask")  # a run is on its way
    other_app = create_app(stack.settings, testing=True)
    other = other_app.extensions["aidlink"]
    started: list[list[str]] = []
    try:
        with rt.session_factory() as change, change.begin():
            # A change about to commit learns that it joins the run on its way...
            debounce = stack.settings.matching_debounce
            assert matching_service.shared_lock_rows(change, ["mask"], utcnow(), debounce) == {
                "mask"
            }
            # ... and a second change joins it too, without waiting for the first.
            with rt.session_factory() as second, second.begin():
                assert matching_service.shared_lock_rows(second, ["mask"], utcnow(), debounce) == {
                    "mask"
                }
            # The run cannot start (take the item) until the change has committed.
            runner = threading.Thread(
                target=lambda: started.append(matching_service.acquire(other, ["mask"], "run"))
            )
            runner.start()
            runner.join(timeout=1.0)
            assert runner.is_alive() and started == []
        runner.join(timeout=30)
        assert started == [[]]  # taken, once the change was in
    finally:
        other.dispose()


def _losing_the_connection(rt: Any, monkeypatch: pytest.MonkeyPatch, *, after: bool) -> None:
    """The runtime's next unit of work loses its connection: before its statements run
    (``after=False``), or once it has committed (``after=True``, as when the server
    commits and the connection dies before the answer comes back)."""
    from contextlib import contextmanager

    from sqlalchemy.exc import DBAPIError

    real = rt.unit_of_work
    tries: list[int] = []

    @contextmanager
    def unit_of_work() -> Any:
        tries.append(1)
        lost = DBAPIError(
            "UPDATE matching_locks",
            {},
            Exception("server closed the connection"),
            connection_invalidated=True,
        )
        if len(tries) == 1 and not after:
            raise lost
        with real() as session:
            yield session
        if len(tries) == 1:
            raise lost

    monkeypatch.setattr(rt, "unit_of_work", unit_of_work)


def test_a_release_that_loses_its_connection_is_made_again(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = stack.runtime("dispatch")
    assert matching_service.acquire(rt, ["mask"], "one") == []
    _losing_the_connection(rt, monkeypatch, after=False)
    matching_service.release(rt, ["mask"], "one")
    monkeypatch.undo()
    assert matching_service.acquire(rt, ["mask"], "two") == []  # not held until it expires


def test_an_acquire_whose_commit_is_lost_holds_nothing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import DBAPIError

    rt = stack.runtime("dispatch")
    matching_service.acquire(rt, ["mask"], "warm")  # the lock row exists
    matching_service.release(rt, ["mask"], "warm")
    _losing_the_connection(rt, monkeypatch, after=True)
    with pytest.raises(DBAPIError):
        matching_service.acquire(rt, ["mask"], "one")  # taken, but the answer was lost
    monkeypatch.undo()
    assert matching_service.acquire(rt, ["mask"], "two") == []
