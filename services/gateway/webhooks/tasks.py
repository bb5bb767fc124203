"""The webhooks' event handlers (each event a subscription wants becomes a delivery)
and Celery tasks (an attempt, and the sweep for lost ones)."""

from __future__ import annotations

import uuid

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from services.gateway.webhooks.service import (
    DELIVER_TASK,
    PENDING_DELIVERIES,
    SWEEP_TASK,
    WEBHOOK_EVENT_TYPES,
    deliver,
    enqueue,
    fan_out,
    sweep,
)
from shared.events import Event
from shared.identity import SYSTEM, set_identity
from shared.inbox import Handler
from shared.runtime import ServiceRuntime
from shared.taskqueue import TRANSIENT_ERRORS


def _handle(session: Session, evt: Event) -> None:
    fan_out(session, evt)


# The gateway's inbox handlers.
HANDLERS: dict[str, Handler] = {event_type: _handle for event_type in WEBHOOK_EVENT_TYPES}


def register_webhook_tasks(rt: ServiceRuntime) -> None:
    """Register the delivery and sweep tasks on the gateway's Celery app, and queue the
    attempts each committed transaction scheduled."""

    def _after_commit(session: Session) -> None:
        if session.in_nested_transaction():
            # A savepoint released (the inbox applies each event in one): its
            # deliveries wait for the real commit, or their rows are not there yet.
            return
        for delivery_id, countdown in PENDING_DELIVERIES.take(session) or ():
            enqueue(rt, delivery_id, countdown)

    PENDING_DELIVERIES.listen(rt.session_factory)
    sa_event.listen(rt.session_factory, "after_commit", _after_commit)

    @rt.celery.task(
        name=DELIVER_TASK,
        shared=False,
        autoretry_for=TRANSIENT_ERRORS,
        retry_backoff=True,
        retry_backoff_max=300,
        retry_jitter=True,
        max_retries=5,
    )
    def deliver_webhook(delivery_id: str) -> str:
        set_identity(SYSTEM)
        return deliver(rt, uuid.UUID(delivery_id)).value

    @rt.celery.task(name=SWEEP_TASK, shared=False, time_limit=120, soft_time_limit=100)
    def sweep_webhooks() -> int:
        return sweep(rt)
