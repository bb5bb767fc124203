"""What a transaction collects for after its commit (events to relay, ledger figures
to add, webhook deliveries to queue), kept in its session by savepoint: what a
savepoint collected goes when the savepoint ends without being released (rolled back,
or closed after a flush inside it failed, which rolls it back with no rollback event
of its own), and everything goes when the transaction ends without its commit."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session


class Pending:
    """A list in ``session.info[key]`` that follows the session's savepoints once
    :meth:`listen` is called on the sessions (a session factory, or ``Session``)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._marks = f"{key}.savepoints"

    def listen(self, target: Any) -> None:
        event.listen(target, "after_transaction_create", self._begun)
        event.listen(target, "after_commit", self._released)
        event.listen(target, "after_transaction_end", self._ended)

    def append(self, session: Session, item: Any) -> None:
        session.info.setdefault(self.key, []).append(item)

    def extend(self, session: Session, items: Any) -> None:
        session.info.setdefault(self.key, []).extend(items)

    def take(self, session: Session) -> list[Any] | None:
        """Everything collected, now the caller's (at the commit)."""
        session.info.pop(self._marks, None)
        taken: list[Any] | None = session.info.pop(self.key, None)
        return taken

    def _begun(self, session: Session, transaction: Any) -> None:
        # Where a savepoint begins in the list.
        if transaction.nested:
            marks = session.info.setdefault(self._marks, {})
            marks[transaction] = len(session.info.get(self.key) or ())

    def _released(self, session: Session) -> None:
        # A savepoint released: what it collected stays with the transaction.
        if session.in_nested_transaction():
            session.info.get(self._marks, {}).pop(session.get_nested_transaction(), None)

    def _ended(self, session: Session, transaction: Any) -> None:
        if transaction.parent is None:
            session.info.pop(self.key, None)
            session.info.pop(self._marks, None)
        elif transaction.nested:
            mark = session.info.get(self._marks, {}).pop(transaction, None)
            items = session.info.get(self.key)
            if mark is not None and items is not None:
                del items[mark:]
