"""Cursor pagination: the one way every list endpoint pages.

A cursor is an opaque token holding the sort key of the last item served, so pages
stay stable while rows are added, unlike offsets.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import Select, literal, select, tuple_
from sqlalchemy.orm import Session

from shared.identity import current_identity, forbidden
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


# A cursor says which order it continues, so that it is not taken for the other (which
# would answer a page of the wrong rows without a word).
_ORDERS = {False: "asc", True: "desc"}


def _encode(created_at: datetime, id_: uuid.UUID, newest_first: bool = False) -> str:
    parts = [created_at.isoformat(), str(id_), _ORDERS[newest_first]]
    raw = json.dumps(parts).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, newest_first: bool = False) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, id_, *order = json.loads(base64.urlsafe_b64decode(padded))
        decoded = datetime.fromisoformat(created), uuid.UUID(id_)
        if order not in ([], ["asc"], ["desc"]):
            raise ValueError(order)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise Problem(
            400, "The cursor is not one this API issued.", errors={"cursor": ["Invalid cursor."]}
        ) from None
    # A cursor from before the order was written in it is taken either way.
    if order and order != [_ORDERS[newest_first]]:
        said = "newest first" if order == ["desc"] else "oldest first"
        raise Problem(
            400,
            f"The cursor continues a list read {said}.",
            errors={"cursor": [f"Ask in the order of the page that gave it ({said})."]},
        )
    return decoded


def paginate(
    session: Session,
    stmt: Select[Any],
    model: Any,
    *,
    cursor: str | None,
    limit: int,
    time_column: str = "created_at",
    newest_first: bool = False,
) -> dict[str, Any]:
    """Serve one page of ``stmt`` ordered by (``time_column``, id), or the newest
    first."""
    column = getattr(model, time_column)
    if cursor:
        created_at, id_ = _decode(cursor, newest_first)
        # A row comparison: an index on (time, id) goes straight to the cursor, where
        # an OR of two conditions made PostgreSQL read every row before it.
        key = tuple_(column, model.id)
        last = tuple_(literal(created_at, column.type), id_)
        stmt = stmt.where(key < last if newest_first else key > last)
    order = (column.desc(), model.id.desc()) if newest_first else (column, model.id)
    rows = list(session.scalars(stmt.order_by(*order).limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = _encode(getattr(rows[-1], time_column), rows[-1].id, newest_first)
    return {"items": rows, "next_cursor": next_cursor}


class OrgListArgsSchema(ListArgsSchema):
    """The filters of a list of organisations' documents (pledges, needs)."""

    region = fields.String(validate=validate.Regexp(r"^\d{1,6}$", error="Digits only."))
    org_id = fields.UUID(metadata={"description": "Coordinators: one organisation's"})
    created_after = fields.AwareDateTime()
    created_before = fields.AwareDateTime()


@dataclass(frozen=True)
class OrgListing:
    """How a list of documents owned by organisations, each with lines, is narrowed:
    to the caller's own organisation (coordinators see everyone's, or one
    ``org_id``'s), then by status, region prefix, creation time and, through
    ``line_filters`` (argument name to line column), by what their lines hold."""

    model: Any
    region: Any
    line_parent: Any
    line_filters: Mapping[str, Any]
    owner_role: str
    refusal: str

    def scoped(self, stmt: Any, args: Mapping[str, Any]) -> Any:
        identity = current_identity()
        model = self.model
        if identity.is_coordinator:
            if args.get("org_id"):
                stmt = stmt.where(model.org_id == args["org_id"])
        elif identity.has_role(self.owner_role):
            stmt = stmt.where(model.org_id == identity.org_id)
        else:
            raise forbidden(self.refusal)
        if args.get("status"):
            stmt = stmt.where(model.status == args["status"])
        if args.get("region"):
            stmt = stmt.where(self.region.startswith(args["region"]))
        if args.get("created_after"):
            stmt = stmt.where(model.created_at >= args["created_after"])
        if args.get("created_before"):
            stmt = stmt.where(model.created_at < args["created_before"])
        on_lines = [
            column == args[name] for name, column in self.line_filters.items() if args.get(name)
        ]
        if on_lines:
            stmt = stmt.where(model.id.in_(select(self.line_parent).where(*on_lines)))
        return stmt
