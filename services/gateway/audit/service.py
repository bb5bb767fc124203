"""The audit log: a row for every state change made through the gateway.

The gateway's own changes (registrations, verifications, tokens, webhooks, ...) are
recorded by :func:`record` in the same transaction as the change, with the state
before and after. Writes the gateway forwards to a service are recorded once the
service has answered with success, with the resource it returned.
Coordinators read the log at ``GET /api/v1/audit`` (:mod:`.api`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from services.gateway.models import AuditEntry
from shared.identity import current_identity
from shared.observability import client_ip_var, request_id_var

# Fields never written to the log, wherever they appear.
SECRET_FIELDS = frozenset(
    {
        "password",
        "password_hash",
        "secret",
        "token",
        "token_hash",
        "refresh_token",
        "access_token",
        "refresh_hash",
        "previous_refresh_hash",
    }
)


def redact(value: Any) -> Any:
    """``value`` with secrets blanked, ready to be stored as JSON."""
    if isinstance(value, dict):
        return {k: "[redacted]" if k in SECRET_FIELDS else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _values(
    action: str,
    target_type: str,
    target_id: uuid.UUID | str | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    actor_user_id: uuid.UUID | None,
    actor_org_id: uuid.UUID | None,
) -> dict[str, Any]:
    identity = current_identity()
    return {
        "id": uuid.uuid4(),
        "actor_user_id": actor_user_id or identity.user_id,
        "actor_org_id": actor_org_id or identity.org_id,
        "actor_kind": (identity.via if identity.authenticated or actor_user_id is None else "user"),
        "action": action,
        "target_type": target_type,
        "target_id": str(target_id) if target_id is not None else None,
        "before": redact(before) if before is not None else None,
        "after": redact(after) if after is not None else None,
        "request_id": request_id_var.get(),
        "ip": client_ip_var.get(),
    }


def record(
    session: Session,
    action: str,
    target_type: str,
    target_id: uuid.UUID | str | None,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    actor_user_id: uuid.UUID | None = None,
    actor_org_id: uuid.UUID | None = None,
) -> AuditEntry:
    """Add an audit row to ``session``'s transaction, attributed to the current caller
    (or to the actor given, e.g. the user who has just registered)."""
    entry = AuditEntry(
        **_values(action, target_type, target_id, before, after, actor_user_id, actor_org_id)
    )
    session.add(entry)
    return entry


def write(
    session: Session,
    action: str,
    target_type: str,
    target_id: uuid.UUID | str | None,
    *,
    after: dict[str, Any] | None = None,
) -> None:
    """The row :func:`record` adds, written at once as one Core insert (no object
    kept): for the write the gateway forwarded, in a transaction of its own on every
    such request."""
    session.execute(
        insert(cast(Table, AuditEntry.__table__)),
        [_values(action, target_type, target_id, None, after, None, None)],
    )


def snapshot(obj: Any, *columns: str) -> dict[str, Any]:
    """The named attributes of ``obj`` as a JSON-ready dict, for before/after."""
    return {name: redact(getattr(obj, name)) for name in columns}
