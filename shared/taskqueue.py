"""The Celery app factory with the reliability settings of DESIGN.md (Events).

One Celery app per service, consuming one queue named after the service. Every task
has an explicit dotted name (``dispatch.handle_event``), is acknowledged only after
it ran (so a worker that dies mid-task leaves the message to be delivered again),
and runs inside its service's Flask app context.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from kombu import Exchange, Queue
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis
from kombu.transport import sqlalchemy as kombu_sqlalchemy
from sqlalchemy.exc import DBAPIError, OperationalError

from shared.config import Settings

if TYPE_CHECKING:
    from flask import Flask

# Errors worth retrying: the database or broker went away for a moment.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, DBAPIError, ConnectionError)


class SQLAlchemyTransport(kombu_sqlalchemy.Transport):
    """Kombu's SQLAlchemy transport, polling every 0.05 s instead of every second.

    With acks_late and a prefetch of one, the virtual transport sleeps a whole
    polling interval between messages, so the stock 1 s capped each embedded worker
    at about one task a second. The interval cannot be passed as a transport option:
    this transport hands every option to SQLAlchemy's create_engine.
    """

    polling_interval = 0.05


class RedisChannel(kombu_redis.Channel):
    """Kombu's Redis channel, closing cleanly after its transport let go of it.

    When the broker goes away, Celery's consumer first collects the connection (the
    transport drops its ``client``) and then closes it; closing the channel then tries
    to hand unacknowledged messages back to Redis through that missing client, and the
    ``AttributeError`` stops the whole worker instead of letting it reconnect. Redis is
    unreachable at that moment anyway: those messages stay in its unacked set and come
    back after the visibility timeout, as with any connection lost mid-task.
    """

    def close(self) -> None:
        if self.connection is not None and self.connection.client is None:
            self.do_restore = False  # here and in the QoS's finaliser at exit
        super().close()


class RedisTransport(kombu_redis.Transport):
    """Kombu's Redis transport with :class:`RedisChannel`."""

    Channel = RedisChannel


# Every aidlink process builds its Celery app here, so sqla+ and redis URLs resolve
# to these.
TRANSPORT_ALIASES["sqla"] = TRANSPORT_ALIASES["sqlalchemy"] = (
    f"{__name__}:{SQLAlchemyTransport.__name__}"
)
TRANSPORT_ALIASES["redis"] = TRANSPORT_ALIASES["rediss"] = (
    f"{__name__}:{RedisTransport.__name__}"
)


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    if settings.broker_is_redis:
        return {
            "visibility_timeout": settings.broker_visibility_timeout,
            "socket_connect_timeout": 5,
            "retry_on_timeout": True,
        }
    if settings.broker_url.startswith(("sqla+", "sqlalchemy+")):
        # Kombu hands these to SQLAlchemy's create_engine. The timeout lets several
        # processes queue for SQLite's write lock instead of failing at once.
        options: dict[str, Any] = {"pool_pre_ping": True}
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
