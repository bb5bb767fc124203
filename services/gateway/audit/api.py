"""The audit log's API: coordinators read it at ``GET /api/v1/audit``."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from services.gateway.models import AuditEntry
from shared.identity import require_roles
from shared.pagination import ListArgsSchema, page_schema, paginate
from shared.web import db_session

blp = Blueprint("audit", __name__, url_prefix="/api/v1/audit", description="The audit log")


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
