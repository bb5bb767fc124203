"""The Celery app factory with the reliability settings of DESIGN.md (Events).

One Celery app per service, consuming one queue named after the service. Every task
has an explicit dotted name (``dispatch.handle_event``), is acknowledged only after
it ran (so a worker that dies mid-task leaves the message to be delivered again),
and runs inside its service's Flask app context.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from queue import Empty
from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from kombu import Exchange, Queue
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis
from kombu.transport import sqlalchemy as kombu_sqlalchemy
from kombu.transport import virtual as kombu_virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from sqlalchemy import create_engine, delete, event, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from shared.config import Settings

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)

# Seconds a Redis command may wait for its reply before the connection counts as dead
# (Kombu's BRPOP itself waits 1 s; a loaded network cut once stalled workers the whole
# 30 s this used to be before they reconnected).
REDIS_SOCKET_TIMEOUT = 10

# Seconds Kombu's lock on restoring unacknowledged messages lives (Kombu: 300). A worker
# cut off from Redis while it restores leaves the lock behind, and no worker restores
# until it expires; a restore that outlives it may run beside another, which sends a
# message twice, and the inbox takes a copy once.
REDIS_RESTORE_LOCK_SECONDS = 60

# Errors worth retrying: the database or broker went away for a moment.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, DBAPIError, ConnectionError)


# Transport options that are this channel's own, not create_engine's.
_CHANNEL_OPTIONS = (
    "queue_tablename",
    "message_tablename",
    "callback",
    "errback",
    "max_retries",
    "interval_start",
    "interval_step",
    "interval_max",
    "retry_errors",
    "visibility_timeout",
    "idle_poll_max",
)
# ``version`` of a message row a worker holds: taken, not yet acknowledged. Kombu's own
# channel leaves positive versions on the rows it hid for good.
HELD = -1


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# Which file each embedded broker engine opened (device, inode), by broker URL.
_OPENED: dict[str, tuple[int, int] | None] = {}
_OPENING = threading.RLock()


def _sqlite_file(url: str) -> str | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return None if parsed.database == ":memory:" else parsed.database


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


class SQLAlchemyChannel(kombu_sqlalchemy.Channel):
    """Kombu's SQLAlchemy channel, keeping a taken message until it is acknowledged.

    Kombu's own channel hides a message from the queue when a worker takes it and
    never looks at it again: if the worker's main process dies before finishing it,
    the message is lost, and every message ever delivered stays in the table. Here a
    taken row is marked held (``version = HELD``) with the time it was taken, deleted
    when the task is acknowledged or handed back, and put back on its queue if it is
    still held after the visibility timeout (the worker that took it is taken for
    dead, as Redis does). Rows Kombu's own channel hid are delivered and deleted.
    """

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        timeout = connection.client.transport_options.get("visibility_timeout")
        self.visibility_timeout = float(timeout) if timeout else None
        self._next_sweep = 0.0

    def _engine_from_config(self) -> Any:
        conninfo = self.connection.client
        options = {
            name: value
            for name, value in conninfo.transport_options.items()
            if name not in _CHANNEL_OPTIONS
        }
        engine = create_engine(conninfo.hostname, **options)
        if engine.dialect.name == "sqlite":

            @event.listens_for(engine, "connect")
            def _wal(dbapi_connection: Any, _record: Any) -> None:
                # A file made anew (see ``_open``) is shared by every process too.
                dbapi_connection.execute("PRAGMA journal_mode=WAL")

        return engine

    def _open(self) -> Any:
        """The engine and session factory of the broker's database, shared by the
        process's channels; on SQLite, opened anew when the file was deleted or
        replaced since (an operator clearing ``var/broker.db``).

        Kombu keeps one engine per URL for the process's life: after the file was
        deleted, its pooled connections write into the deleted file (SQLite refuses:
        the database moved) and new ones open an empty file without the tables, so
        no message would pass again until every process restarted. The messages of
        the old file are lost with it; the events among them reach their
        subscribers again through the catch-up (shared/catchup.py)."""
        url = self.connection.client.hostname
        path = _sqlite_file(url)
        engines = kombu_sqlalchemy.Channel._engines
        if path is not None and url in engines and _file_id(path) != _OPENED.get(url):
            with _OPENING:
                if url in engines and _file_id(path) != _OPENED.get(url):
                    stale, _ = engines.pop(url)
                    stale.dispose()
                    log.warning(
                        "the embedded broker's file %s was deleted or replaced: opening it "
                        "anew (messages in the old file are lost; the catch-up sends their "
                        "events again)",
                        path,
                    )
        if url not in engines:
            with _OPENING:
                if url not in engines:
                    engine = self._engine_from_config()
                    for attempt in range(5):
                        try:
                            kombu_sqlalchemy.metadata.create_all(engine)
                            break
                        except OperationalError:
                            # Another process is making the same tables at this moment.
                            if attempt == 4:
                                raise
                            time.sleep(0.1)
                    engines[url] = engine, sessionmaker(bind=engine)
                    if path is not None:
                        _OPENED[url] = _file_id(path)
        return engines[url]

    @property
    def session(self) -> Any:
        engine, factory = self._open()
        if self._session is not None and self._session.bind is not engine:
            # Bound to an engine dropped for a deleted file.
            self._session.close()
            self._session = None
        if self._session is None:
            self._session = factory()
        return self._session

    @property
    def _held(self) -> dict[str, int]:
        """Delivery tag -> row of the messages this process holds (the connection's,
        since a message may be handed back through another of its channels)."""
        held: dict[str, int] = self.connection.__dict__.setdefault("aidlink_held", {})
        return held

    def _get(self, queue: str, timeout: Any = None) -> Any:
        self._restore_expired()
        obj = self._get_or_create(queue)
        session = self.session
        table = self.message_cls.__table__
        sqlite = session.bind.name == "sqlite"
        if sqlite:
            session.execute(text("BEGIN IMMEDIATE TRANSACTION"))
        try:
            taking = (
                select(table.c.id, table.c.payload)
                .where(table.c.queue_id == obj.id, table.c.visible == True)  # noqa: E712
                .order_by(table.c.timestamp, table.c.id)
                .limit(1)
            )
            if not sqlite:
                taking = taking.with_for_update(skip_locked=True)
            row = session.execute(taking).first()
            if row is None:
                raise Empty()
            session.execute(
                update(table)
                .where(table.c.id == row.id)
                .values(visible=False, version=HELD, timestamp=_now())
            )
            payload = loads(bytes_to_str(row.payload))
            self._held[payload["properties"]["delivery_tag"]] = row.id
            return payload
        finally:
            session.commit()

    def unfinished(self, queue: str) -> int:
        """Messages of ``queue`` waiting or held by a worker that has not finished
        them (acknowledged ones are deleted)."""
        return int(self._query_all(queue).count())

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple)
        self._forget(delivery_tag)

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue=requeue)
        self._forget(delivery_tag)

    def _restore(self, message: Any) -> None:
        # Put back as a new row first: a crash in between delivers it twice (events
        # are applied once), never not at all.
        super()._restore(message)
        self._forget(message.delivery_tag)

    def _forget(self, delivery_tag: str) -> None:
        row_id = self._held.pop(delivery_tag, None)
        if row_id is None:
            return
        table = self.message_cls.__table__
        # Acknowledgements come from the pool's result thread too: a connection of
        # its own, not the channel's session, which the consuming thread is using.
        engine, _ = self._open()
        try:
            with engine.begin() as conn:
                conn.execute(delete(table).where(table.c.id == row_id))
        except SQLAlchemyError:
            log.warning(
                "could not delete acknowledged message %s; it is delivered again after "
                "the visibility timeout",
                row_id,
                exc_info=True,
            )

    def _restore_expired(self) -> None:
        """Now and then, put back the messages held longer than the visibility
        timeout, and delete the rows Kombu's own channel left hidden."""
        if not self.visibility_timeout:
            return
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(30.0, self.visibility_timeout / 2)
        table = self.message_cls.__table__
        cutoff = _now() - timedelta(seconds=self.visibility_timeout)
        session = self.session
        try:
            restored: Any = session.execute(
                update(table)
                .where(
                    table.c.visible == False,  # noqa: E712
                    table.c.version == HELD,
                    table.c.timestamp < cutoff,
                )
                .values(visible=True, version=1)
            )
            session.execute(
                delete(table).where(table.c.visible == False, table.c.version != HELD)  # noqa: E712
            )
            session.commit()
        except SQLAlchemyError:
            session.rollback()
            log.warning("could not put back expired messages", exc_info=True)
            return
        if restored.rowcount:
            log.warning(
                "put back %d message(s) a worker took more than %.0f s ago without "
                "acknowledging them",
                restored.rowcount,
                self.visibility_timeout,
            )


