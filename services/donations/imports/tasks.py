"""The import's Celery tasks: the job a worker runs, and the sweep that queues again
the imports whose task was lost."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from services.donations.imports.service import (
    TASK_NAME,
    TASK_SOFT_TIME_LIMIT,
    TASK_TIME_LIMIT,
    TRANSIENT_ERRORS,
    ImportRunner,
    enqueue,
)
from services.donations.imports.spreadsheet import message
from shared.db import utcnow
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)

# An import queued this long and never started lost its task message.
IMPORT_QUEUED_GRACE = timedelta(minutes=5)


def register_import_tasks(rt: ServiceRuntime) -> None:
    @rt.celery.task(
        name=TASK_NAME,
        shared=False,
        bind=True,
        max_retries=5,
        soft_time_limit=TASK_SOFT_TIME_LIMIT,
        time_limit=TASK_TIME_LIMIT,
    )
    def import_pledges(self: Any, job_id: str) -> str | None:
        """Check and import the rows of an uploaded spreadsheet (see the module docs)."""
        runner = ImportRunner(rt)
        try:
            return runner.run(uuid.UUID(job_id))
        except TRANSIENT_ERRORS as exc:
            if self.request.retries >= self.max_retries:
                runner.fail(uuid.UUID(job_id), message("internal_error", "en"))
                raise
            raise self.retry(exc=exc, countdown=min(60, 2**self.request.retries)) from exc

    @rt.celery.task(name="donations.resume_imports", shared=False, time_limit=120)
    def resume_imports() -> int:
        """Queue again the imports whose task was lost: queued for a while and never
        started (a broker that dropped the message), or running longer than the task's
        hard time limit (a worker that died without giving the message back). A run
        that is in fact alive is not harmed: each write re-checks the job's progress."""
        from sqlalchemy import or_, select

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
                                ImportJob.started_at < now - timedelta(seconds=TASK_TIME_LIMIT + 60)
                            ),
                        )
                    )
                )
            )
        for job_id in stuck:
            enqueue(rt, job_id)
        if stuck:
            log.warning("queued %d stalled import(s) again", len(stuck))
        return len(stuck)
