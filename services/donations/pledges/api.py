"""The pledges API: pledges, their amendments and cancellation, and their export."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from contextlib import closing
from typing import Any

from flask import Response, stream_with_context
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, post_dump, validate
from sqlalchemy import select

from services.donations.models import Organisation, Pledge, PledgeLine
from services.donations.pledges import service
from shared import catalog
from shared.catalog import display
from shared.catalog.regions import RegionCode
from shared.contacts import contact_of
from shared.display_fields import DISPLAY_PARAMETER, DisplayQuantities, requested_language
from shared.events.registry import ORGANISATION_KINDS
from shared.events.supply import LINE_STATUSES, PLEDGE_STATUSES
from shared.http import etag, require_if_match
from shared.identity import Identity, current_identity, forbidden, require_roles
from shared.pagination import OrgListArgsSchema, OrgListing, page_schema, paginate
from shared.places import LocationInSchema
from shared.problems import Problem
from shared.web import db_session, retries_on_conflict, runtime

blp = Blueprint("pledges", __name__, url_prefix="/api/v1/pledges", description="Pledges")

# A GB/T 2260 code of 2, 4 or 6 digits that the region table knows.
REGION = RegionCode()


class LocationSchema(LocationInSchema):
    """Where the goods are picked up."""


class RestrictionsSchema(Schema):
    regions = fields.List(fields.String(validate=REGION), load_default=list)
    recipient_kinds = fields.List(
        fields.String(validate=validate.OneOf(ORGANISATION_KINDS)), load_default=list
    )
    note = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=500),
        metadata={"description": 'e.g. "frontline medical staff only"'},
    )


class LineInSchema(Schema):
    item = fields.String(required=True, validate=validate.Length(min=1, max=64))
    standard = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))
    quantity = fields.Decimal(
        required=True,
        as_string=True,
        allow_nan=False,
        metadata={"description": "In `unit`; converted exactly to the item's base unit"},
    )
    unit = fields.String(required=True, validate=validate.Length(min=1, max=16))
    pack_size = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(min=1, max=1_000_000)
    )
    bottle_volume_ml = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(min=1, max=1_000_000)
    )
    density_g_per_l = fields.Integer(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=1, max=100_000),
        metadata={"description": "Grams per litre, for a liquid entered by mass"},
    )
    best_before = fields.Date(load_default=None, allow_none=True)
    restrictions = fields.Nested(RestrictionsSchema, load_default=dict)


class PledgeInSchema(Schema):
    lines = fields.List(
        fields.Nested(LineInSchema), required=True, validate=validate.Length(min=1, max=1000)
    )
    origin = fields.Nested(LocationSchema, required=True)
    available_from = fields.Date(load_default=None, allow_none=True)
    notes = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))
    anonymous = fields.Boolean(
        load_default=False,
        metadata={
            "description": "Individual donors only: appear as 'anonymous' in the public "
            "ledger and to recipients"
        },
    )
    org_id = fields.UUID(
        load_default=None,
        metadata={"description": "Coordinators only: the donor organisation pledging"},
    )


class LineChangeSchema(Schema):
    id = fields.UUID(metadata={"description": "The line to change; leave out to add a line"})
    item = fields.String(validate=validate.Length(min=1, max=64))
    standard = fields.String(allow_none=True, validate=validate.Length(max=64))
    quantity = fields.Decimal(as_string=True, allow_nan=False)
    unit = fields.String(validate=validate.Length(min=1, max=16))
    pack_size = fields.Integer(allow_none=True, validate=validate.Range(min=1, max=1_000_000))
    bottle_volume_ml = fields.Integer(
        allow_none=True, validate=validate.Range(min=1, max=1_000_000)
    )
    density_g_per_l = fields.Integer(
        allow_none=True,
        validate=validate.Range(min=1, max=100_000),
        metadata={"description": "Grams per litre, for a liquid entered by mass"},
    )
    best_before = fields.Date(allow_none=True)
    restrictions = fields.Nested(RestrictionsSchema)


class PledgePatchSchema(Schema):
    lines = fields.List(fields.Nested(LineChangeSchema), validate=validate.Length(max=1000))
    origin = fields.Nested(LocationSchema)
    available_from = fields.Date(allow_none=True)
    notes = fields.String(allow_none=True, validate=validate.Length(max=2000))
    anonymous = fields.Boolean(
        metadata={"description": "Individual donors only: stay unnamed in public"}
    )


class CancelSchema(Schema):
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class LineSchema(DisplayQuantities, Schema):
    display_fields = ("quantity", "reserved", "shipped", "delivered", "available")

    id = fields.UUID()
    line_no = fields.Integer()
    item = fields.String()
    standard = fields.String(allow_none=True)
    quantity = fields.Integer(metadata={"description": "In base units"})
    base_unit = fields.Method("_base_unit")
    entered_quantity = fields.String()
    entered_unit = fields.String()
    pack_size = fields.Integer(allow_none=True)
    best_before = fields.Date(allow_none=True)
    restrictions = fields.Dict()
    reserved = fields.Integer()
    shipped = fields.Integer()
    delivered = fields.Integer()
    available = fields.Method("_available")
    status = fields.String()
    spoils_before_delivery = fields.Boolean(
        dump_default=False,
        metadata={
            "description": f"Its best-before date leaves fewer than "
            f"{service.SPOILS_WITHIN_DAYS} days from when it can leave: it may spoil "
            "before it reaches anyone"
        },
    )

    def _base_unit(self, line: PledgeLine) -> str:
        return catalog.get_item(line.item).base_unit

    def _available(self, line: PledgeLine) -> int:
        from services.donations.pledges import domain

        return domain.available(service.totals_of(line), line.status)


class PledgeSchema(Schema):
    id = fields.UUID()
    org_id = fields.UUID()
    status = fields.String()
    origin = fields.Method("_origin")
    available_from = fields.Date(allow_none=True)
    notes = fields.String(allow_none=True)
    catalog_version = fields.String()
    import_job_id = fields.UUID(allow_none=True)
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    cancelled_at = fields.AwareDateTime(allow_none=True)
    cancel_reason = fields.String(allow_none=True)
    anonymous = fields.Boolean()
    version = fields.Integer()
    lines = fields.List(fields.Nested(LineSchema))

    def _origin(self, pledge: Pledge) -> dict[str, Any]:
        return {
            "place_id": pledge.origin_place_id,
            "address": pledge.origin_address,
            "contact": contact_of(pledge.origin_contact_name, pledge.origin_contact_phone),
            "region": pledge.origin_region,
            "lat": pledge.origin_lat,
            "lon": pledge.origin_lon,
        }

    @post_dump(pass_original=True)
    def _spoiling(self, data: dict[str, Any], pledge: Pledge, **_kw: Any) -> dict[str, Any]:
        """Each open line whose best-before date leaves too little time from when the
        pledge can leave (the line alone does not know when that is)."""
        for dumped, line in zip(data.get("lines") or [], pledge.lines, strict=False):
            dumped["spoils_before_delivery"] = line.status not in (
                "cancelled",
                "expired",
                "delivered",
            ) and service.spoils_before_delivery(line.best_before, pledge.available_from)
        return data


class PledgeListArgsSchema(OrgListArgsSchema):
    status = fields.String(validate=validate.OneOf(PLEDGE_STATUSES))
    item = fields.String(validate=validate.Length(max=64))
    line_status = fields.String(validate=validate.OneOf(LINE_STATUSES))
    org_id = fields.UUID(metadata={"description": "Coordinators: one donor's pledges"})


PledgePageSchema = page_schema(PledgeSchema, "PledgePageSchema")


def _may_pledge(identity: Identity, org_id: uuid.UUID | None) -> uuid.UUID:
    """The organisation a new pledge belongs to, if the caller may pledge for it."""
    if identity.is_coordinator:
        if org_id is None:
            raise Problem(
                422,
                "Coordinators pledge on behalf of a donor: name it.",
                errors={"org_id": ["Required for coordinators."]},
            )
        return org_id
    if not identity.has_role("donor"):
        raise forbidden("Only donor organisations pledge supplies.")
    if org_id is not None and org_id != identity.org_id:
        raise forbidden("You can pledge only for your own organisation.")
    if not identity.org_active:
        raise forbidden(f"Your organisation is {identity.org_status}; it cannot pledge.")
    assert identity.org_id is not None
    return identity.org_id


def _may_stay_anonymous(session: Any, identity: Identity, org_id: uuid.UUID) -> None:
    """Only a person giving in their own name may stay unnamed: organisations that
    collect public donations are accountable by name."""
    kind = identity.org_kind if identity.org_id == org_id else None
    if kind is None:
        org = session.get(Organisation, org_id)
        kind = org.kind if org is not None else None
    if kind != "individual":
        raise Problem(
            422,
            "Only individual donors may stay anonymous.",
            errors={"anonymous": [f"A {kind or 'organisation'} is named in the public ledger."]},
        )


def load_pledge(session: Any, pledge_id: uuid.UUID, *, for_update: bool = False) -> Pledge:
    """The pledge, if the caller may see it; someone else's is answered as not found."""
    pledge = session.get(Pledge, pledge_id, with_for_update=for_update or None)
    identity = current_identity()
    if pledge is None or not identity.can_act_for(pledge.org_id):
        raise Problem(404, f"No pledge {pledge_id}.", slug="pledge-not-found")
    return pledge