# inotify (Linux): a file in the folder written, made, moved in or deleted.
_WRITES = ("MODIFY", "MOVED_TO", "CREATE", "DELETE")


class BrokerWatch:
    """Tells whether anything was committed to the embedded broker's SQLite file since
    it last looked, from SQLite's ``PRAGMA data_version`` on a read-only connection
    of its own.

    SQLite changes that number for a connection whenever another connection, of any
    process, commits a change to the file: a message sent, taken, acknowledged or put
    back. Reading it touches only the WAL's shared memory, a few microseconds, where a
    look at a queue takes the write lock and runs three statements. Looking at an
    empty queue commits no change, so an idle worker does not wake itself. The watch's
    connection only reads; when the file was deleted or replaced, it opens the new one."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None
        self._version: int | None = None
        self._inotify: Any = None
        self._no_inotify = False

    def changed(self) -> bool:
        """Whether the file changed since the last call; True when it cannot tell
        (then the caller looks at the queue, as it would without a watch)."""
        self._notify()  # from the first look on: no commit after it goes unseen
        try:
            if self._conn is not None and _file_id(self.path) != self._file:
                self.close()
            if self._conn is None:
                self._file = _file_id(self.path)
                # mode=rw: never creates the file (nor writes to it).
                self._conn = sqlite3.connect(
                    f"file:{self.path}?mode=rw", uri=True, timeout=1, check_same_thread=False
                )
                self._version = None
            version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            self.close()
            return True
        changed = version != self._version
        self._version = version
        return changed

    def wait(self, seconds: float, interval: float) -> bool:
        """Wait up to ``seconds`` for a commit to the file; True when one may have
        been made. Blocks on inotify where it can (Linux: no wake-up at all while
        nothing is written), else reads ``data_version`` every ``interval``."""
        notify = self._notify()
        if notify is None:
            time.sleep(min(interval, seconds))
            return self.changed()
        try:
            events = notify.read(timeout=max(int(seconds * 1000), 0))
        except OSError:
            self._close_notify()
            return True
        return self._names_written(events)

    def _notify(self) -> Any:
        """An inotify watch (``inotify_simple``) on the file's folder (the folder, not
        the files: SQLite deletes and makes the -wal file anew, and an operator may
        replace the file), None where inotify is not to be had."""
        if self._inotify is None and not self._no_inotify:
            try:
                from inotify_simple import INotify, flags

                notify = INotify(nonblocking=True)
                try:
                    mask = 0
                    for name in _WRITES:
                        mask |= getattr(flags, name)
                    notify.add_watch(os.path.dirname(os.path.abspath(self.path)), mask)
                except OSError:
                    notify.close()
                    raise
                self._inotify = notify
            except (ImportError, OSError):
                self._no_inotify = True
        return self._inotify

    def _names_written(self, events: Any) -> bool:
        """Whether any of the inotify ``events`` names the file or its -wal, or tells
        that the watch is gone (then the caller looks, as on a commit)."""
        from inotify_simple import flags

        mine = os.path.basename(self.path)
        for happened in events:
            if happened.mask & flags.IGNORED:
                self._close_notify()
                return True
            if happened.name in (mine, mine + "-wal"):
                return True
        return False

    def _close_notify(self) -> None:
        if self._inotify is not None:
            notify, self._inotify = self._inotify, None
            with suppress(OSError):
                notify.close()

    def close(self) -> None:
        self._close_notify()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with suppress(sqlite3.Error):
                conn.close()


class SQLAlchemyTransport(kombu_sqlalchemy.Transport):
    """Kombu's SQLAlchemy transport with :class:`SQLAlchemyChannel`, polling every
    0.05 s while messages come, backing off to ``idle_poll_max`` seconds (the
    transport option; ``AIDLINK_BROKER_IDLE_POLL``, 2 s) while its queues stay empty,
    and woken within 0.05 s when anything is committed to the broker's file.

    With acks_late and a prefetch of one, the virtual transport sleeps a polling
    interval between messages, so the stock 1 s capped each embedded worker at about
    one task a second: hence 0.05 s. But looking at a queue every 0.05 s takes
    SQLite's write lock and runs three statements twenty times a second in every
    worker, about 3% of a core each doing nothing. So after each empty look the wait
    before the next one doubles, up to ``idle_poll_max``; during that wait the
    transport blocks on inotify for a write to the broker's file (Linux), or else
    reads its ``PRAGMA data_version`` every 0.05 s (:class:`BrokerWatch`), and looks
    at its queues at once when another connection committed anything, a message sent
    by any process of the machine among it. A
    message therefore waits no longer than before; the backoff only spaces the looks
    that find nothing. The wait is back to 0.05 s after every message delivered. A
    broker on another database (PostgreSQL) has no such watch and polls every 0.05 s.

    The intervals are class attributes and channel options because the channel hands
    every transport option but its own (``_CHANNEL_OPTIONS``) to SQLAlchemy's
    create_engine.
    """

    Channel = SQLAlchemyChannel
    polling_interval = 0.05
    idle_poll_max = 2.0

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        idle = client.transport_options.get("idle_poll_max")
        if idle is not None:
            self.idle_poll_max = float(idle)
        self.idle_poll_max = max(self.idle_poll_max, self.polling_interval)
        path = _sqlite_file(client.hostname) if client.hostname else None
        self.watch = BrokerWatch(path) if path is not None else None
        # While the queues stay empty: seconds between the last look and the next
        # one, and when (time.monotonic()) the next is due.
        self.idle_wait = self.polling_interval
        self.next_look = 0.0

    def drain_events(self, connection: Any, timeout: Any = None, **kwargs: Any) -> Any:
        if self.watch is None:
            return super().drain_events(connection, timeout=timeout)
        assert self.cycle is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if now >= self.next_look:
                # Read before the look: a commit made while it runs wakes the wait after.
                self.watch.changed()
                try:
                    self.cycle.get(self._deliver, timeout=timeout)
                except Empty:
                    self.next_look = now + self.idle_wait
                    self.idle_wait = min(self.idle_wait * 2, self.idle_poll_max)
                else:
                    self.idle_wait = self.polling_interval
                    self.next_look = 0.0
                    return None
            if not self.wait_for_messages(deadline):
                raise TimeoutError()  # socket.timeout, as Kombu's own transport

    def wait_for_messages(self, deadline: float | None = None) -> bool:
        """Wait until the next look at the queues is due (True), looking at the
        broker file's ``data_version`` every polling interval: a commit makes the look
        due at once and starts the backoff again. False when ``deadline`` came first
        (the next call goes on waiting for the same look)."""
        assert self.watch is not None
        while True:
            now = time.monotonic()
            if now >= self.next_look:
                return True
            if deadline is not None and now >= deadline:
                return False
            until = self.next_look if deadline is None else min(self.next_look, deadline)
            if self.watch.wait(until - now, self.polling_interval):
                self.idle_wait = self.polling_interval
                self.next_look = 0.0
                return True

    def close_connection(self, connection: Any) -> None:
        if self.watch is not None:
            self.watch.close()
        super().close_connection(connection)


class RedisQoS(kombu_redis.QoS):
    """Kombu's Redis QoS, letting go of a message it could not acknowledge.

    Acknowledging removes the message from Redis's unacknowledged set, then from the
    consumer's own count of messages in hand. When the first step fails (the
    connection was cut at that moment), Kombu never takes the second, the consumer
    believes its prefetch of one still taken, and the worker stops taking messages
    for good although its consuming connection is fine. Here the count is released
    all the same: the message stays in Redis's unacknowledged set and is delivered
    again after the visibility timeout, and the inbox recognises the copy."""

    def ack(self, delivery_tag: str) -> None:
        try:
            self._remove_from_indices(delivery_tag).execute()
        except self.channel.connection_errors:
            log.warning(
                "could not acknowledge message %s on Redis; it is delivered again after "
                "the visibility timeout",
                delivery_tag,
                exc_info=True,
            )
        finally:
            kombu_virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        try:
            if requeue:
                self.restore_by_tag(delivery_tag, leftmost=True)
            else:
                self._remove_from_indices(delivery_tag).execute()
        except self.channel.connection_errors:
            log.warning(
                "could not hand message %s back to Redis; it is delivered again after "
                "the visibility timeout",
                delivery_tag,
                exc_info=True,
            )
        finally:
            kombu_virtual.QoS.ack(self, delivery_tag)


class RedisChannel(kombu_redis.Channel):
    """Kombu's Redis channel, closing cleanly after its transport let go of it.

    When the broker goes away, Celery's consumer first collects the connection (the
    transport drops its ``client``) and then closes it; closing the channel then tries
    to hand unacknowledged messages back to Redis through that missing client, and the
    ``AttributeError`` stops the whole worker instead of letting it reconnect. Redis is
    unreachable at that moment anyway: those messages stay in its unacked set and come
    back after the visibility timeout, as with any connection lost mid-task.
    """

    QoS = RedisQoS

    def close(self) -> None:
        if self.connection is not None and self.connection.client is None:
            self.do_restore = False  # here and in the QoS's finaliser at exit
        super().close()

    def _lookup(self, exchange: str, routing_key: str, default: Any = None) -> list[str]:
        """The queues a message goes to; the service's own queue when Redis has lost
        the exchange's bindings.

        Kombu keeps an exchange's bindings in Redis itself, and a connection declares
        its queues once: after an operator's FLUSHALL, a restart without persistence or
        a failover to a replica that had not received them, every message published on
        an open connection would go nowhere, silently. Each aidlink exchange is named
        after the one queue it routes to (``make_celery``): bind it again and deliver."""
        queues: list[str] = super()._lookup(exchange, routing_key, default)
        if not queues and exchange and exchange == routing_key:
            log.warning(
                "Redis had lost the binding of exchange %s; bound to its queue again", exchange
            )
            self._queue_bind(exchange, routing_key, "", routing_key)
            return [routing_key]
        return queues


class RedisTransport(kombu_redis.Transport):
    """Kombu's Redis transport with :class:`RedisChannel`."""

    Channel = RedisChannel


