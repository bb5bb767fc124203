"""Catch-up: every event a producer committed reaches every subscriber, whatever the
broker lost.

The broker is the fast path, the databases the truth. The outbox row of an event
names the subscribers that have not yet confirmed it (``awaiting``). Every tenth of
``AIDLINK_EVENT_DELIVERY_BOUND`` (beat's ``<producer>.catch_up``), a producer sends
each subscriber the ids of the events it published to it at least that long ago and
has not heard back about (``<subscriber>.report_received``, up to ``BATCH`` ids).
The subscriber looks them up in its own inbox and dead letters and answers which it
has and which it lacks (``<producer>.resend_missing``). The producer strikes the
subscriber off the rows it has, and sends the others again, to that subscriber
alone; its inbox makes a copy it already had a no-op, so a spurious re-send costs a
message and nothing more.

Why nothing is skipped: no sequence number or watermark is involved. Each row is
asked about until its subscriber confirms it, so a transaction that commits late (on
PostgreSQL a later row may commit before an earlier one) is simply asked about in the
first round after it was published. Why it is cheap: rows leave ``awaiting`` in
bulk, one round trip per subscriber and round; the list travels on the subscriber's
own queue behind the events it names, so under a backlog it is read after them and
finds them taken, instead of having them sent twice. Why it is bounded: a lost
event is asked about in the first round at least one interval after its
publication, the answer comes back within the subscriber's queue time, and a list
that got no answer within two intervals (lost itself) is sent again; with the
default bound of 300 s, a lost event is sent again within about two minutes.

Manifests, answers and re-sends travel on the broker too, and may be lost with it:
then nothing is confirmed, and the next round asks again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, String, func, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from shared.config import SERVICES
from shared.db import UTCDateTime, upsert_insert, utcnow
from shared.events import subscribers_of
from shared.inbox import Inbox
from shared.outbox import Outbox

log = logging.getLogger(__name__)

# Ids per question (and per statement when confirming them).
BATCH = 1000
_CHUNK = 300


class CatchUpRow:
    """At the producer, one row per subscriber: when it was last asked and answered,
    and how many events the catch-up confirmed and sent again (a copy sent again is
    counted as recovered where the subscriber took it in: ``inbox.caught_up``)."""

    if TYPE_CHECKING:

        def __init__(self, **columns: Any) -> None: ...

    __tablename__ = "catch_up"

    subscriber: Mapped[str] = mapped_column(String(32), primary_key=True)
    asked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    confirmed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    resent: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_resent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


@dataclass(frozen=True)
class Behind:
    """What one subscriber has not confirmed of one producer's events."""

    producer: str
    subscriber: str
    unconfirmed: int
    oldest: datetime | None
    confirmed: int
    resent: int
    last_resent_at: datetime | None
    asked_at: datetime | None
    answered_at: datetime | None


