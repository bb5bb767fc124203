"""The transactional outbox, its relay and its sweep.

A state change and the event that announces it are written in one transaction, so
an event exists if and only if its change committed. Right after the commit the
relay sends the event to each subscribed service's queue and stamps the row as
published. If the process dies in between, or the broker is down, the row stays
unpublished and the periodic sweep sends it later. Consumers de-duplicate by event
id, so a row sent twice takes effect once.

Published is not received: a row also names the subscribers that have not yet said
they took it in (``awaiting``), until the catch-up (shared/catchup.py) has heard from
each, and sends it again to any that lacks it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, cast

from sqlalchemy import (
    JSON,
    Dialect,
    Index,
    Integer,
    String,
    Table,
    Uuid,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.orm import Mapped, Session, declared_attr, mapped_column, sessionmaker

from shared.bulk import BulkInsert, Ready
from shared.db import UTCDateTime, in_chunks, one_of, utcnow
from shared.events import REGISTRY, Event, subscribers_of
from shared.pending import Pending

log = logging.getLogger(__name__)

_PENDING_KEY = "aidlink.outbox.pending"
# The events of a transaction, relayed once it commits.
_PENDING = Pending(_PENDING_KEY)


class OutboxRow:
    """Columns of a service's ``outbox`` table; each service maps it on its own Base."""

    if TYPE_CHECKING:

        def __init__(self, **columns: Any) -> None: ...

    __tablename__ = "outbox"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    type: Mapped[str] = mapped_column(String(64), nullable=False)
    aggregate_id: Mapped[str] = mapped_column(String(64), nullable=False)
    message: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    publish_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # The subscribers that have not yet confirmed they took the event in, as
    # ",donations,gateway," (None: every subscriber has it, or catch-up is off).
    awaiting: Mapped[str | None] = mapped_column(String(200), nullable=True)

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (
            Index("ix_outbox_unpublished", "published_at", "created_at"),
            # Only rows some subscriber has not confirmed: a few minutes' worth, unless
            # a subscriber is away.
            Index(
                "ix_outbox_awaiting",
                "created_at",
                sqlite_where=text("awaiting IS NOT NULL"),
                postgresql_where=text("awaiting IS NOT NULL"),
            ),
        )


def awaiting_of(subscribers: tuple[str, ...] | list[str]) -> str | None:
    """The ``awaiting`` value naming ``subscribers`` (None for none)."""
    return f",{','.join(subscribers)}," if subscribers else None


class Publisher(Protocol):
    """Sends one event message to one consuming service's queue.

    A publisher may also have ``many(service, messages)``, which sends several events
    of one commit to one service as one task message; the relay then batches them.
    """

    def __call__(self, service: str, message: dict[str, Any]) -> None: ...


_BULK_COLUMNS = (
    "id",
    "type",
    "aggregate_id",
    "message",
    "created_at",
    "publish_attempts",
    "awaiting",
)


@dataclass(frozen=True)
class PreparedEvents:
    """Outbox rows made ready outside a transaction: :meth:`Outbox.prepare_many`."""

    writer: BulkInsert
    ready: Ready
    pending: list[tuple[uuid.UUID, dict[str, Any]]]


