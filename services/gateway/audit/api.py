"""The audit log: a row for every state change made through the gateway.

The gateway's own changes (registrations, verifications, tokens, webhooks, ...) are
recorded by :func:`record` in the same transaction as the change, with the state
before and after. Writes the gateway forwards to a service are recorded once the
service has answered with success, with the resource it returned.
Coordinators read the log at ``GET /api/v1/audit``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.gateway.models import AuditEntry
from shared.identity import current_identity, require_roles
from shared.observability import request_id_var
from shared.pagination import ListArgsSchema, page_schema, paginate
from shared.web import db_session

blp = Blueprint("audit", __name__, url_prefix="/api/v1/audit", description="The audit log")

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
    identity = current_identity()
    entry = AuditEntry(
        id=uuid.uuid4(),
        actor_user_id=actor_user_id or identity.user_id,
        actor_org_id=actor_org_id or identity.org_id,
        actor_kind=(identity.via if identity.authenticated or actor_user_id is None else "user"),
        action=action,
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
        before=redact(before) if before is not None else None,
        after=redact(after) if after is not None else None,
        request_id=request_id_var.get(),
        ip=_client_ip(),
    )
    session.add(entry)
    return entry


def _client_ip() -> str | None:
    try:
        return request.remote_addr
    except RuntimeError:  # outside a request (the command line)
        return None


def snapshot(obj: Any, *columns: str) -> dict[str, Any]:
    """The named attributes of ``obj`` as a JSON-ready dict, for before/after."""
    return {name: redact(getattr(obj, name)) for name in columns}


class AuditEntrySchema(Schema):
    id = fields.UUID()
    at = fields.AwareDateTime()
    actor_user_id = fields.UUID(allow_none=True)
    actor_org_id = fields.UUID(allow_none=True)
    actor_kind = fields.String()
    action = fields.String()
    target_type = fields.String()
    target_id = fields.String(allow_none=True)
    before = fields.Dict(allow_none=True)
    after = fields.Dict(allow_none=True)
    request_id = fields.String(allow_none=True)
    ip = fields.String(allow_none=True)


class AuditArgsSchema(ListArgsSchema):
    actor_user_id = fields.UUID()
    actor_org_id = fields.UUID()
    action = fields.String(validate=validate.Length(max=100))
    target_type = fields.String(validate=validate.Length(max=50))
    target_id = fields.String(validate=validate.Length(max=64))
    since = fields.AwareDateTime(metadata={"description": "Entries at or after this time"})
    until = fields.AwareDateTime(metadata={"description": "Entries before this time"})


AuditPageSchema = page_schema(AuditEntrySchema, "AuditPageSchema")


@blp.route("")
class AuditLog(MethodView):
    @blp.arguments(AuditArgsSchema, location="query")
    @blp.response(200, AuditPageSchema)
    @require_roles("coordinator")
    def get(self, args: dict[str, Any]) -> Any:
        """Audit entries, newest last, filtered by actor, action, target and time."""
        stmt = select(AuditEntry)
        for name in ("actor_user_id", "actor_org_id", "action", "target_type", "target_id"):
            if args.get(name) is not None:
                stmt = stmt.where(getattr(AuditEntry, name) == args[name])
        if args.get("since") is not None:
            stmt = stmt.where(AuditEntry.at >= args["since"])
        if args.get("until") is not None:
            stmt = stmt.where(AuditEntry.at < args["until"])
        return paginate(
            db_session(),
            stmt,
            AuditEntry,
            cursor=args["cursor"],
            limit=args["limit"],
            time_column="at",
        )
