"""Dispatch's writers lock a need's rows in one order: its lines first, then the need.
Matching runs, the saga and receipts move need lines' counters and then settle their
needs' statuses; a change of the need itself (cancelled, amended, expired) takes its
lines before the need, so the two wait for each other in turn rather than in a cycle
that PostgreSQL breaks by ending one of them."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import select, text, update

from services.dispatch.models import Need, NeedLine
from services.dispatch.needs import service as needs
from shared.config import Settings


def _need(session: Any, outbox: Any) -> Need:
    return needs.create_need(
        session,
        outbox,
        org_id=uuid.uuid4(),
        org_verified=True,
        data={
            "lines": [
                {"item": "mask", "quantity": "40", "unit": "piece", "urgency": "high"},
                {"item": "gloves_exam", "quantity": "10", "unit": "pair", "urgency": "high"},
            ],
            "location": {"region": "420103", "address": "ward 3"},
        },
    )


def _waiting_for_a_lock(rt: Any) -> int:
    with rt.engine.connect() as conn:
        return int(
            conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        )


@pytest.mark.parametrize("change", ["cancel", "expire"])
def test_a_change_of_a_need_and_a_receipt_settling_it_wait_in_turn(
    settings: Settings, change: str
) -> None:
    if not settings.database_url("dispatch").startswith("postgresql"):
        pytest.skip("on SQLite writers take the database's one write lock in turn")
    from services.dispatch.app import create_app

    rt = create_app(settings).extensions["aidlink"]
    with rt.unit_of_work() as session:
        need = _need(session, rt.outbox)
        need_id, line_id = need.id, need.lines[0].id
        if change == "expire":
            need.expires_at = need.created_at
    failures: list[BaseException] = []
    line_held = threading.Event()
    settled = threading.Event()

    def receipt() -> None:
        # As a receipt does: the need line's counters moved, then the need settled.
        try:
            with rt.unit_of_work() as session:
                session.execute(
                    update(NeedLine)
                    .where(NeedLine.id == line_id)
                    .values(received=NeedLine.received)
                    .execution_options(synchronize_session=False)
                )
                line_held.set()
                # The change below is now waiting for a lock: for this need line (its
                # lines first), not holding the need this settling asks for next.
                deadline = time.monotonic() + 10
                while _waiting_for_a_lock(rt) == 0 and time.monotonic() < deadline:
                    time.sleep(0.02)
                needs.settle_received(session, rt.outbox, need_id)
            settled.set()
        except BaseException as exc:
            failures.append(exc)

    def changing() -> None:
        try:
            line_held.wait(10)
            with rt.unit_of_work() as session:
                if change == "cancel":
                    locked = needs.lock_need(session, need_id)
                    assert locked is not None
                    needs.cancel_need(session, rt.outbox, locked, "no longer needed")
                else:
                    assert needs.expire_need(session, rt.outbox, need_id, need_expiry(session))
        except BaseException as exc:
            failures.append(exc)

    def need_expiry(session: Any) -> Any:
        return session.scalar(select(Need.expires_at).where(Need.id == need_id))

    threads = [threading.Thread(target=receipt), threading.Thread(target=changing)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # Before, the change held the need and waited for the line while the receipt held
    # the line and waited for the need: PostgreSQL ended one of them (40P01).
    assert failures == []
    assert settled.is_set()
    with rt.session_factory() as session:
        status = session.scalar(select(Need.status).where(Need.id == need_id))
    assert status == ("cancelled" if change == "cancel" else "expired")
    rt.dispose()
