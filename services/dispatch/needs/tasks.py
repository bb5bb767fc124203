"""Periodic work on needs, scheduled by beat and run on the dispatch worker: expiry of
needs not reconfirmed in time, and the reminders before it.

Each need is handled in its own transaction, so one failure does not hold back the
rest, and each is checked again under its row lock, so overlapping runs act once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from sqlalchemy.orm import Session

from services.dispatch.needs import service as needs
from shared.db import utcnow
from shared.outbox import Outbox
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)


def _each(
    rt: ServiceRuntime,
    due: list[uuid.UUID],
    act: Callable[[Session, Outbox, uuid.UUID], bool],
) -> int:
    done = 0
    for need_id in due:
        try:
            with rt.unit_of_work() as session:
                if act(session, rt.outbox, need_id):
                    done += 1
        except Exception:
            log.exception("need %s was not handled; the next run tries again", need_id)
    return done


def register_need_tasks(rt: ServiceRuntime) -> None:
    @rt.celery.task(name="dispatch.expire_needs", shared=False, time_limit=300)
    def expire_needs() -> int:
        """Open needs past their expiry leave matching (need.expired); what is already
        allocated to them stays."""
        now = utcnow()
        with rt.session_factory() as session:
            due = needs.due_for_expiry(session, now)
        expired = _each(rt, due, lambda s, o, i: needs.expire_need(s, o, i, now))
        if expired:
            log.info("%d need(s) expired", expired)
        return expired

    @rt.celery.task(name="dispatch.remind_needs", shared=False, time_limit=300)
    def remind_needs() -> int:
        """Needs expiring within the reminder lead time get need.reconfirm_due, once."""
        now = utcnow()
        with rt.session_factory() as session:
            due = needs.due_for_reminder(session, now)
        reminded = _each(rt, due, lambda s, o, i: needs.remind_need(s, o, i, now))
        if reminded:
            log.info("%d need(s) due for reconfirmation", reminded)
        return reminded