def _with_etag(pledge: Pledge) -> tuple[Pledge, int, dict[str, str]]:
    return pledge, 200, {"ETag": etag(pledge.version)}


_LISTING = OrgListing(
    model=Pledge,
    region=Pledge.origin_region,
    line_parent=PledgeLine.pledge_id,
    line_filters={"item": PledgeLine.item, "line_status": PledgeLine.status},
    owner_role="donor",
    refusal="Pledges are seen by their donors and by coordinators.",
)


@blp.route("", parameters=[DISPLAY_PARAMETER])
class Pledges(MethodView):
    @blp.arguments(PledgeListArgsSchema, location="query")
    @blp.response(200, PledgePageSchema)
    @require_roles()
    def get(self, args: dict[str, Any]) -> Any:
        """Your organisation's pledges (coordinators: everyone's), newest last."""
        stmt = _LISTING.scoped(select(Pledge), args)
        return paginate(db_session(), stmt, Pledge, cursor=args["cursor"], limit=args["limit"])

    @retries_on_conflict
    @blp.arguments(PledgeInSchema)
    @blp.response(201, PledgeSchema, headers={"ETag": {"schema": {"type": "string"}}})
    @require_roles()
    def post(self, data: dict[str, Any]) -> Any:
        """Pledge supplies. Quantities are converted exactly to each item's base unit; a
        pledge from an organisation not yet verified is kept but not reserved."""
        identity = current_identity()
        org_id = _may_pledge(identity, data.pop("org_id", None))
        rt = runtime()
        with rt.unit_of_work() as session:
            if data.get("anonymous"):
                _may_stay_anonymous(session, identity, org_id)
            pledge = service.create_pledge(
                session, rt.outbox, org_id=org_id, data=data, created_by=identity.user_id
            )
        return pledge, 201, {"ETag": etag(pledge.version)}