# Every aidlink process builds its Celery app here, so sqla+ and redis URLs resolve
# to these.
TRANSPORT_ALIASES["sqla"] = TRANSPORT_ALIASES["sqlalchemy"] = (
    f"{__name__}:{SQLAlchemyTransport.__name__}"
)
TRANSPORT_ALIASES["redis"] = TRANSPORT_ALIASES["rediss"] = f"{__name__}:{RedisTransport.__name__}"


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    if settings.broker_is_redis:
        return {
            "visibility_timeout": settings.broker_visibility_timeout,
            "socket_connect_timeout": 5,
            # A connection cut without a reset (a failover, a firewall or NAT dropping
            # the flow) would otherwise leave a publish or an acknowledgement waiting
            # for its reply for ever, and the worker with it. Kombu's BRPOP waits 1 s.
            "socket_timeout": REDIS_SOCKET_TIMEOUT,
            "socket_keepalive": True,
            "retry_on_timeout": True,
            "unacked_mutex_expire": min(
                REDIS_RESTORE_LOCK_SECONDS, max(1, settings.broker_visibility_timeout)
            ),
        }
    if settings.broker_url.startswith(("sqla+", "sqlalchemy+")):
        # All but the visibility timeout go to SQLAlchemy's create_engine. The connect
        # timeout lets several processes queue for SQLite's write lock instead of
        # failing at once.
        options: dict[str, Any] = {
            "pool_pre_ping": True,
            "visibility_timeout": settings.broker_visibility_timeout,
            "idle_poll_max": settings.broker_idle_poll,
        }
        if settings.broker_is_sqlite:
            options["connect_args"] = {"timeout": 30}
        return options
    return {}


