"""Runs of one item never overlap: the lock holds across runtimes (as across processes)
and a holder that died loses it when it expires."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from services.dispatch import matching_service
from services.dispatch.app import create_app
from services.dispatch.models import MatchingLock
from shared.db import utcnow
from tests.support.stack import Stack


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
