"""The matching and allocations API of the dispatch service."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from services.dispatch.allocations import service as saga
from services.dispatch.allocations.service import ALLOCATION_STATUSES
from services.dispatch.matching import service as matching_service
from services.dispatch.models import Allocation, MatchingRun
from shared.identity import current_identity, forbidden, require_roles
from shared.pagination import ListArgsSchema, page_schema, paginate
from shared.problems import Problem
from shared.web import db_session, runtime

matching_blp = Blueprint(
    "matching", __name__, url_prefix="/api/v1/matching", description="Matching runs"
)
allocations_blp = Blueprint(
    "allocations", __name__, url_prefix="/api/v1/allocations", description="Allocations"
)

RUN_STATUSES = ("preview", "applied", "superseded", "failed")


class RunInSchema(Schema):
    dry_run = fields.Boolean(
        load_default=True,
        metadata={"description": "true: a preview to approve; false: apply at once"},
    )
    items = fields.List(
        fields.String(validate=validate.Length(min=1, max=64)),
        load_default=None,
        validate=validate.Length(min=1, max=100),
        metadata={"description": "Items to match; all items when left out"},
    )


class RunSchema(Schema):
    id = fields.UUID()
    status = fields.String(metadata={"description": "preview, applied or superseded"})
    dry_run = fields.Boolean()
    trigger = fields.String()
    items = fields.List(fields.String())
    allocations = fields.Method("_allocations")
    unmet = fields.Method("_unmet")
    stats = fields.Dict()
    created_by = fields.UUID(allow_none=True)
    approved_by = fields.UUID(allow_none=True)
    created_at = fields.AwareDateTime()
    approved_at = fields.AwareDateTime(allow_none=True)

    def _allocations(self, run: MatchingRun) -> list[dict[str, Any]]:
        return list(run.plan.get("allocations", []))

    def _unmet(self, run: MatchingRun) -> list[dict[str, Any]]:
        return list(run.plan.get("unmet", []))


class RunListArgsSchema(ListArgsSchema):
    status = fields.String(validate=validate.OneOf(RUN_STATUSES))


class AllocationSchema(Schema):
    id = fields.UUID()
    status = fields.String()
    quantity = fields.Integer()
    item = fields.String()
    pledge_id = fields.UUID()
    pledge_line_id = fields.UUID()
    donor_org_id = fields.UUID()
    need_id = fields.UUID()
    need_line_id = fields.UUID()
    recipient_org_id = fields.UUID()
    run_id = fields.UUID(allow_none=True)
    reason = fields.Dict()
    status_reason = fields.String(allow_none=True)
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()


class AllocationArgsSchema(ListArgsSchema):
    need_id = fields.UUID()
    pledge_id = fields.UUID()
    need_line_id = fields.UUID()
    pledge_line_id = fields.UUID()
    run_id = fields.UUID()
    status = fields.String(validate=validate.OneOf(ALLOCATION_STATUSES))
    item = fields.String(validate=validate.Length(max=64))


class ChangeSchema(Schema):
    pledge_line_id = fields.UUID(required=True)
    need_line_id = fields.UUID(required=True)
    quantity = fields.Integer(
        required=True,
        validate=validate.Range(min=0),
        metadata={"description": "the allocation's new quantity; 0 removes it"},
    )


class EditSchema(Schema):
    changes = fields.List(
        fields.Nested(ChangeSchema), required=True, validate=validate.Length(min=1, max=1000)
    )


class CancelSchema(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=3, max=200))


RunPageSchema = page_schema(RunSchema, "MatchingRunPageSchema")
AllocationPageSchema = page_schema(AllocationSchema, "AllocationPageSchema")


@matching_blp.route("/runs")
class Runs(MethodView):
    @matching_blp.arguments(RunListArgsSchema, location="query")
    @matching_blp.response(200, RunPageSchema)
    @require_roles("coordinator")
    def get(self, args: dict[str, Any]) -> Any:
        stmt = select(MatchingRun)
        if args.get("status"):
            stmt = stmt.where(MatchingRun.status == args["status"])
        return paginate(db_session(), stmt, MatchingRun, cursor=args["cursor"], limit=args["limit"])

    @matching_blp.arguments(RunInSchema)
    @matching_blp.response(201, RunSchema)
    @require_roles("coordinator")
    def post(self, data: dict[str, Any]) -> Any:
        """Match supply to verified, open needs: a preview (``dry_run``, the default) to
        inspect and approve, or applied at once. Each allocation says why it was chosen;
        ``unmet`` is what no supply could cover."""
        done = matching_service.run(
            runtime(),
            items=data.get("items"),
            dry_run=data["dry_run"],
            trigger="manual",
            created_by=current_identity().user_id,
        )
        assert done is not None
        return done


@matching_blp.route("/runs/<uuid:run_id>")
class RunById(MethodView):
    @matching_blp.response(200, RunSchema)
    @require_roles("coordinator")
    def get(self, run_id: uuid.UUID) -> Any:
        found = db_session().get(MatchingRun, run_id)
        if found is None:
            raise Problem(404, f"No matching run {run_id}.", slug="matching-run-not-found")
        return found


@matching_blp.route("/runs/<uuid:run_id>/approve", methods=["POST"])
@matching_blp.response(200, RunSchema)
@require_roles("coordinator")
def approve(run_id: uuid.UUID) -> Any:
    """Approve a preview: its allocations are proposed to the donors' pledges."""
    return matching_service.approve(runtime(), run_id, current_identity().user_id)


@matching_blp.route("/runs/<uuid:run_id>/edits", methods=["POST"])
@matching_blp.arguments(EditSchema)
@matching_blp.response(200, RunSchema)
@require_roles("coordinator")
def edit(data: dict[str, Any], run_id: uuid.UUID) -> Any:
    """Edit a preview before approving it: change an allocation's quantity, remove it
    (quantity 0) or add one by hand. The edited plan keeps every hard rule (same item,
    an accepted standard, the donor's restrictions, perishables in time, supply and
    demand quantities), or the request is refused with each broken rule named and
    nothing changes."""
    return matching_service.edit(runtime(), run_id, data["changes"], current_identity().user_id)


def _scoped_allocations(stmt: Any) -> Any:
    identity = current_identity()
    if identity.is_coordinator:
        return stmt
    if identity.has_role("recipient"):
        return stmt.where(Allocation.recipient_org_id == identity.org_id)
    if identity.has_role("donor"):
        return stmt.where(Allocation.donor_org_id == identity.org_id)
    raise forbidden("Allocations are seen by their donors, recipients and coordinators.")


@allocations_blp.route("")
class Allocations(MethodView):
    @allocations_blp.arguments(AllocationArgsSchema, location="query")
    @allocations_blp.response(200, AllocationPageSchema)
    @require_roles()
    def get(self, args: dict[str, Any]) -> Any:
        """Allocations of your needs or pledges (coordinators: all), with filters."""
        stmt = _scoped_allocations(select(Allocation))
        for name in ("need_id", "pledge_id", "need_line_id", "pledge_line_id", "run_id"):
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


@allocations_blp.route("/<uuid:allocation_id>")
class AllocationById(MethodView):
    @allocations_blp.response(200, AllocationSchema)
    @require_roles()
    def get(self, allocation_id: uuid.UUID) -> Any:
        return _visible_allocation(db_session(), allocation_id)


@allocations_blp.route("/<uuid:allocation_id>/cancel", methods=["POST"])
@allocations_blp.arguments(CancelSchema)
@allocations_blp.response(200, AllocationSchema)
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
