"""Matching's Celery tasks: a debounced run per item, and the periodic run over all."""

from __future__ import annotations

from typing import Any

from services.dispatch.matching.service import run
from services.dispatch.models import MatchingLock
from shared.runtime import ServiceRuntime


def register_matching_tasks(rt: ServiceRuntime) -> None:
    @rt.celery.task(
        name="dispatch.match_item", shared=False, time_limit=600, bind=True, max_retries=None
    )
    def match_item(self: Any, item: str) -> str:
        """A run for one item, unless a run that started after the last change of the
        item's supply or demand has already covered it. While another run holds the
        item, the task comes back later: that run may have read the item before the
        change this one was queued for, and later changes wait for this one."""
        with rt.session_factory() as session:
            lock = session.get(MatchingLock, item)
            if (
                lock is not None
                and lock.requested_at is not None
                and lock.last_started_at is not None
                and lock.last_started_at > lock.requested_at
            ):
                return "covered"
        done = run(
            rt,
            items=[item],
            dry_run=not rt.settings.matching_auto_approve,
            trigger="event",
            wait=True,
        )
        if done is None:
            raise self.retry(countdown=max(1.0, rt.settings.matching_debounce))
        return done.status

    @rt.celery.task(name="dispatch.match_all", shared=False, time_limit=1800)
    def match_all() -> str:
        done = run(
            rt,
            items=None,
            dry_run=not rt.settings.matching_auto_approve,
            trigger="schedule",
            wait=True,
        )
        return done.status if done is not None else "busy"
