"""``Idempotency-Key`` on POST: a repeat of a request returns the first response.

A client that did not hear the answer to a POST (a dropped connection, a restarted
gateway) sends it again with the same key and gets the answer the first one got,
without the work being done twice. Keys are scoped to the caller (user, else
organisation, else address). The first request with a key records it before running;
a repeat while it runs gets 409; a repeat with a different body gets 422.

The answer is kept after the request, in a transaction of its own; what makes the
guarantee hold when that fails (or the process dies first) is ``applied_at``, stamped
inside the request's own transaction as it commits its work. A key whose work was
applied is never run again: a repeat gets the kept answer or, if none could be kept,
a 409 saying the request was applied. A request that committed nothing and answered
5xx is forgotten, so a retry runs it again. Records are kept for ``RETENTION`` and
then swept.

A request recorded more than ``ABANDONED_AFTER`` ago that has committed nothing is
taken for dead, and a retry takes the key over. Should the first request in fact be
alive and commit later, its own transaction decides: each holder of a key has a
``claim`` token, and stamping ``applied_at`` is a conditional UPDATE on that token in
the work's transaction. A request whose key was taken over finds no row to stamp and
rolls its work back (answering 409), so the work is applied once, by one of them.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, has_request_context, request
from sqlalchemy import JSON, Integer, LargeBinary, String, delete, event, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column, sessionmaker

from shared.db import UTCDateTime, utcnow
from shared.identity import current_identity
from shared.problems import Problem

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
RETENTION = timedelta(hours=24)
# A request recorded this long ago and never finished died with its process.
ABANDONED_AFTER = timedelta(seconds=120)
# Keeping the answer (or forgetting a failed request) is tried this many times when
# the connection it ran on turned out to be dead.
KEEP_ATTEMPTS = 3
REPLAYED_HEADERS = ("Content-Type", "ETag", "Location")
# A session ran an UPDATE, INSERT or DELETE statement (Core writes leave the ORM's
# new/dirty/deleted collections empty).
_WROTE = "aidlink.idempotency.wrote"


def _note_write(state: ORMExecuteState) -> None:
    if state.is_update or state.is_delete or state.is_insert:
        state.session.info[_WROTE] = True


def _note_flush(session: Session, _context: Any) -> None:
    session.info[_WROTE] = True


_BOOKKEEPING = "aidlink.idempotency.bookkeeping"


def bookkeeping(session: Session) -> Session:
    """Mark a transaction as housekeeping around a request's work (taking or
    releasing a lock), so its commit does not count as the work being applied."""
    session.info[_BOOKKEEPING] = True
    return session


def is_bookkeeping(session: Session) -> bool:
    """Whether ``session``'s transaction was marked :func:`bookkeeping`."""
    return bool(session.info.get(_BOOKKEEPING))


