"""The matching and allocations API of the dispatch service."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from services.dispatch.matching import service as matching_service
from services.dispatch.models import MatchingRun, NeedLine
from shared.display_fields import DISPLAY_PARAMETER, requested_language, with_display
from shared.identity import current_identity, require_roles
from shared.pagination import ListArgsSchema, page_schema, paginate
from shared.problems import Problem
from shared.web import db_session, runtime

blp = Blueprint("matching", __name__, url_prefix="/api/v1/matching", description="Matching runs")

# "empty": a run of events or the schedule that found nothing to do (no preview).
RUN_STATUSES = ("preview", "applied", "superseded", "failed", "empty")


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
    allocations = fields.Method(
        "_allocations",
        metadata={
            "description": "Each with pledge_line_id, need_line_id, item, standard, quantity "
            "(base units) and reason; with ?display=true also display, the quantity as people "
            "read it, in the language of Accept-Language"
        },
    )
    unmet = fields.Method(
        "_unmet",
        metadata={
            "description": "Each need line not fully met: need_line_id and quantity (base "
            "units) still missing; with ?display=true also display, the quantity as people "
            "read it in the need line's item, in the language of Accept-Language"
        },
    )
    stats = fields.Dict()
    created_by = fields.UUID(allow_none=True)
    approved_by = fields.UUID(allow_none=True)
    created_at = fields.AwareDateTime()
    approved_at = fields.AwareDateTime(allow_none=True)

    def _allocations(self, run: MatchingRun) -> list[dict[str, Any]]:
        return [with_display(a, ("quantity",)) for a in run.plan.get("allocations", [])]

    def _unmet(self, run: MatchingRun) -> list[dict[str, Any]]:
        unmet = list(run.plan.get("unmet", []))
        if requested_language() is None or not unmet:
            return unmet
        ids = {uuid.UUID(str(u["need_line_id"])) for u in unmet}
        items = {
            str(line_id): item
            for line_id, item in db_session().execute(
                select(NeedLine.id, NeedLine.item).where(NeedLine.id.in_(ids))
            )
        }
        return [with_display(u, ("quantity",), items.get(str(u["need_line_id"]))) for u in unmet]


class RunListArgsSchema(ListArgsSchema):
    status = fields.String(validate=validate.OneOf(RUN_STATUSES))
    newest_first = fields.Boolean(
        load_default=False,
        metadata={"description": "The newest runs first (next_cursor then pages to older ones)"},
    )


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


RunPageSchema = page_schema(RunSchema, "MatchingRunPageSchema")


@blp.route("/runs", parameters=[DISPLAY_PARAMETER])
class Runs(MethodView):
    @blp.arguments(RunListArgsSchema, location="query")
    @blp.response(200, RunPageSchema)
    @require_roles("coordinator")
    def get(self, args: dict[str, Any]) -> Any:
        stmt = select(MatchingRun)
        if args.get("status"):
            stmt = stmt.where(MatchingRun.status == args["status"])
        return paginate(
            db_session(),
            stmt,
            MatchingRun,
            cursor=args["cursor"],
            limit=args["limit"],
            newest_first=args["newest_first"],
        )

    @blp.arguments(RunInSchema, required=False)
    @blp.response(201, RunSchema)
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


@blp.route("/runs/<uuid:run_id>", parameters=[DISPLAY_PARAMETER])
class RunById(MethodView):
    @blp.response(200, RunSchema)
    @require_roles("coordinator")
    def get(self, run_id: uuid.UUID) -> Any:
        found = db_session().get(MatchingRun, run_id)
        if found is None:
            raise Problem(404, f"No matching run {run_id}.", slug="matching-run-not-found")
        return found


@blp.route("/runs/<uuid:run_id>/approve", methods=["POST"], parameters=[DISPLAY_PARAMETER])
@blp.response(200, RunSchema)
@require_roles("coordinator")
def approve(run_id: uuid.UUID) -> Any:
    """Approve a preview: its allocations are proposed to the donors' pledges."""
    return matching_service.approve(runtime(), run_id, current_identity().user_id)


@blp.route("/runs/<uuid:run_id>/edits", methods=["POST"], parameters=[DISPLAY_PARAMETER])
@blp.arguments(EditSchema)
@blp.response(200, RunSchema)
@require_roles("coordinator")
def edit(data: dict[str, Any], run_id: uuid.UUID) -> Any:
    """Edit a preview before approving it: change an allocation's quantity, remove it
    (quantity 0) or add one by hand. The edited plan keeps every hard rule (same item,
    an accepted standard, the donor's restrictions, perishables in time, supply and
    demand quantities), or the request is refused with each broken rule named and
    nothing changes."""
    return matching_service.edit(runtime(), run_id, data["changes"], current_identity().user_id)
