"""Periodic work of the donations service, scheduled by beat and run on its worker."""

from __future__ import annotations

import logging
from datetime import timedelta

from services.donations.pledges import service as pledges
from shared.db import utcnow
from shared.web import ServiceRuntime

log = logging.getLogger(__name__)

# An import queued this long and never started lost its task message.
IMPORT_QUEUED_GRACE = timedelta(minutes=5)


def register_tasks(rt: ServiceRuntime) -> None:
    @rt.celery.task(name="donations.expire_perishables", shared=False, time_limit=300)
    def expire_perishables() -> int:
        """Close perishable lines past their best-before date and release what they
        had not shipped."""
        with rt.unit_of_work() as session:
            expired = pledges.expire_perishables(session, rt.outbox, utcnow().date())
        if expired:
            log.info("%d perishable line(s) expired", expired)
        return expired

    @rt.celery.task(name="donations.release_overdue_reservations", shared=False, time_limit=300)
    def release_overdue_reservations() -> int:
        """Release reservations not shipped by their deadline, each in its own
        transaction, so one failure does not hold back the rest."""
        released = 0
        with rt.session_factory() as session:
            overdue = [r.id for r in pledges.overdue_reservations(session, utcnow())]
        for reservation_id in overdue:
            with rt.unit_of_work() as session:
                from services.donations.models import Reservation

                reservation = session.get(Reservation, reservation_id)
                if reservation is not None and pledges.release_reservation(
                    session, rt.outbox, reservation, "not shipped by its deadline"
                ):
                    released += 1
        if released:
            log.info("released %d overdue reservation(s)", released)
        return released

    @rt.celery.task(name="donations.resume_imports", shared=False, time_limit=120)
    def resume_imports() -> int:
        """Queue again the imports whose task was lost: queued for a while and never
        started (a broker that dropped the message), or running longer than the task's
        hard time limit (a worker that died without giving the message back). A run
        that is in fact alive is not harmed: each write re-checks the job's progress."""
        from sqlalchemy import or_, select

        from services.donations.imports import service as imports
        from services.donations.models import ImportJob

        now = utcnow()
        with rt.session_factory() as session:
            stuck = list(
                session.scalars(
                    select(ImportJob.id).where(
                        or_(
                            (ImportJob.status == "queued")
                            & (ImportJob.created_at < now - IMPORT_QUEUED_GRACE),
                            (ImportJob.status == "running")
                            & (
                                ImportJob.started_at
                                < now - timedelta(seconds=imports.TASK_TIME_LIMIT + 60)
                            ),
                        )
                    )
                )
            )
        for job_id in stuck:
            imports.enqueue(rt, job_id)
        if stuck:
            log.warning("queued %d stalled import(s) again", len(stuck))
        return len(stuck)