def make_celery(service: str, settings: Settings, flask_app: Flask | None = None) -> Celery:
    """A Celery app for ``service``; tasks run in ``flask_app``'s context when given."""

    class FlaskTask(Task):
        """Runs every task inside the service's Flask app context."""

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            if flask_app is None:
                return self.run(*args, **kwargs)
            with flask_app.app_context():
                return self.run(*args, **kwargs)

    app = Celery(service, task_cls=FlaskTask, set_as_current=False)
    transport_options = broker_transport_options(settings)
    exchange = Exchange(service, type="direct")
    app.conf.update(
        broker_url=settings.broker_url,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        # Results are not used; events and state live in the services' databases.
        task_ignore_result=True,
        result_backend=None,
        result_backend_transport_options=transport_options,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_time_limit=settings.task_time_limit,
        task_soft_time_limit=max(1, settings.task_time_limit - 30),
        task_default_queue=service,
        task_default_exchange=service,
        task_default_routing_key=service,
        task_queues=(Queue(service, exchange, routing_key=service),),
        task_create_missing_queues=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        timezone="UTC",
        enable_utc=True,
    )
    if settings.broker_is_redis:
        # Redis re-delivers unacknowledged messages after the visibility timeout. Celery
        # reads it from three places (the app setting, the broker and the result
        # backend transport options); any one left at its default wins somewhere.
        app.conf.visibility_timeout = settings.broker_visibility_timeout
    return app


def prepare_broker(settings: Settings) -> None:
    """Put the embedded broker's SQLite file in WAL mode (a setting the file keeps),
    so the web processes, workers and beat can all use it at once."""
    if not settings.broker_is_sqlite:
        return
    import sqlite3
    from contextlib import closing

    path = settings.broker_url.split("sqlite:///", 1)[1]
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