class CatchUp:
    """A service's part in the catch-up, as producer (``ask``, ``on_answer``) and as
    subscriber (``report``)."""

    def __init__(
        self,
        *,
        service: str,
        outbox: Outbox,
        inbox: Inbox,
        rows: type[CatchUpRow],
        session_factory: sessionmaker[Session],
        send_task: Callable[..., Any],
        bound: float,
        enabled: bool = True,
    ) -> None:
        self.service = service
        self.outbox = outbox
        self.inbox = inbox
        self.rows = rows
        self.session_factory = session_factory
        self.send_task = send_task
        self.enabled = enabled
        self.bound = bound

    @property
    def interval(self) -> float:
        """Seconds between rounds, and how long after its publication an event is
        first asked about."""
        return self.bound / 10

    # The producer --------------------------------------------------------------------

    def ask(
        self,
        now: datetime | None = None,
        *,
        only: str | None = None,
        after: datetime | None = None,
    ) -> dict[str, int]:
        """One round: ask each subscriber (or ``only`` one) about the events it has not
        confirmed, published at least an interval ago (and after ``after``, when
        continuing a round). Returns how many ids went to each."""
        if not self.enabled:
            return {}
        now = now or utcnow()
        published_before = now - timedelta(seconds=self.interval)
        patience = timedelta(seconds=2 * self.interval)
        row = self.outbox.row_class
        asked: dict[str, int] = {}
        for subscriber in SERVICES if only is None else (only,):
            with self.session_factory() as session:
                peer = session.get(self.rows, subscriber)
                if (
                    only is None
                    and peer is not None
                    and peer.asked_at is not None
                    and (peer.answered_at is None or peer.answered_at < peer.asked_at)
                    and now - peer.asked_at < patience
                ):
                    continue  # its answer is on its way
                query = (
                    select(row.id)
                    .where(
                        row.awaiting.is_not(None),
                        row.awaiting.like(f"%,{subscriber},%"),
                        row.published_at.is_not(None),
                        row.published_at <= published_before,
                    )
                    .order_by(row.created_at)
                    .limit(BATCH)
                )
                if after is not None:
                    query = query.where(row.created_at > after)
                ids = [str(event_id) for event_id in session.scalars(query)]
            if not ids:
                continue
            try:
                self.send_task(
                    f"{subscriber}.report_received",
                    args=[self.service, ids, now.isoformat()],
                    queue=subscriber,
                    retry=True,
                    retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
                    argsrepr=f"[{self.service}, {len(ids)} event ids]",
                    kwargsrepr="{}",
                )
            except Exception:
                log.warning(
                    "catch-up: could not ask %s about %d event(s)",
                    subscriber,
                    len(ids),
                    exc_info=True,
                )
                continue
            self._note(subscriber, asked_at=now)
            asked[subscriber] = len(ids)
        return asked

    def on_answer(
        self,
        subscriber: str,
        taken: list[str],
        missing: list[str],
        asked_at: str | None = None,
    ) -> int:
        """A subscriber's answer to the question sent at ``asked_at``: strike it off
        the events it has, send it again those it lacks. Returns how many were sent
        again.

        An answer to a question older than the last copies sent to that subscriber
        sends nothing: it was written before those copies could arrive (the questions
        of a subscriber that was away are answered all at once when it comes back).
        What it lacked stays unconfirmed, and the next round, which travels behind
        the copies, asks again."""
        if subscriber not in SERVICES:
            log.warning("catch-up: an answer from unknown service %r ignored", subscriber)
            return 0
        asked = _moment(asked_at)
        row = self.outbox.row_class
        marker = f"%,{subscriber},%"
        have = sorted(_uuids(taken))
        lack = sorted(_uuids(missing))
        confirmed = 0
        newest: datetime | None = None
        for start in range(0, len(have), _CHUNK):
            chunk = have[start : start + _CHUNK]
            with self.session_factory() as session, session.begin():
                locking = (
                    select(row.id, row.created_at)
                    .where(row.id.in_(chunk), row.awaiting.like(marker))
                    .order_by(row.id)
                )
                if session.get_bind().dialect.name == "postgresql":
                    # In id order: two answers on the same rows never deadlock.
                    locking = locking.with_for_update()
                found = session.execute(locking).all()
                if not found:
                    continue
                session.execute(
                    update(row)
                    .where(row.id.in_([event_id for event_id, _ in found]))
                    .values(
                        awaiting=func.nullif(
                            func.replace(row.awaiting, f",{subscriber},", ","), ","
                        )
                    )
                )
                confirmed += len(found)
                latest = max(created for _, created in found)
                newest = latest if newest is None or latest > newest else newest
        resend: list[tuple[uuid.UUID, dict[str, Any]]] = []
        unsubscribed: list[uuid.UUID] = []
        with self.session_factory() as session:
            peer = session.get(self.rows, subscriber)
            last_resent = peer.last_resent_at if peer is not None else None
            if asked is not None and last_resent is not None and last_resent > asked:
                lack = []
            for start in range(0, len(lack), _CHUNK):
                chunk = lack[start : start + _CHUNK]
                for event_id, message, created in session.execute(
                    select(row.id, row.message, row.created_at)
                    .where(
                        row.id.in_(chunk),
                        row.awaiting.like(marker),
                        row.published_at.is_not(None),
                    )
                    .order_by(row.created_at)
                ):
                    newest = created if newest is None or created > newest else newest
                    if subscriber in subscribers_of(message["type"]):
                        resend.append((event_id, message))
                    else:
                        unsubscribed.append(event_id)
        if unsubscribed:
            # The subscriber no longer takes this type (a release changed who
            # listens): nothing to send it; it is struck off.
            with self.session_factory() as session, session.begin():
                session.execute(
                    update(row)
                    .where(row.id.in_(unsubscribed))
                    .values(
                        awaiting=func.nullif(
                            func.replace(row.awaiting, f",{subscriber},", ","), ","
                        )
                    )
                )
        sent = self._send_again(subscriber, resend)
        if resend:
            log.warning(
                "catch-up: %s lacked %d event(s) of %s; sent again: %d",
                subscriber,
                len(resend),
                self.service,
                sent,
            )
        now = utcnow()
        self._note(
            subscriber,
            answered_at=now,
            confirmed=confirmed,
            resent=sent,
            last_resent_at=now if sent else None,
        )
        if len(taken) + len(missing) >= BATCH and newest is not None:
            # A full list: more may wait behind it; go on at once from where it ended.
            self.ask(only=subscriber, after=newest)
        return sent

    def _send_again(self, subscriber: str, events: list[tuple[uuid.UUID, dict[str, Any]]]) -> int:
        """Send ``events`` to ``subscriber`` alone, as copies the catch-up sent (its
        inbox counts those it takes in as recovered); returns how many went."""
        size = self.outbox.message_max
        sent = 0
        for start in range(0, len(events), size):
            chunk = [message for _, message in events[start : start + size]]
            try:
                self.send_task(
                    f"{subscriber}.handle_events",
                    args=[chunk],
                    kwargs={"caught_up": True},
                    queue=subscriber,
                    retry=True,
                    retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
                    argsrepr=f"[{len(chunk)} event(s) sent again by the catch-up]",
                    kwargsrepr="{'caught_up': True}",
                )
            except Exception:
                log.warning(
                    "catch-up: could not send %d event(s) again to %s; the next round will",
                    len(events) - sent,
                    subscriber,
                    exc_info=True,
                )
                break
            sent += len(chunk)
        return sent

    def _note(
        self,
        subscriber: str,
        *,
        asked_at: datetime | None = None,
        answered_at: datetime | None = None,
        confirmed: int = 0,
        resent: int = 0,
        last_resent_at: datetime | None = None,
    ) -> None:
        table = self.rows.__table__  # type: ignore[attr-defined]
        with self.session_factory() as session, session.begin():
            session.execute(
                upsert_insert(session)(table)
                .values(subscriber=subscriber, confirmed=0, resent=0)
                .on_conflict_do_nothing(index_elements=[table.c.subscriber])
            )
            values: dict[str, Any] = {}
            if asked_at is not None:
                values["asked_at"] = asked_at
            if answered_at is not None:
                values["answered_at"] = answered_at
            if confirmed:
                values["confirmed"] = table.c.confirmed + confirmed
            if resent:
                values["resent"] = table.c.resent + resent
            if last_resent_at is not None:
                values["last_resent_at"] = last_resent_at
            if values:
                session.execute(
                    table.update().where(table.c.subscriber == subscriber).values(**values)
                )

    def behind(self, now: datetime | None = None) -> list[Behind]:
        """Per subscriber: the events published to it and not yet confirmed (how many,
        the oldest), and what the catch-up confirmed and sent again so far."""
        row = self.outbox.row_class
        counts: dict[str, int] = {}
        oldest: dict[str, datetime] = {}
        with self.session_factory() as session:
            for awaiting, n, first in session.execute(
                select(row.awaiting, func.count(), func.min(row.created_at))
                .where(row.awaiting.is_not(None), row.published_at.is_not(None))
                .group_by(row.awaiting)
            ):
                for subscriber in str(awaiting).strip(",").split(","):
                    counts[subscriber] = counts.get(subscriber, 0) + int(n)
                    if first is not None and (
                        subscriber not in oldest or first < oldest[subscriber]
                    ):
                        oldest[subscriber] = first
            peers = {peer.subscriber: peer for peer in session.scalars(select(self.rows))}
        found: list[Behind] = []
        for subscriber in SERVICES:
            peer = peers.get(subscriber)
            found.append(
                Behind(
                    producer=self.service,
                    subscriber=subscriber,
                    unconfirmed=counts.get(subscriber, 0),
                    oldest=oldest.get(subscriber),
                    confirmed=peer.confirmed if peer else 0,
                    resent=peer.resent if peer else 0,
                    last_resent_at=peer.last_resent_at if peer else None,
                    asked_at=peer.asked_at if peer else None,
                    answered_at=peer.answered_at if peer else None,
                )
            )
        return found

    # The subscriber ------------------------------------------------------------------

    def recovered(self) -> dict[str, tuple[int, datetime | None]]:
        """Per producer, the events this service took in from copies the catch-up sent
        again (the broker had lost them), and when the last one came."""
        inbox = self.inbox.inbox
        with self.session_factory() as session:
            return {
                str(producer): (int(n), last)
                for producer, n, last in session.execute(
                    select(inbox.producer, func.count(), func.max(inbox.received_at))
                    .where(inbox.caught_up, inbox.producer.is_not(None))
                    .group_by(inbox.producer)
                )
            }

    def report(self, producer: str, ids: list[str], asked_at: str | None = None) -> tuple[int, int]:
        """Answer a producer's question (sent at ``asked_at``): which of ``ids`` this
        service has taken in. Returns (taken, missing)."""
        if producer not in SERVICES:
            log.warning("catch-up: a question from unknown service %r ignored", producer)
            return 0, 0
        asked = sorted(_uuids(ids))
        taken = self.inbox.taken_in(asked)
        have = [str(event_id) for event_id in asked if event_id in taken]
        lack = [str(event_id) for event_id in asked if event_id not in taken]
        self.send_task(
            f"{producer}.resend_missing",
            args=[self.service, have, lack, asked_at],
            queue=producer,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
            argsrepr=f"[{self.service}, {len(have)} taken, {len(lack)} missing]",
            kwargsrepr="{}",
        )
        if lack:
            log.warning(
                "catch-up: %d of %d event(s) %s asked about never reached %s",
                len(lack),
                len(asked),
                producer,
                self.service,
            )
        return len(have), len(lack)


def _moment(value: Any) -> datetime | None:
    """An aware time from its ISO form (None if absent or unreadable)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _uuids(values: list[Any]) -> set[uuid.UUID]:
    found: set[uuid.UUID] = set()
    for value in values if isinstance(values, list) else []:
        try:
            found.add(uuid.UUID(str(value)))
        except ValueError:
            continue
    return found