@blp.route("/<uuid:pledge_id>", parameters=[DISPLAY_PARAMETER])
class PledgeById(MethodView):
    @blp.response(200, PledgeSchema)
    @require_roles()
    def get(self, pledge_id: uuid.UUID) -> Any:
        return _with_etag(load_pledge(db_session(), pledge_id))

    @retries_on_conflict
    @blp.arguments(PledgePatchSchema)
    @blp.response(200, PledgeSchema)
    @require_roles()
    def patch(self, data: dict[str, Any], pledge_id: uuid.UUID) -> Any:
        """Change a pledge (send If-Match with its ETag). Raise a quantity any time; lower
        it only down to what is reserved or shipped; a line with reservations keeps its
        item and standard. A line without an ``id`` is added."""
        rt = runtime()
        with rt.unit_of_work() as session:
            pledge = load_pledge(session, pledge_id, for_update=True)
            require_if_match(pledge.version)
            if data.get("anonymous"):
                _may_stay_anonymous(session, current_identity(), pledge.org_id)
            service.amend_pledge(session, rt.outbox, pledge, data)
        return _with_etag(pledge)


@blp.route("/<uuid:pledge_id>/cancel", methods=["POST"], parameters=[DISPLAY_PARAMETER])
@retries_on_conflict
@blp.arguments(CancelSchema, required=False)
@blp.response(200, PledgeSchema)
@require_roles()
def cancel(data: dict[str, Any], pledge_id: uuid.UUID) -> Any:
    """Cancel a pledge: what is not yet shipped is released back to nobody and the
    allocations it held are cancelled."""
    rt = runtime()
    with rt.unit_of_work() as session:
        pledge = load_pledge(session, pledge_id, for_update=True)
        service.cancel_pledge(session, rt.outbox, pledge, data.get("reason"))
    return _with_etag(pledge)


EXPORT_COLUMNS = (
    "pledge_id",
    "org_id",
    "pledge_status",
    "created_at",
    "origin_region",
    "line_no",
    "line_id",
    "item",
    "standard",
    "quantity",
    "base_unit",
    "reserved",
    "shipped",
    "delivered",
    "line_status",
    "best_before",
)
EXPORT_FIGURES = ("quantity", "reserved", "shipped", "delivered")


@blp.route("/export.csv", methods=["GET"], parameters=[DISPLAY_PARAMETER])
@blp.arguments(PledgeListArgsSchema, location="query")
@blp.response(200, content_type="text/csv")
@require_roles()
def export_csv(args: dict[str, Any]) -> Any:
    """Your pledges (coordinators: all) as CSV, one row per line, filters as the list."""
    stmt = _LISTING.scoped(select(Pledge), args).order_by(Pledge.created_at, Pledge.id)
    session = db_session()
    # With ?display=true each figure also as people read it, after the exact ones.
    language = requested_language()
    shown = EXPORT_FIGURES if language else ()

    def rows() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([*EXPORT_COLUMNS, *(f"{figure}_display" for figure in shown)])
        # Closed however the reading ends: a client that goes away mid-download leaves
        # no server-side cursor open behind it.
        with closing(session.scalars(stmt.execution_options(yield_per=200))) as pledges:
            for pledge in pledges:
                for line in pledge.lines:
                    unit = catalog.get_item(line.item).base_unit
                    writer.writerow(
                        [
                            pledge.id,
                            pledge.org_id,
                            pledge.status,
                            pledge.created_at.isoformat(),
                            pledge.origin_region,
                            line.line_no,
                            line.id,
                            line.item,
                            line.standard or "",
                            line.quantity,
                            unit,
                            line.reserved,
                            line.shipped,
                            line.delivered,
                            line.status,
                            line.best_before.isoformat() if line.best_before else "",
                            *(
                                display.quantity(getattr(line, figure), unit, language or "en")
                                for figure in shown
                            ),
                        ]
                    )
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        if buffer.getvalue():
            yield buffer.getvalue()

    return Response(
        stream_with_context(rows()),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="pledges.csv"'},
    )