class Outbox:
    """A service's outbox: add events inside a transaction, publish them after it."""

    # How far back before a broker restart events are sent again: longer than a
    # restart takes.
    REWIND = timedelta(minutes=5)
    # Only a restart this recent is acted on: by then every running process has.
    REWIND_RECENT = timedelta(hours=1)

    def __init__(
        self,
        row_class: type[OutboxRow],
        session_factory: sessionmaker[Session],
        publisher: Publisher,
        *,
        sweep_grace: float = 10.0,
        batch_size: int = 500,
        message_max: int = 500,
        track_receipt: bool = True,
    ) -> None:
        """``batch_size``: rows a sweep reads at once; ``message_max``: events sent to
        one consumer in one task message at most (1: each on its own);
        ``track_receipt``: name each row's subscribers in ``awaiting``, for the
        catch-up."""
        self.row_class = row_class
        self.track_receipt = track_receipt
        self._bulk: BulkInsert | None = None
        self.session_factory = session_factory
        self.publisher = publisher
        self.sweep_grace = sweep_grace
        self.batch_size = batch_size
        self.message_max = message_max
        # When the broker last started (None: it keeps no messages of its own to lose);
        # see ``_rewind_after_broker_restart``.
        self.broker_started: Callable[[], datetime | None] | None = None
        self._rewound_for: datetime | None = None
        self._background: _RelayThread | None = None
        self._alongside = 0
        self._alongside_lock = threading.Lock()
        _PENDING.listen(session_factory)
        event.listen(session_factory, "after_commit", self._after_commit)

    def add(self, session: Session, evt: Event) -> None:
        """Write ``evt`` in the session's transaction; it is relayed once that commits."""
        message = evt.to_message()
        session.add(
            self.row_class(
                id=evt.id,
                type=evt.type,
                aggregate_id=evt.aggregate_id,
                message=message,
                created_at=evt.occurred_at,
                awaiting=awaiting_of(subscribers_of(evt.type)) if self.track_receipt else None,
            )
        )
        _PENDING.append(session, (evt.id, message))

    def _rows(
        self, events: list[Event]
    ) -> tuple[list[tuple[Any, ...]], list[tuple[uuid.UUID, dict[str, Any]]]]:
        """The outbox rows of ``events`` (values of ``_BULK_COLUMNS``) and what the relay
        publishes of them."""
        awaiting: dict[str, str | None] = {}
        rows = []
        pending = []
        for evt in events:
            message = evt.to_message()
            if evt.type not in awaiting:
                awaiting[evt.type] = (
                    awaiting_of(subscribers_of(evt.type)) if self.track_receipt else None
                )
            row = (evt.id, evt.type, evt.aggregate_id, message, evt.occurred_at, 0)
            rows.append((*row, awaiting[evt.type]))
            pending.append((evt.id, message))
        return rows, pending

    def add_many(self, session: Session, events: list[Event]) -> None:
        """Write many events in the session's transaction, in one multi-row insert."""
        if not events:
            return
        rows, pending = self._rows(events)
        session.execute(
            insert(cast(Table, cast(Any, self.row_class).__table__)),
            [dict(zip(_BULK_COLUMNS, row, strict=True)) for row in rows],
        )
        _PENDING.extend(session, pending)

    def prepare_many(self, dialect: Dialect, events: list[Event]) -> PreparedEvents:
        """Outside a transaction: the outbox rows of ``events`` made ready for
        :meth:`write_prepared` (``shared.bulk``), for a change of tens of thousands of
        events whose transaction should hold no longer than its writes."""
        if self._bulk is None:
            table = cast(Table, cast(Any, self.row_class).__table__)
            self._bulk = BulkInsert(table, _BULK_COLUMNS)
        rows, pending = self._rows(events)
        return PreparedEvents(self._bulk, self._bulk.prepare(dialect, rows), pending)

    def write_prepared(self, session: Session, prepared: PreparedEvents) -> None:
        """Write events made ready by :meth:`prepare_many` in the session's transaction;
        they are relayed once it commits, as :meth:`add_many`'s."""
        prepared.writer.write(session, prepared.ready)
        _PENDING.extend(session, prepared.pending)

    # The relay ---------------------------------------------------------------------

    def _after_commit(self, session: Session) -> None:
        if session.in_nested_transaction():
            # A savepoint was released, not the transaction committed: its events wait
            # for the real commit (publishing them now would announce what may still
            # roll back, and on SQLite the relay would wait on this very transaction).
            return
        pending = _PENDING.take(session)
        if pending:
            # Handed to the relay thread under the lock that swaps it in and out
            # (relaying_alongside), so that nothing is queued after it was told to stop.
            with self._alongside_lock:
                background = self._background
                if background is not None:
                    background.submit(pending)
            if background is None:
                # The committed session cannot run SQL here; the relay uses its own.
                self.relay(pending)

    def relay_in_background(self) -> None:
        """From now on, publish each commit's events from a thread of this process
        rather than the committing one: a web request answers without waiting on the
        broker, and the events of commits close together go out, and are stamped,
        together. Events still queued when the process dies are left to the sweep, as
        after a crash between a commit and its relay."""
        if self._background is None:
            self._background = _RelayThread(self)
            atexit.register(self._background.flush)

    @contextlib.contextmanager
    def relaying_alongside(self, timeout: float = 600.0) -> Iterator[None]:
        """For work of many commits in a row (a matching run's slices): each commit's
        events are published by a relay thread while the work goes on to its next
        commit, and the work ends once all of them are relayed (:meth:`flush`, for at
        most ``timeout`` seconds; what is left then is the sweep's, as after a crash).
        In a process whose relay is already a thread (the web servers') nothing
        changes. Work of this kind in two threads at once shares one relay thread."""
        with self._alongside_lock:
            if self._alongside == 0 and self._background is not None:
                owned = False
            else:
                owned = True
                if self._alongside == 0:
                    self._background = _RelayThread(self)
                self._alongside += 1
        try:
            yield
        finally:
            if owned:
                stopped = None
                try:
                    self.flush(timeout)
                finally:
                    with self._alongside_lock:
                        self._alongside -= 1
                        if self._alongside == 0 and self._background is not None:
                            stopped, self._background = self._background, None
                            stopped.stop()
                if stopped is not None:
                    # What other threads handed it between the flush and the stop.
                    stopped.flush(timeout)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the background relay has handled every commit so far (True), or
        ``timeout`` seconds; without a background relay there is nothing to wait for."""
        background = self._background
        return background.flush(timeout) if background is not None else True

    def relay(self, messages: list[tuple[uuid.UUID, dict[str, Any]]]) -> int:
        """Publish just-committed events now. Failures are logged and left to the sweep."""
        try:
            return self._publish(messages)
        except Exception:
            log.exception("outbox relay failed; the sweep will publish %d event(s)", len(messages))
            return 0

    def sweep(self, now: datetime | None = None) -> int:
        """Publish rows a crash or an outage left behind; returns how many were sent."""
        self._rewind_after_broker_restart()
        cutoff = (now or utcnow()) - timedelta(seconds=self.sweep_grace)
        published = 0
        while True:
            with self.session_factory() as session:
                stmt = (
                    select(self.row_class.id, self.row_class.message)
                    .where(
                        self.row_class.published_at.is_(None),
                        self.row_class.created_at <= cutoff,
                    )
                    .order_by(self.row_class.created_at)
                    .limit(self.batch_size)
                )
                if session.bind is not None and session.bind.dialect.name == "postgresql":
                    # Two sweepers never take the same rows.
                    stmt = stmt.with_for_update(skip_locked=True)
                batch = [(row.id, row.message) for row in session.execute(stmt)]
                session.rollback()
            if not batch:
                return published
            sent = self._publish(batch)
            published += sent
            if sent < len(batch):
                # The broker is refusing; stop and let the next sweep try again.
                return published

    def _rewind_after_broker_restart(self) -> int:
        """Send again what was published shortly before the broker last started.

        Kombu's Redis transport takes a message off its queue (BRPOP) and only then
        records it as unacknowledged: a message taken in the instant Redis shuts down is
        in neither place when it comes back, and is lost although it was published.
        After a restart, the events published in the ``REWIND`` before it are marked
        unpublished so that this sweep sends them again; their consumers recognise
        those they had. Sent again, their ``published_at`` is after the restart, so a
        later sweep does not rewind them twice."""
        if self.broker_started is None:
            return 0
        try:
            started = self.broker_started()
        except Exception:
            log.warning("could not ask the broker when it started", exc_info=True)
            return 0
        if started is None or started < utcnow() - self.REWIND_RECENT:
            return 0
        if self._rewound_for is not None and started <= self._rewound_for + timedelta(seconds=3):
            return 0  # this restart (its start time read again, give or take a second)
        with self.session_factory() as session, session.begin():
            result = session.execute(
                update(self.row_class)
                .where(
                    self.row_class.published_at.is_not(None),
                    self.row_class.published_at >= started - self.REWIND,
                    self.row_class.published_at <= started,
                )
                .values(published_at=None)
            )
            rewound = getattr(result, "rowcount", 0)
        self._rewound_for = started
        if rewound:
            log.warning(
                "the broker started at %s: sending again %d event(s) published just before",
                started.isoformat(),
                rewound,
            )
        return int(rewound or 0)

    def _publish(self, messages: list[tuple[uuid.UUID, dict[str, Any]]]) -> int:
        """Send each event to each subscriber; returns how many reached all of theirs.

        Events for one subscriber go in task messages of up to ``message_max`` events,
        in the order they were written, when the publisher can send several at once.
        An event counts as sent once every subscriber has it; on the first refusal the
        relay stops, and what is not sent stays for the sweep (a subscriber that got it
        already recognises the copy)."""
        by_service: dict[str, list[tuple[uuid.UUID, dict[str, Any]]]] = {}
        for event_id, message in messages:
            for service in subscribers_of(message["type"]):
                by_service.setdefault(service, []).append((event_id, message))
        refused: set[uuid.UUID] = set()
        down = False
        for service, queued in by_service.items():
            if down:
                refused.update(event_id for event_id, _ in queued)
                continue
            failed = self.send_to(service, queued)
            if failed:
                refused.update(failed)
                down = True
        sent = [event_id for event_id, _ in messages if event_id not in refused]
        self._stamp(sent, [event_id for event_id, _ in messages if event_id in refused])
        return len(sent)

    def send_to(
        self, service: str, messages: list[tuple[uuid.UUID, dict[str, Any]]]
    ) -> list[uuid.UUID]:
        """Send events to one subscriber, in task messages of up to ``message_max``
        changes when the publisher can send several at once (an event carrying many,
        an ``allocation.proposed`` of version 2, counts as many: ``REGISTRY.weight``;
        one heavier than that goes alone); returns the ids not sent (all from the
        first refusal on)."""
        many = getattr(self.publisher, "many", None)
        for start, chunk in _weighed_chunks(messages, self.message_max if many else 1):
            try:
                if len(chunk) == 1:
                    self.publisher(service, chunk[0][1])
                else:
                    assert many is not None
                    many(service, [message for _, message in chunk])
            except Exception:
                log.exception(
                    "could not publish %d event(s) to %s (first %s, %s)",
                    len(chunk),
                    service,
                    chunk[0][0],
                    chunk[0][1].get("type"),
                )
                return [event_id for event_id, _ in messages[start:]]
        return []

    def _stamp(self, sent: list[uuid.UUID], failed: list[uuid.UUID]) -> None:
        if not sent and not failed:
            return
        # Core statements on the table (the ORM's bulk update would look for the rows
        # among the session's objects); the ids as one array on PostgreSQL, in IN lists
        # under the parameter limit elsewhere.
        table = cast(Table, self.row_class.__table__)  # type: ignore[attr-defined]
        with self.session_factory() as session, session.begin():
            dialect = session.get_bind().dialect.name

            def parts(ids: list[uuid.UUID]) -> Iterable[list[uuid.UUID]]:
                if dialect == "postgresql":
                    return [ids] if ids else []
                return in_chunks(ids)

            for part in parts(sent):
                session.execute(
                    update(table)
                    .where(one_of(table.c.id, part, dialect), table.c.published_at.is_(None))
                    .values(published_at=utcnow(), publish_attempts=table.c.publish_attempts + 1)
                )
            for part in parts(failed):
                session.execute(
                    update(table)
                    .where(one_of(table.c.id, part, dialect))
                    .values(publish_attempts=table.c.publish_attempts + 1)
                )

    def backlog(self) -> int:
        """How many events are waiting to be published."""
        from sqlalchemy import func

        with self.session_factory() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(self.row_class)
                    .where(self.row_class.published_at.is_(None))
                )
                or 0
            )


class _RelayThread:
    """The background relay of one process: commits queue their events, one thread
    publishes whatever has gathered in one pass (in commit order)."""

    MAX_GATHER = 500

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._lock = threading.Lock()
        self._queue: queue.Queue[list[tuple[uuid.UUID, dict[str, Any]]] | None] = queue.Queue()
        self._pid: int | None = None
        self.thread: threading.Thread | None = None

    def submit(self, messages: list[tuple[uuid.UUID, dict[str, Any]]]) -> None:
        if self._pid != os.getpid():
            self._start()
        self._queue.put(messages)

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            # A forked child inherits the queue but not the thread: it starts afresh.
            self._queue = queue.Queue()
            self.thread = threading.Thread(
                target=self._run, args=(self._queue,), name="outbox-relay", daemon=True
            )
            self.thread.start()
            self._pid = os.getpid()

    def _run(self, jobs: queue.Queue[list[tuple[uuid.UUID, dict[str, Any]]] | None]) -> None:
        while True:
            first = jobs.get()
            if first is None:  # stopped (see stop)
                jobs.task_done()
                return
            gathered = list(first)
            taken, stopped = 1, False
            while len(gathered) < self.MAX_GATHER:
                try:
                    job = jobs.get_nowait()
                except queue.Empty:
                    break
                taken += 1
                if job is None:
                    stopped = True
                    break
                gathered.extend(job)
            try:
                self.outbox.relay(gathered)
            finally:
                for _ in range(taken):
                    jobs.task_done()
            if stopped:
                return

    def stop(self) -> None:
        """End the thread once it has relayed what was submitted before."""
        if self._pid == os.getpid():
            self._queue.put(None)

    def flush(self, timeout: float = 5.0) -> bool:
        if self._pid != os.getpid():
            return True
        jobs = self._queue
        with jobs.all_tasks_done:
            return jobs.all_tasks_done.wait_for(lambda: jobs.unfinished_tasks == 0, timeout)


class CeleryPublisher:
    """Sends ``<service>.handle_event`` tasks (one event) and ``<service>.handle_events``
    tasks (several events of one commit) to each service's queue."""

    # Fail fast when the broker is down: the sweep retries, and a web request that
    # already committed should not hang on the broker.
    RETRY_POLICY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2}

    def __init__(self, send_task: Callable[..., Any]) -> None:
        self.send_task = send_task

    def __call__(self, service: str, message: dict[str, Any]) -> None:
        self._send(f"{service}.handle_event", service, message, _label([message]))

    def many(self, service: str, messages: list[dict[str, Any]]) -> None:
        self._send(f"{service}.handle_events", service, messages, _label(messages))

    def _send(self, task: str, service: str, argument: Any, label: str) -> None:
        self.send_task(
            task,
            args=[argument],
            queue=service,
            retry=True,
            retry_policy=self.RETRY_POLICY,
            # What logs and Flower show of the task: Celery would otherwise render the
            # whole payload on every send, a third of the cost of publishing it.
            argsrepr=label,
            kwargsrepr="{}",
        )


