"""The inbox: every consumer applies each event at most once, and in order.

A consumer records the event id in its ``inbox`` table in the same transaction as
the event's effect, so a redelivered event finds its id and changes nothing. It also
remembers the last version it applied of each aggregate, so an event older than the
state it would change is recorded and ignored (unless its type's handler orders such
events itself: ``Inbox.self_ordered``). An event that cannot be read, or keeps
failing, goes to ``dead_letters`` with the reason, instead of looping forever.
"""

from __future__ import annotations

import enum
import logging
import traceback
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    Index,
    Integer,
    String,
    Table,
    Text,
    Uuid,
    false,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, declared_attr, mapped_column, sessionmaker

from shared.db import UTCDateTime, in_chunks, upsert_insert, utcnow
from shared.events import Event, EventError
from shared.observability import causation_id_var, correlation_id_var

log = logging.getLogger(__name__)

# Deliveries counted in one statement at most (well under any bound-parameter limit).
_COUNT_CHUNK = 300
# Aggregates recorded by one statement of first_heard (two parameters each).
_FIRST_HEARD_CHUNK = 500


class InboxRow:
    """One event this service has taken in, and what it did with it."""

    if TYPE_CHECKING:

        def __init__(self, **columns: Any) -> None: ...

    __tablename__ = "inbox"

    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    type: Mapped[str] = mapped_column(String(64), nullable=False)
    aggregate_id: Mapped[str] = mapped_column(String(64), nullable=False)
    aggregate_version: Mapped[int] = mapped_column(Integer, nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # The service that wrote the event (None on rows from before it was kept).
    producer: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Taken in from a copy the catch-up sent again: the broker had lost the event.
    caught_up: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (
            # Only the events the catch-up recovered, counted for the metrics.
            Index(
                "ix_inbox_caught_up",
                "producer",
                sqlite_where=text("caught_up = 1"),
                postgresql_where=text("caught_up"),
            ),
        )


class AggregateVersionRow:
    """The newest version of each aggregate whose events this service has applied."""

    if TYPE_CHECKING:

        def __init__(self, **columns: Any) -> None: ...

    __tablename__ = "aggregate_versions"

    aggregate_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_version: Mapped[int] = mapped_column(Integer, nullable=False)


class DeliveryRow:
    """How many times each event has been handed to this service's worker."""

    if TYPE_CHECKING:

        def __init__(self, **columns: Any) -> None: ...

    __tablename__ = "deliveries"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class DeadLetterRow:
    """An event this service could not apply, kept with the reason for an operator."""

    if TYPE_CHECKING:

        def __init__(self, **columns: Any) -> None: ...

    __tablename__ = "dead_letters"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    event_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[Any] = mapped_column(JSON, nullable=True)
    reason: Mapped[str] = mapped_column(String(32), nullable=False)
    detail: Mapped[str] = mapped_column(Text, nullable=False)
    errors: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class OutOfOrder(Exception):
    """A handler found an event ahead of one it depends on (``org.verified`` before the
    ``org.registered`` it follows). Nothing is recorded; the task retries later, by
    when the earlier event has normally arrived."""


class Outcome(enum.StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"
    IGNORED = "ignored"  # a type this service receives but has no handler for
    DEAD_LETTERED = "dead_lettered"


Handler = Callable[[Session, Event], None]
# Applies several events of one type at once, in their order; raising anything but a
# database outage sends them back to their one-event handler, one by one.
BatchHandler = Callable[[Session, list[Event]], None]


class Inbox:
    """Applies events to a service's database exactly once in effect."""

    def __init__(
        self,
        *,
        service: str,
        session_factory: sessionmaker[Session],
        inbox: type[InboxRow],
        versions: type[AggregateVersionRow],
        deliveries: type[DeliveryRow],
        dead_letters: type[DeadLetterRow],
        handlers: Mapping[str, Handler],
        max_deliveries: int = 5,
        ordered: bool = True,
    ) -> None:
        """With ``ordered`` (the default) an event older than the last one applied for
        its aggregate is recorded and ignored. A consumer that keeps no state of the
        aggregate (the gateway's webhook fan-out) passes False: it wants every event."""
        self.service = service
        self.session_factory = session_factory
        self.inbox = inbox
        self.versions = versions
        self.deliveries = deliveries
        self.dead_letters = dead_letters
        self.handlers = dict(handlers)
        # Optional, for types whose events come in numbers (a matching run's
        # reservations): a batch's consecutive events of such a type go to it at once.
        self.batch_handlers: dict[str, BatchHandler] = {}
        self.max_deliveries = max_deliveries
        self.ordered = ordered
        # Types whose handlers put their events in order themselves, taking an older
        # one for what it alone says (a community's snapshot: its counts only if newer,
        # the shares it names each kept from the newest that named it): handed to
        # their handler however old, under the aggregate's lock all the same.
        self.self_ordered: set[str] = set()

    def handle(self, message: Any, *, caught_up: bool = False) -> Outcome:
        """Take one message off the queue. Transient database errors propagate so the
        task can retry; every other failure ends in a dead letter. ``caught_up``: the
        copy came from the catch-up, the broker having lost the event."""
        try:
            evt = Event.from_message(message)
        except EventError as exc:
            event_id = message.get("id") if isinstance(message, dict) else None
            log.error("dead-lettering invalid event %s: %s", event_id, exc.errors)
            self._dead_letter(message, reason="invalid", detail=str(exc), errors=exc.errors)
            return Outcome.DEAD_LETTERED

        corr = correlation_id_var.set(evt.correlation_id)
        cause = causation_id_var.set(str(evt.id))
        try:
            attempts, taken = self._count_delivery(evt.id)
            if taken:
                return Outcome.DUPLICATE
            if attempts > self.max_deliveries:
                log.error("dead-lettering %s %s after %d deliveries", evt.type, evt.id, attempts)
                self._dead_letter(
                    message,
                    reason="redelivery_cap",
                    detail=f"delivered {attempts} times (cap {self.max_deliveries})",
                )
                return Outcome.DEAD_LETTERED
            try:
                return self._apply(evt, message, caught_up)
            except OutOfOrder:
                # Waiting for a predecessor is not a failed delivery: it must not
                # bring the event nearer the cap that sets poison messages aside.
                self._uncount_delivery(evt.id)
                raise
        finally:
            causation_id_var.reset(cause)
            correlation_id_var.reset(corr)

    def taken_in(self, event_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        """Which of ``event_ids`` this service has taken in for good: recorded in its
        inbox (applied, a duplicate, stale or ignored) or set aside as a dead letter
        (an operator's business from then on). An event still waiting for a
        predecessor is neither."""
        taken: set[uuid.UUID] = set()
        with self.session_factory() as session:
            for start in range(0, len(event_ids), _COUNT_CHUNK):
                chunk = event_ids[start : start + _COUNT_CHUNK]
                taken.update(self._in_inbox(session, chunk))
                letters = {str(event_id) for event_id in chunk} - {str(t) for t in taken}
                if letters:
                    taken.update(
                        uuid.UUID(event_id)
                        for event_id in session.scalars(
                            select(self.dead_letters.event_id).where(
                                self.dead_letters.event_id.in_(sorted(letters))
                            )
                        )
                        if event_id
                    )
        return taken

    def first_heard(self, session: Session, aggregate_ids: list[str]) -> list[str]:
        """For an event that carries the first event of many aggregates (the
        allocations of an ``allocation.proposed`` version 2): version 1 of each
        aggregate recorded in the session's transaction, where no event of it was
        applied before; those recorded, in the order given. The others had a later
        event applied first (a cancellation that overtook its proposal), which this
        one is stale to, as the inbox finds an event of one aggregate stale.

        Written with ``ON CONFLICT DO NOTHING``: a transaction recording another
        event of one of these aggregates at the same moment waits for this one's key,
        then fails on it and is tried again, and finds version 1 recorded (or this one
        waits for that one's, and leaves the aggregate out). A consumer that is not
        ``ordered`` hears every one."""
        if not self.ordered:
            return list(aggregate_ids)
        table = cast(Table, cast(Any, self.versions).__table__)
        insert = upsert_insert(session)
        recorded: set[str] = set()
        for chunk in in_chunks(sorted(set(aggregate_ids)), _FIRST_HEARD_CHUNK):
            recorded.update(
                session.scalars(
                    insert(table)
                    .values([{"aggregate_id": key, "last_version": 1} for key in chunk])
                    .on_conflict_do_nothing(index_elements=["aggregate_id"])
                    .returning(table.c.aggregate_id)
                )
            )
        return [key for key in aggregate_ids if key in recorded]

    def _already_taken(self, event_id: uuid.UUID) -> bool:
        with self.session_factory() as session:
            return session.get(self.inbox, event_id) is not None

    def _apply(self, evt: Event, message: Any, caught_up: bool = False) -> Outcome:
        from sqlalchemy.exc import OperationalError

        try:
            with self.session_factory() as session, session.begin():
                outcome = self._apply_in(session, evt, caught_up)
        except IntegrityError:
            # Another delivery of the same event (or of the same aggregate's first
            # event) committed first; this one rolled back whole.
            if self._already_taken(evt.id):
                return Outcome.DUPLICATE
            raise
        except (OperationalError, OutOfOrder):
            raise
        except Exception as exc:
            log.exception("handler for %s failed on event %s", evt.type, evt.id)
            self._dead_letter(
                message,
                reason="handler_failed",
                detail="".join(traceback.format_exception_only(exc)).strip(),
            )
            return Outcome.DEAD_LETTERED
        return outcome

    def _apply_in(self, session: Session, evt: Event, caught_up: bool = False) -> Outcome:
        """The event's effect, its aggregate's version and its inbox row, written in
        ``session``'s transaction."""
        handler = self.handlers.get(evt.type)
        last = (
            session.get(self.versions, evt.aggregate_id, with_for_update=True)
            if self.ordered
            else None
        )
        if (
            last is not None
            and last.last_version >= evt.aggregate_version
            and evt.type not in self.self_ordered
        ):
            outcome = Outcome.STALE
        elif handler is None:
            outcome = Outcome.IGNORED
        else:
            handler(session, evt)
            outcome = Outcome.APPLIED
        if outcome is not Outcome.STALE and self.ordered:
            if last is None:
                session.add(
                    self.versions(aggregate_id=evt.aggregate_id, last_version=evt.aggregate_version)
                )
            else:
                last.last_version = max(last.last_version, evt.aggregate_version)
        session.add(self._inbox_row(evt, outcome, caught_up))
        session.flush()
        if outcome is Outcome.STALE:
            log.info(
                "ignored stale %s v%d of %s", evt.type, evt.aggregate_version, evt.aggregate_id
            )
        return outcome

    def _inbox_row(self, evt: Event, outcome: Outcome, caught_up: bool = False) -> Any:
        """The inbox's record that ``evt`` was taken, and with what outcome."""
        return self.inbox(
            event_id=evt.id,
            type=evt.type,
            aggregate_id=evt.aggregate_id,
            aggregate_version=evt.aggregate_version,
            outcome=outcome.value,
            producer=evt.producer[:32],
            caught_up=caught_up,
        )

    def _apply_batch_in(
        self, session: Session, events: list[Event], caught_up: bool = False
    ) -> list[Outcome]:
        """Events of one type with a batch handler, as :meth:`_apply_in` applies one:
        the stale ones recorded and skipped, the others applied at once, their
        aggregates' versions and their inbox rows written; one outcome each."""
        handler = self.batch_handlers[events[0].type]
        newest: dict[str, int] = {}
        known: dict[str, Any] = {}
        if self.ordered:
            ids = sorted({evt.aggregate_id for evt in events})
            for row in session.scalars(
                select(self.versions)
                .where(self.versions.aggregate_id.in_(ids))
                .order_by(self.versions.aggregate_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            ):
                known[row.aggregate_id] = row
                newest[row.aggregate_id] = row.last_version
        outcomes: list[Outcome] = []
        fresh: list[Event] = []
        for evt in events:
            last = newest.get(evt.aggregate_id)
            if self.ordered and last is not None and last >= evt.aggregate_version:
                outcomes.append(Outcome.STALE)
                log.info(
                    "ignored stale %s v%d of %s", evt.type, evt.aggregate_version, evt.aggregate_id
                )
                continue
            newest[evt.aggregate_id] = evt.aggregate_version
            fresh.append(evt)
            outcomes.append(Outcome.APPLIED)
        if fresh:
            handler(session, fresh)
        if self.ordered:
            for aggregate_id, version in newest.items():
                seen = known.get(aggregate_id)
                if seen is None:
                    session.add(self.versions(aggregate_id=aggregate_id, last_version=version))
                else:
                    seen.last_version = version
        session.add_all(
            self._inbox_row(evt, outcome, caught_up)
            for evt, outcome in zip(events, outcomes, strict=True)
        )
        session.flush()
        return outcomes

    def handle_many(
        self, messages: list[Any], *, caught_up: bool = False
    ) -> tuple[list[tuple[Any, Outcome]], list[Any]]:
        """Take several events of one commit off the queue at once, in the order they
        were written: each delivery counted, then all applied in one transaction, each
        in a savepoint of its own, so one that fails is set aside without undoing the
        others. Transient database errors propagate (the whole batch is tried again;
        what took effect is then recognised as a duplicate).

        Returns each handled message with its outcome, and the messages to deliver
        again on their own: those waiting for a predecessor (``OutOfOrder``) and those
        another delivery of the same event was writing at the same moment."""
        from sqlalchemy.exc import OperationalError

        handled: list[tuple[Any, Outcome]] = []
        again: list[Any] = []
        readable: list[tuple[Event, Any]] = []
        for message in messages:
            try:
                readable.append((Event.from_message(message), message))
            except EventError as exc:
                event_id = message.get("id") if isinstance(message, dict) else None
                log.error("dead-lettering invalid event %s: %s", event_id, exc.errors)
                self._dead_letter(message, reason="invalid", detail=str(exc), errors=exc.errors)
                handled.append((message, Outcome.DEAD_LETTERED))
        if not readable:
            return handled, again

        counts = self._count_deliveries([evt.id for evt, _ in readable])
        todo: list[tuple[Event, Any]] = []
        for evt, message in readable:
            attempts, taken = counts[evt.id]
            if taken:
                handled.append((message, Outcome.DUPLICATE))
            elif attempts > self.max_deliveries:
                log.error("dead-lettering %s %s after %d deliveries", evt.type, evt.id, attempts)
                self._dead_letter(
                    message,
                    reason="redelivery_cap",
                    detail=f"delivered {attempts} times (cap {self.max_deliveries})",
                )
                handled.append((message, Outcome.DEAD_LETTERED))
            else:
                todo.append((evt, message))

        waiting: list[uuid.UUID] = []

        def apply_one(session: Session, evt: Event, message: Any) -> None:
            corr = correlation_id_var.set(evt.correlation_id)
            cause = causation_id_var.set(str(evt.id))
            try:
                with session.begin_nested():
                    outcome = self._apply_in(session, evt, caught_up)
            except OperationalError:
                raise
            except OutOfOrder:
                waiting.append(evt.id)
                again.append(message)
                return
            except IntegrityError:
                # Another delivery of this event is committing it: delivered again
                # on its own, it will find it taken.
                again.append(message)
                return
            except Exception as exc:
                log.exception("handler for %s failed on event %s", evt.type, evt.id)
                session.add(
                    self._dead_letter_row(
                        message,
                        reason="handler_failed",
                        detail="".join(traceback.format_exception_only(exc)).strip(),
                    )
                )
                handled.append((message, Outcome.DEAD_LETTERED))
                return
            finally:
                causation_id_var.reset(cause)
                correlation_id_var.reset(corr)
            handled.append((message, outcome))

        def apply_together(session: Session, group: list[tuple[Event, Any]]) -> bool:
            """The group through its type's batch handler, in a savepoint of its own;
            False (nothing kept) if that handler refused it."""
            first = group[0][0]
            corr = correlation_id_var.set(first.correlation_id)
            cause = causation_id_var.set(str(first.id))
            try:
                with session.begin_nested():
                    outcomes = self._apply_batch_in(session, [evt for evt, _ in group], caught_up)
            except OperationalError:
                raise
            except Exception:
                log.warning(
                    "the batch handler of %s refused %d events; applying them one by one",
                    first.type,
                    len(group),
                    exc_info=True,
                )
                return False
            finally:
                causation_id_var.reset(cause)
                correlation_id_var.reset(corr)
            handled.extend(
                (message, outcome) for (_, message), outcome in zip(group, outcomes, strict=True)
            )
            return True

        with self.session_factory() as session, session.begin():
            start = 0
            while start < len(todo):
                kind = todo[start][0].type
                end = start + 1
                if kind in self.batch_handlers:
                    while end < len(todo) and todo[end][0].type == kind:
                        end += 1
                group = todo[start:end]
                if len(group) == 1 or not apply_together(session, group):
                    for evt, message in group:
                        apply_one(session, evt, message)
                start = end
        for event_id in waiting:
            # As for a single event: waiting for a predecessor is not a failed delivery.
            self._uncount_delivery(event_id)
        return handled, again

    def _count_delivery(self, event_id: uuid.UUID) -> tuple[int, bool]:
        """Count this delivery in a transaction of its own, so it survives a crash;
        returns the count and whether the event was already applied."""
        return self._count_deliveries([event_id])[event_id]

    def _count_deliveries(self, event_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[int, bool]]:
        """Count one delivery of each event, committed before anything is applied (so
        that a delivery that kills its worker still counts); returns each event's count
        and whether it was already applied.

        Only an event delivered before can have been applied (every delivery, a
        catch-up's copy too, is counted here first), so the inbox is read for those
        alone. On PostgreSQL the count is one statement in autocommit: one round trip
        where a transaction of its own took four, on every event a worker takes."""
        ordered = sorted(set(event_ids), key=str)
        engine = self.session_factory.kw["bind"]
        counting: Any = (
            engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql"
            else self.session_factory.begin()
        )
        with counting as executor:
            attempts = self._upsert_counts(executor, ordered)
            again = [event_id for event_id in ordered if attempts[event_id] > 1]
            taken = self._in_inbox(executor, again)
        return {event_id: (attempts[event_id], event_id in taken) for event_id in event_ids}

    def _upsert_counts(self, executor: Any, ordered: list[uuid.UUID]) -> dict[uuid.UUID, int]:
        """Add a delivery to each event's count (ids in order, so that two batches
        sharing events lock their rows in the same order); returns the counts.

        One single-row upsert sent with every row at once: SQLAlchemy compiles it once
        and writes the rows into multi-row statements itself (``insertmanyvalues``),
        where a statement built with the rows' values was compiled anew for each
        number of events a batch brought."""
        if not ordered:
            return {}
        table = self.deliveries.__table__  # type: ignore[attr-defined]
        insert = upsert_insert(executor)(table)
        stmt = insert.on_conflict_do_update(
            index_elements=[table.c.event_id],
            set_={
                "attempts": table.c.attempts + 1,
                "last_attempt_at": insert.excluded.last_attempt_at,
            },
        ).returning(table.c.event_id, table.c.attempts)
        now = utcnow()
        rows = [
            {"event_id": str(event_id), "attempts": 1, "last_attempt_at": now}
            for event_id in ordered
        ]
        return {
            uuid.UUID(str(event_id)): int(count) for event_id, count in executor.execute(stmt, rows)
        }

    def _in_inbox(self, executor: Any, event_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        taken: set[uuid.UUID] = set()
        for start in range(0, len(event_ids), _COUNT_CHUNK):
            chunk = event_ids[start : start + _COUNT_CHUNK]
            taken.update(
                executor.execute(
                    select(self.inbox.event_id).where(self.inbox.event_id.in_(chunk))
                ).scalars()
            )
        return taken

    def _uncount_delivery(self, event_id: uuid.UUID) -> None:
        table = self.deliveries.__table__  # type: ignore[attr-defined]
        with self.session_factory() as session, session.begin():
            session.execute(
                table.update()
                .where(table.c.event_id == str(event_id), table.c.attempts > 0)
                .values(attempts=table.c.attempts - 1)
            )

    def _dead_letter(self, message: Any, *, reason: str, detail: str, errors: Any = None) -> None:
        with self.session_factory() as session, session.begin():
            session.add(self._dead_letter_row(message, reason=reason, detail=detail, errors=errors))

    def _dead_letter_row(
        self, message: Any, *, reason: str, detail: str, errors: Any = None
    ) -> DeadLetterRow:
        event_id = message.get("id") if isinstance(message, dict) else None
        event_type = message.get("type") if isinstance(message, dict) else None
        return self.dead_letters(
            event_id=str(event_id)[:64] if event_id is not None else None,
            type=str(event_type)[:64] if event_type is not None else None,
            message=message if isinstance(message, (dict, list, str)) else repr(message),
            reason=reason,
            detail=detail[:4000],
            errors=errors,
        )