class IdempotencyRow:
    """Columns of a service's ``idempotency_keys`` table."""

    if TYPE_CHECKING:

        def __init__(self, **columns: Any) -> None: ...

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    method: Mapped[str] = mapped_column(String(8), nullable=False)
    path: Mapped[str] = mapped_column(String(500), nullable=False)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    headers: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # Stamped in the same transaction as the request's work: it happened.
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The token of the request that holds the key (a fence: see the module's docs).
    claim: Mapped[str | None] = mapped_column(String(32), nullable=True)


class TakenOver(Problem):
    """The request's key was taken over by a retry while it ran: its work is not
    applied (the retry's is)."""

    def __init__(self) -> None:
        super().__init__(
            409,
            "This request ran so long that a retry with the same Idempotency-Key took it "
            "over; it was not applied. The retry's answer is the one that counts.",
            slug="idempotency-key-taken-over",
        )


def _scope() -> str:
    identity = current_identity()
    if identity.user_id is not None:
        return f"user:{identity.user_id}"
    if identity.org_id is not None:
        return f"org:{identity.org_id}"
    return f"ip:{request.remote_addr}"


def _fingerprint() -> str:
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(b"\0")
    digest.update(request.full_path.encode())
    digest.update(b"\0")
    digest.update(request.get_data(cache=True))
    return digest.hexdigest()


def install_idempotency(
    app: Flask,
    model: type[IdempotencyRow],
    session_factory: sessionmaker[Any],
    *,
    skip: Callable[[str], bool] | None = None,
    work_sessions: sessionmaker[Any] | None = None,
) -> None:
    """Honour Idempotency-Key on this app's POSTs; install after authentication.
    ``work_sessions`` makes the sessions the app's views write in; their commits mark
    the key applied (default: ``session_factory``)."""
    event.listen(work_sessions or session_factory, "before_commit", _mark_applied(model))
    # First among the commit's hooks: the outbox's inline relay commits a transaction
    # of its own in the same request right after, which must find the key applied.
    event.listen(work_sessions or session_factory, "after_commit", _applied_committed, insert=True)
    event.listen(work_sessions or session_factory, "after_soft_rollback", _stamp_rolled_back)
    event.listen(work_sessions or session_factory, "do_orm_execute", _note_write)
    event.listen(work_sessions or session_factory, "after_flush", _note_flush)

    @app.before_request
    def _replay_or_record() -> Response | None:
        if request.method != "POST" or not request.path.startswith("/api/"):
            return None
        key = request.headers.get(HEADER)
        if key is None or (skip is not None and skip(request.path)):
            return None
        key = key.strip()
        if not key or len(key) > 255 or not key.isprintable():
            raise Problem(
                400,
                "Idempotency-Key must be 1 to 255 printable characters.",
                errors={HEADER: ["1 to 255 printable characters."]},
            )
        scope = _scope()
        fingerprint = _fingerprint()
        now = utcnow()
        with session_factory() as session:
            row = session.get(model, (scope, key))
        if (
            row is not None
            and row.completed_at is None
            and row.applied_at is None
            and now - row.created_at > ABANDONED_AFTER
        ):
            # Its process died before committing anything: run it again.
            with session_factory() as session, session.begin():
                session.execute(
                    delete(model).where(
                        model.scope == scope,
                        model.key == key,
                        model.completed_at.is_(None),
                        model.applied_at.is_(None),
                    )
                )
            row = None
        if row is not None:
            if row.request_hash != fingerprint:
                raise Problem(
                    422,
                    "This Idempotency-Key was used for a different request.",
                    slug="idempotency-key-reused",
                    errors={HEADER: ["Used before with a different request."]},
                )
            if (
                row.status is None
                and row.applied_at is not None
                and (row.completed_at is not None or now - row.applied_at > ABANDONED_AFTER)
            ):
                raise Problem(
                    409,
                    "A request with this Idempotency-Key was applied, but its answer was "
                    "lost; look the result up instead of sending it again.",
                    slug="idempotency-key-applied",
                )
            if row.completed_at is None or row.status is None:
                raise Problem(
                    409,
                    "A request with this Idempotency-Key is still being processed.",
                    slug="idempotency-key-in-progress",
                    headers={"Retry-After": "1"},
                )
            response = Response(row.body or b"", status=row.status)
            for name, value in (row.headers or {}).items():
                response.headers[name] = value
            response.headers["Idempotent-Replayed"] = "true"
            return response
        claim = secrets.token_hex(16)
        try:
            with session_factory() as session, session.begin():
                session.add(
                    model(
                        scope=scope,
                        key=key,
                        method=request.method,
                        path=request.path[:500],
                        request_hash=fingerprint,
                        created_at=now,
                        claim=claim,
                    )
                )
        except IntegrityError:
            raise Problem(
                409,
                "A request with this Idempotency-Key is still being processed.",
                slug="idempotency-key-in-progress",
                headers={"Retry-After": "1"},
            ) from None
        g.idempotency_key = (scope, key)
        g.idempotency_claim = claim
        return None

    def _store(taken: tuple[str, str], claim: str | None, response: Response) -> None:
        with session_factory() as session, session.begin():
            row = session.get(model, taken)
            if row is None or row.claim != claim:
                # Forgotten, or taken over by a retry: the row is not this request's.
                return
            if response.status_code >= 500 or response.is_streamed:
                if row.applied_at is None:
                    # Nothing was done and the answer is not worth repeating: the
                    # client may try again.
                    session.delete(row)
                else:
                    # The work happened; a repeat must not do it twice.
                    row.completed_at = utcnow()
                return
            row.status = response.status_code
            row.body = response.get_data()
            row.headers = {
                name: response.headers[name]
                for name in REPLAYED_HEADERS
                if name in response.headers
            }
            row.completed_at = utcnow()

    @app.after_request
    def _keep_answer(response: Response) -> Response:
        taken = g.pop("idempotency_key", None)
        claim = g.pop("idempotency_claim", None)
        if taken is None:
            return response
        for attempt in range(1, KEEP_ATTEMPTS + 1):
            try:
                _store(taken, claim, response)
            except DBAPIError as exc:
                # The request's own failure was often this very connection dropping:
                # the pool hands out a fresh one, so try again rather than leave the
                # key looking in progress until it is taken for abandoned.
                if exc.connection_invalidated and attempt < KEEP_ATTEMPTS:
                    continue
                log.exception("could not keep the answer for Idempotency-Key %s", taken[1])
            except Exception:
                log.exception("could not keep the answer for Idempotency-Key %s", taken[1])
            break
        return response


def _mark_applied(model: type[IdempotencyRow]) -> Callable[[Session], None]:
    """Before a request's transaction commits, stamp its key ``applied`` in that same
    transaction: the work and the mark commit together or not at all."""

    def before_commit(session: Session) -> None:
        if (
            not has_request_context()
            or session.in_nested_transaction()
            or session.info.get(_BOOKKEEPING)
        ):
            return
        taken = g.get("idempotency_key")
        if taken is None or g.get("idempotency_applied"):
            return
        if not (session.new or session.dirty or session.deleted or session.info.get(_WROTE)):
            return
        stamped: Any = session.execute(
            update(model)
            .where(
                model.scope == taken[0],
                model.key == taken[1],
                model.claim == g.get("idempotency_claim"),
                model.applied_at.is_(None),
            )
            .values(applied_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if stamped.rowcount != 1:
            # A retry took the key over while this request ran: the fence holds, and
            # this transaction (the work with it) rolls back.
            raise TakenOver()
        # Applied once the commit is through (see _applied_committed): the commit may
        # still fail after this, taking the stamp with it.
        session.info[_STAMPED] = True

    return before_commit


_STAMPED = "aidlink.idempotency.stamped"


def _applied_committed(session: Session) -> None:
    """The transaction that stamped the key committed: the request's later
    transactions need not stamp it again."""
    if session.in_nested_transaction():
        return
    if session.info.pop(_STAMPED, None) and has_request_context():
        g.idempotency_applied = True


def _stamp_rolled_back(session: Session, previous_transaction: Any) -> None:
    """The stamp went with a rolled-back transaction (one that failed as it
    committed): the next transaction of the request stamps the key again."""
    if previous_transaction.parent is None:
        session.info.pop(_STAMPED, None)


def sweep(model: type[IdempotencyRow], session_factory: sessionmaker[Any]) -> int:
    """Forget keys older than :data:`RETENTION`."""
    cutoff = utcnow() - RETENTION
    with session_factory() as session, session.begin():
        result: Any = session.execute(delete(model).where(model.created_at < cutoff))
        return int(result.rowcount or 0)