def _weighed_chunks(
    messages: list[tuple[uuid.UUID, dict[str, Any]]], limit: int
) -> Iterator[tuple[int, list[tuple[uuid.UUID, dict[str, Any]]]]]:
    """``messages`` in order, in chunks of at most ``limit`` changes each (an event
    heavier than ``limit`` alone), with the place in ``messages`` each begins at."""
    start, weight = 0, 0
    for n, (_, message) in enumerate(messages):
        heavy = REGISTRY.weight(message)
        if n > start and weight + heavy > limit:
            yield start, messages[start:n]
            start, weight = n, 0
        weight += heavy
    if start < len(messages):
        yield start, messages[start:]


def _label(messages: list[dict[str, Any]]) -> str:
    """``[pledge.created 1f0c...]``, or ``[3 events: allocation.proposed x3]``."""
    if len(messages) == 1:
        return f"[{messages[0].get('type')} {messages[0].get('id')}]"
    types: dict[str, int] = {}
    for message in messages:
        types[str(message.get("type"))] = types.get(str(message.get("type")), 0) + 1
    kinds = ", ".join(f"{kind} x{n}" for kind, n in types.items())
    return f"[{len(messages)} events: {kinds}]"


def celery_publisher(send_task: Callable[..., Any]) -> CeleryPublisher:
    """The publisher of a service's Celery app (``celery.send_task``)."""
    return CeleryPublisher(send_task)


def redis_started_at(url: str) -> Callable[[], datetime | None]:
    """When the Redis server at ``url`` started, from its uptime."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)

    def started() -> datetime | None:
        info: dict[str, Any] = client.info("server")  # type: ignore[assignment]
        uptime = info.get("uptime_in_seconds")
        if uptime is None:
            return None
        # Uptime is in whole seconds, rounded down: this is at or just after the start,
        # so nothing published before it falls outside the rewind.
        return utcnow().replace(microsecond=0) - timedelta(seconds=int(uptime) - 1)

    return started
