"""A running service's handles on the outside world (database, broker, outbox,
inbox), apart from the web: what use cases, tasks and event handlers are given."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from shared.catchup import CatchUp, CatchUpRow
from shared.config import Settings
from shared.idempotency import IdempotencyRow
from shared.inbox import AggregateVersionRow, DeadLetterRow, DeliveryRow, Inbox, InboxRow
from shared.outbox import Outbox, OutboxRow


@dataclass(frozen=True)
class MessagingModels:
    """The outbox and inbox tables of one service, mapped on that service's Base."""

    outbox: type[OutboxRow]
    inbox: type[InboxRow]
    versions: type[AggregateVersionRow]
    deliveries: type[DeliveryRow]
    dead_letters: type[DeadLetterRow]
    idempotency: type[IdempotencyRow]
    catch_up: type[CatchUpRow]


def define_messaging_models(base: type[DeclarativeBase]) -> MessagingModels:
    """Map the outbox and inbox tables onto a service's own metadata."""

    def mapped(mixin: type, name: str) -> Any:
        return type(name, (mixin, base), {})

    return MessagingModels(
        outbox=mapped(OutboxRow, "OutboxMessage"),
        inbox=mapped(InboxRow, "InboxEvent"),
        versions=mapped(AggregateVersionRow, "AggregateVersion"),
        deliveries=mapped(DeliveryRow, "Delivery"),
        dead_letters=mapped(DeadLetterRow, "DeadLetter"),
        idempotency=mapped(IdempotencyRow, "IdempotencyKey"),
        catch_up=mapped(CatchUpRow, "CatchUpPeer"),
    )


@dataclass
class ServiceRuntime:
    """A running service's handles on the outside world."""

    name: str
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    celery: Celery
    outbox: Outbox
    inbox: Inbox
    # Sessions for reading only. On SQLite they begin without taking the write lock,
    # so a request may read here while it writes in a unit of work.
    read_session_factory: sessionmaker[Session] | None = None
    models: MessagingModels | None = None
    # Asks subscribers what they lack and sends it again (shared/catchup.py).
    catch_up: CatchUp | None = None

    @property
    def read_engine(self) -> Engine:
        """The engine of :attr:`read_session_factory` (the service's engine when it
        has none of its own)."""
        if self.read_session_factory is not None:
            bind = self.read_session_factory.kw.get("bind")
            if isinstance(bind, Engine):
                return bind
        return self.engine

    def dispose(self) -> None:
        """Publish what the background relay holds, then close every pooled database
        connection."""
        self.outbox.flush()
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """A transaction that commits when the block ends cleanly, else rolls back.

        Events added to the outbox inside it are relayed right after the commit.
        """
        with self.session_factory() as session, session.begin():
            yield session
