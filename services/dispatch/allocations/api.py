"""The allocations API: who may see which allocation, and a coordinator's cancellation."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, post_dump, validate
from sqlalchemy import select

from services.dispatch.allocations import service as saga
from services.dispatch.allocations.service import ALLOCATION_STATUSES
from services.dispatch.matching import service as matching_service
from services.dispatch.models import Allocation, of_need, of_pledge
from shared.display_fields import DISPLAY_PARAMETER, DisplayQuantities
from shared.identity import current_identity, forbidden, require_roles
from shared.pagination import ListArgsSchema, page_schema, paginate
from shared.privacy import donor_hidden, without_donor
from shared.problems import Problem
from shared.web import db_session, runtime

blp = Blueprint(
    "allocations", __name__, url_prefix="/api/v1/allocations", description="Allocations"
)


class AllocationSchema(DisplayQuantities, Schema):
    display_fields = ("quantity",)

    id = fields.UUID()
    status = fields.String()
    quantity = fields.Integer()
    item = fields.String()
    pledge_id = fields.UUID()
    pledge_line_id = fields.UUID()
    donor_org_id = fields.UUID(
        allow_none=True,
        metadata={
            "description": "None when the donor is anonymous (except to itself and "
            "coordinators), as are pledge_id and pledge_line_id"
        },
    )
    donor_anonymous = fields.Boolean(metadata={"description": "The donor asked not to be named"})
    need_id = fields.UUID()
    need_line_id = fields.UUID()
    recipient_org_id = fields.UUID()
    run_id = fields.UUID(allow_none=True)
    reason = fields.Dict()
    status_reason = fields.String(allow_none=True)
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()

    @post_dump(pass_original=True)
    def _anonymous_donor(
        self, data: dict[str, Any], allocation: Allocation, **_kw: Any
    ) -> dict[str, Any]:
        identity = current_identity()
        if donor_hidden(
            anonymous=bool(allocation.donor_anonymous),
            donor_org_id=allocation.donor_org_id,
            viewer_org_id=identity.org_id,
            viewer_is_coordinator=identity.is_coordinator,
        ):
            hidden: dict[str, Any] = without_donor(data)
            return hidden
        return data


class AllocationArgsSchema(ListArgsSchema):
    need_id = fields.UUID()
    pledge_id = fields.UUID()
    need_line_id = fields.UUID()
    pledge_line_id = fields.UUID()
    run_id = fields.UUID()
    status = fields.String(validate=validate.OneOf(ALLOCATION_STATUSES))
    item = fields.String(validate=validate.Length(max=64))


class CancelSchema(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=3, max=200))


AllocationPageSchema = page_schema(AllocationSchema, "AllocationPageSchema")


def _scoped_allocations(stmt: Any) -> Any:
    identity = current_identity()
    if identity.is_coordinator:
        return stmt
    if identity.has_role("recipient"):
        return stmt.where(Allocation.recipient_org_id == identity.org_id)
    if identity.has_role("donor"):
        return stmt.where(Allocation.donor_org_id == identity.org_id)
    raise forbidden("Allocations are seen by their donors, recipients and coordinators.")


@blp.route("", parameters=[DISPLAY_PARAMETER])
class Allocations(MethodView):
    @blp.arguments(AllocationArgsSchema, location="query")
    @blp.response(200, AllocationPageSchema)
    @require_roles()
    def get(self, args: dict[str, Any]) -> Any:
        """Allocations of your needs or pledges (coordinators: all), with filters."""
        stmt = _scoped_allocations(select(Allocation))
        # A need's or a pledge's through their lines (the lines' indexes serve them).
        if args.get("need_id"):
            stmt = stmt.where(of_need(args["need_id"]))
        if args.get("pledge_id"):
            stmt = stmt.where(of_pledge(args["pledge_id"]))
        for name in ("need_line_id", "pledge_line_id", "run_id"):
            if args.get(name):
                stmt = stmt.where(getattr(Allocation, name) == args[name])
        if args.get("status"):
            stmt = stmt.where(Allocation.status == args["status"])
        if args.get("item"):
            stmt = stmt.where(Allocation.item == args["item"])
        return paginate(db_session(), stmt, Allocation, cursor=args["cursor"], limit=args["limit"])


def _visible_allocation(session: Any, allocation_id: uuid.UUID) -> Allocation:
    identity = current_identity()
    found = session.get(Allocation, allocation_id)
    if found is None or not (
        identity.is_coordinator or identity.org_id in (found.recipient_org_id, found.donor_org_id)
    ):
        raise Problem(404, f"No allocation {allocation_id}.", slug="allocation-not-found")
    return found


@blp.route("/<uuid:allocation_id>", parameters=[DISPLAY_PARAMETER])
class AllocationById(MethodView):
    @blp.response(200, AllocationSchema)
    @require_roles()
    def get(self, allocation_id: uuid.UUID) -> Any:
        return _visible_allocation(db_session(), allocation_id)


@blp.route("/<uuid:allocation_id>/cancel", methods=["POST"], parameters=[DISPLAY_PARAMETER])
@blp.arguments(CancelSchema)
@blp.response(200, AllocationSchema)
@require_roles("coordinator")
def cancel(data: dict[str, Any], allocation_id: uuid.UUID) -> Any:
    """Cancel an allocation before it ships; the donor's reservation is released and the
    need goes back to matching."""
    rt = runtime()
    with rt.unit_of_work() as session:
        allocation = _visible_allocation(session, allocation_id)
        if not saga.cancel_allocation(session, rt.outbox, allocation, data["reason"]):
            raise Problem(
                409,
                f"The allocation is {allocation.status}; only proposed or reserved "
                "allocations can be cancelled.",
                slug="allocation-not-cancellable",
                status_now=allocation.status,
            )
        matching_service.request_matching(session, allocation.item)
        session.refresh(allocation)
    return allocation
