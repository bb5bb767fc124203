"""Periodic work on shipments, scheduled by beat and run on the dispatch worker: the
overdue watch (no update for too long, or past the ETA and not delivered).

Each shipment is flagged in its own transaction, under its row lock and checked again
there, so overlapping runs flag it once and one failure holds back none of the rest.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from services.dispatch.shipments import service as shipments
from shared.db import utcnow
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)

FLAG_OVERDUE_TASK = "dispatch.flag_overdue_shipments"


def flag_overdue_shipments(rt: ServiceRuntime, now: datetime | None = None) -> int:
    """Flag the shipments overdue at ``now`` (``shipment.overdue`` for each, once);
    returns how many were flagged."""
    now = now or utcnow()
    stale_after = timedelta(seconds=rt.settings.shipment_stale_after)
    with rt.session_factory() as session:
        due = shipments.due_overdue(session, now, stale_after)
    flagged = 0
    for shipment_id in due:
        try:
            with rt.unit_of_work() as session:
                if shipments.flag_overdue(session, rt.outbox, shipment_id, now, stale_after):
                    flagged += 1
        except Exception:
            log.exception("shipment %s was not checked; the next run tries again", shipment_id)
    if flagged:
        log.info("%d shipment(s) overdue", flagged)
    return flagged


def register_shipment_tasks(rt: ServiceRuntime) -> None:
    @rt.celery.task(name=FLAG_OVERDUE_TASK, shared=False, time_limit=300, soft_time_limit=270)
    def flag_overdue() -> int:
        return flag_overdue_shipments(rt)
