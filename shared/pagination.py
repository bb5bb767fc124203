"""Cursor pagination: the one way every list endpoint pages.

A cursor is an opaque token holding the sort key of the last item served, so pages
stay stable while rows are added, unlike offsets.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from shared.problems import Problem


class ListArgsSchema(Schema):
    cursor = fields.String(
        load_default=None, metadata={"description": "next_cursor of the previous page"}
    )
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


def page_schema(item_schema: type[Schema], name: str) -> type[Schema]:
    """The ``{"items": [...], "next_cursor": ...}`` envelope around ``item_schema``."""
    return type(
        name,
        (Schema,),
        {
            "items": fields.List(fields.Nested(item_schema), required=True),
            "next_cursor": fields.String(allow_none=True, required=True),
        },
    )


def _encode(created_at: datetime, id_: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(id_)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, id_ = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(created), uuid.UUID(id_)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise Problem(
            400, "The cursor is not one this API issued.", errors={"cursor": ["Invalid cursor."]}
        ) from None


def paginate(
    session: Session,
    stmt: Select[Any],
    model: Any,
    *,
    cursor: str | None,
    limit: int,
    time_column: str = "created_at",
) -> dict[str, Any]:
    """Serve one page of ``stmt`` ordered by (``time_column``, id)."""
    column = getattr(model, time_column)
    if cursor:
        created_at, id_ = _decode(cursor)
        stmt = stmt.where(
            or_(
                column > created_at,
                and_(column == created_at, model.id > id_),
            )
        )
    rows = list(session.scalars(stmt.order_by(column, model.id).limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = _encode(getattr(rows[-1], time_column), rows[-1].id)
    return {"items": rows, "next_cursor": next_cursor}
