"""The needs API: what recipient organisations lack, posted, changed, reconfirmed and
cancelled by them (coordinators: on anyone's behalf)."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.dispatch.models import Need, NeedLine, Organisation
from services.dispatch.needs import domain, service
from shared import catalog
from shared.catalog.regions import RegionCode
from shared.contacts import contact_of
from shared.display_fields import DISPLAY_PARAMETER, DisplayQuantities
from shared.events.supply import NEED_STATUSES, URGENCIES
from shared.http import etag, require_if_match
from shared.identity import RECIPIENT_KINDS, Identity, current_identity, forbidden, require_roles
from shared.pagination import OrgListArgsSchema, OrgListing, page_schema, paginate
from shared.places import LocationInSchema
from shared.problems import Problem
from shared.web import db_session, retries_on_conflict, runtime

blp = Blueprint(
    "needs",
    __name__,
    url_prefix="/api/v1/needs",
    description="Needs: what hospitals and communities lack",
)

# A GB/T 2260 code of 2, 4 or 6 digits that the region table knows.
REGION = RegionCode()
INACTIVE_ORG_STATUSES = ("suspended", "merged")


# Schemas ---------------------------------------------------------------------------------


class NeedLocationSchema(LocationInSchema):
    """Where the goods go."""


def _amount(description: str, **kwargs: Any) -> fields.Decimal:
    return fields.Decimal(
        as_string=True, allow_nan=False, metadata={"description": description}, **kwargs
    )


class NeedLineInSchema(Schema):
    item = fields.String(required=True, validate=validate.Length(min=1, max=64))
    standards = fields.List(
        fields.String(validate=validate.Length(min=1, max=64)),
        load_default=list,
        validate=validate.Length(max=20),
        metadata={"description": "Acceptable standards; empty means any"},
    )
    quantity = _amount("In `unit`; converted exactly to the item's base unit", required=True)
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
    urgency = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.OneOf(URGENCIES),
        metadata={"description": "Stated urgency; derived from the days of supply left if not"},
    )
    stock_on_hand = _amount("In `unit`: what is left", load_default=None, allow_none=True)
    daily_consumption = _amount("In `unit`: used per day", load_default=None, allow_none=True)
    needed_by = fields.Date(load_default=None, allow_none=True)


class NeedInSchema(Schema):
    lines = fields.List(
        fields.Nested(NeedLineInSchema), required=True, validate=validate.Length(min=1, max=1000)
    )
    location = fields.Nested(NeedLocationSchema, required=True)
    people_served = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(min=0, max=100_000_000)
    )
    beds = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(min=0, max=10_000_000)
    )
    notes = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))
    org_id = fields.UUID(
        load_default=None,
        metadata={"description": "Coordinators only: the recipient organisation in need"},
    )


class NeedLineChangeSchema(Schema):
    id = fields.UUID(metadata={"description": "The line to change; leave out to add a line"})
    item = fields.String(validate=validate.Length(min=1, max=64))
    standards = fields.List(
        fields.String(validate=validate.Length(min=1, max=64)),
        validate=validate.Length(max=20),
        metadata={"description": "Acceptable standards; empty means any"},
    )
    quantity = _amount("In `unit`")
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
    urgency = fields.String(allow_none=True, validate=validate.OneOf(URGENCIES))
    stock_on_hand = _amount("In `unit`", allow_none=True)
    daily_consumption = _amount("In `unit`", allow_none=True)
    needed_by = fields.Date(allow_none=True)


class NeedPatchSchema(Schema):
    lines = fields.List(fields.Nested(NeedLineChangeSchema), validate=validate.Length(max=1000))
    location = fields.Nested(NeedLocationSchema)
    people_served = fields.Integer(allow_none=True, validate=validate.Range(min=0, max=100_000_000))
    beds = fields.Integer(allow_none=True, validate=validate.Range(min=0, max=10_000_000))
    notes = fields.String(allow_none=True, validate=validate.Length(max=2000))


class NeedCancelSchema(Schema):
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class NeedLineSchema(DisplayQuantities, Schema):
    display_fields = (
        "quantity",
        "stock_on_hand",
        "daily_consumption",
        "allocated",
        "in_transit",
        "proposed",
        "reserved",
        "shipped",
        "received",
        "open",
    )

    id = fields.UUID()
    line_no = fields.Integer()
    item = fields.String()
    standards = fields.List(fields.String())
    quantity = fields.Integer(metadata={"description": "In base units"})
    base_unit = fields.Method("_base_unit")
    entered_quantity = fields.String()
    entered_unit = fields.String()
    pack_size = fields.Integer(allow_none=True)
    urgency = fields.String()
    stock_on_hand = fields.Integer(allow_none=True, metadata={"description": "In base units"})
    daily_consumption = fields.Integer(allow_none=True, metadata={"description": "In base units"})
    days_of_supply = fields.Method(
        "_days_of_supply",
        metadata={"description": "Stock on hand / daily consumption, when both are known"},
    )
    needed_by = fields.Date(allow_none=True)
    allocated = fields.Method(
        "_allocated",
        metadata={
            "description": "Everything allocated to the line and not cancelled: proposed, "
            "reserved, shipped (received included)"
        },
    )
    in_transit = fields.Method(
        "_in_transit", metadata={"description": "Shipped and not yet received"}
    )
    proposed = fields.Integer()
    reserved = fields.Integer()
    shipped = fields.Integer()
    received = fields.Integer()
    open = fields.Method(
        "_open", metadata={"description": "Still for matching to find; 0 once closed"}
    )
    status = fields.String()

    def _base_unit(self, line: NeedLine) -> str:
        return catalog.get_item(line.item).base_unit

    def _days_of_supply(self, line: NeedLine) -> float | None:
        days = domain.days_of_supply(line.stock_on_hand, line.daily_consumption)
        return float(days) if days is not None else None

    def _allocated(self, line: NeedLine) -> int:
        return line.proposed + line.reserved + line.shipped

    def _in_transit(self, line: NeedLine) -> int:
        return max(0, line.shipped - line.received)

    def _open(self, line: NeedLine) -> int:
        return domain.open_quantity(service.totals_of(line), line.status)


class NeedSchema(Schema):
    id = fields.UUID()
    org_id = fields.UUID()
    status = fields.String()
    location = fields.Method("_location")
    people_served = fields.Integer(allow_none=True)
    beds = fields.Integer(allow_none=True)
    notes = fields.String(allow_none=True)
    created_by = fields.UUID(allow_none=True)
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    confirmed_at = fields.AwareDateTime()
    expires_at = fields.AwareDateTime()
    reminded_at = fields.AwareDateTime(allow_none=True)
    cancelled_at = fields.AwareDateTime(allow_none=True)
    version = fields.Integer()
    lines = fields.List(fields.Nested(NeedLineSchema))

    def _location(self, need: Need) -> dict[str, Any]:
        return {
            "place_id": need.place_id,
            "address": need.address,
            "contact": contact_of(need.contact_name, need.contact_phone),
            "region": need.region,
            "lat": need.lat,
            "lon": need.lon,
        }


class NeedListArgsSchema(OrgListArgsSchema):
    status = fields.String(validate=validate.OneOf(NEED_STATUSES))
    item = fields.String(validate=validate.Length(max=64))
    urgency = fields.String(validate=validate.OneOf(URGENCIES))
    org_id = fields.UUID(metadata={"description": "Coordinators: one organisation's needs"})
    # At most 50: 50 ids keep a request line under gunicorn's 4 KB limit.
    line_id = fields.List(
        fields.UUID(),
        validate=validate.Length(max=50),
        metadata={"description": "Only the needs holding these lines (repeat it, at most 50)"},
    )


NeedPageSchema = page_schema(NeedSchema, "NeedPageSchema")


# Who may do what ---------------------------------------------------------------------------


def _org_record(session: Session, org_id: uuid.UUID, *, lock: bool = False) -> Organisation | None:
    """The dispatch read model's organisation, locked when asked so a verification
    being applied meanwhile waits (and then finds this transaction's drafts)."""
    return session.get(Organisation, org_id, with_for_update=lock or None)


def _owner_for_post(
    session: Session, identity: Identity, org_id: uuid.UUID | None
) -> tuple[uuid.UUID, bool]:
    """The organisation a new need belongs to, if the caller may post for it, and
    whether that organisation is verified."""
    if identity.is_coordinator:
        if org_id is None:
            raise Problem(
                422,
                "Coordinators post needs on behalf of a recipient organisation: name it.",
                errors={"org_id": ["Required for coordinators."]},
            )
        org = _org_record(session, org_id, lock=True)
        if org is None:
            raise Problem(
                422,
                "The dispatch service does not know this organisation (yet).",
                errors={"org_id": ["No such organisation; if it was just registered, retry."]},
            )
        if org.kind not in RECIPIENT_KINDS:
            raise Problem(
                422,
                "Only recipient organisations have needs.",
                errors={"org_id": [f"A {org.kind} is not a recipient organisation."]},
            )
        if org.status in INACTIVE_ORG_STATUSES:
            raise forbidden(f"The organisation is {org.status}; it cannot post needs.")
        return org.id, org.status == "verified"
    if not identity.has_role("recipient"):
        raise forbidden("Only recipient organisations post needs.")
    if org_id is not None and org_id != identity.org_id:
        raise forbidden("You can post needs only for your own organisation.")
    if not identity.org_active:
        raise forbidden(f"Your organisation is {identity.org_status}; it cannot post needs.")
    assert identity.org_id is not None
    org = _org_record(session, identity.org_id, lock=True)
    if org is not None and org.status in INACTIVE_ORG_STATUSES:
        raise forbidden(f"Your organisation is {org.status}; it cannot post needs.")
    # The read model may lag behind the caller's token, or the token behind it.
    verified = identity.org_status == "verified" or (org is not None and org.status == "verified")
    return identity.org_id, verified


def _may_write(session: Session, need: Need) -> None:
    """Members of a suspended or merged organisation change nothing."""
    identity = current_identity()
    if identity.is_coordinator:
        return
    if not identity.has_role("recipient"):
        raise forbidden("Only recipient organisations change their needs.")
    if not identity.org_active:
        raise forbidden(f"Your organisation is {identity.org_status}; it cannot change needs.")
    org = _org_record(session, need.org_id)
    if org is not None and org.status in INACTIVE_ORG_STATUSES:
        raise forbidden(f"Your organisation is {org.status}; it cannot change needs.")


def load_need(session: Session, need_id: uuid.UUID, *, for_update: bool = False) -> Need:
    """The need, if the caller may see it; someone else's is answered as not found.
    ``for_update``: locked as every writer of dispatch locks a need, its lines first
    (:func:`service.lock_need`)."""
    need = service.lock_need(session, need_id) if for_update else session.get(Need, need_id)
    if need is None or not current_identity().can_act_for(need.org_id):
        raise Problem(404, f"No need {need_id}.", slug="need-not-found")
    return need


def _with_etag(need: Need, status: int = 200) -> tuple[Need, int, dict[str, str]]:
    return need, status, {"ETag": etag(need.version)}


_LISTING = OrgListing(
    model=Need,
    region=Need.region,
    line_parent=NeedLine.need_id,
    line_filters={"item": NeedLine.item, "urgency": NeedLine.urgency},
    owner_role="recipient",
    refusal="Needs are seen by their organisations and by coordinators.",
)


# Endpoints ----------------------------------------------------------------------------------


@blp.route("", parameters=[DISPLAY_PARAMETER])
class Needs(MethodView):
    @blp.arguments(NeedListArgsSchema, location="query")
    @blp.response(200, NeedPageSchema)
    @require_roles()
    def get(self, args: dict[str, Any]) -> Any:
        """Your organisation's needs (coordinators: everyone's), oldest first. ``item``
        and ``urgency`` match needs with such a line."""
        stmt = _LISTING.scoped(select(Need), args)
        if args.get("line_id"):
            stmt = stmt.where(
                Need.id.in_(select(NeedLine.need_id).where(NeedLine.id.in_(args["line_id"])))
            )
        return paginate(db_session(), stmt, Need, cursor=args["cursor"], limit=args["limit"])

    @retries_on_conflict
    @blp.arguments(NeedInSchema)
    @blp.response(201, NeedSchema, headers={"ETag": {"schema": {"type": "string"}}})
    @require_roles()
    def post(self, data: dict[str, Any]) -> Any:
        """Post a need. Quantities, stock and consumption are converted exactly to each
        item's base unit; a line's urgency is derived from its days of supply left
        unless stated. A need of an organisation not yet verified is held in
        ``draft`` until it is, then opens."""
        identity = current_identity()
        rt = runtime()
        with rt.unit_of_work() as session:
            org_id, verified = _owner_for_post(session, identity, data.pop("org_id", None))
            need = service.create_need(
                session,
                rt.outbox,
                org_id=org_id,
                org_verified=verified,
                data=data,
                created_by=identity.user_id,
                ttl=service.NEED_TTL,
            )
        return _with_etag(need, 201)


@blp.route("/<uuid:need_id>", parameters=[DISPLAY_PARAMETER])
class NeedById(MethodView):
    @blp.response(200, NeedSchema, headers={"ETag": {"schema": {"type": "string"}}})
    @require_roles()
    def get(self, need_id: uuid.UUID) -> Any:
        return _with_etag(load_need(db_session(), need_id))

    @retries_on_conflict
    @blp.arguments(NeedPatchSchema)
    @blp.response(200, NeedSchema, headers={"ETag": {"schema": {"type": "string"}}})
    @require_roles()
    def patch(self, data: dict[str, Any], need_id: uuid.UUID) -> Any:
        """Change a need (send If-Match with its ETag). Raise a quantity any time; lower
        it only down to what is allocated or shipped; a line with allocations keeps its
        item and standards. A line without an ``id`` is added."""
        rt = runtime()
        with rt.unit_of_work() as session:
            need = load_need(session, need_id, for_update=True)
            _may_write(session, need)
            require_if_match(need.version)
            service.amend_need(session, rt.outbox, need, data)
        return _with_etag(need)


@blp.route("/<uuid:need_id>/cancel", methods=["POST"], parameters=[DISPLAY_PARAMETER])
@retries_on_conflict
@blp.arguments(NeedCancelSchema, required=False)
@blp.response(200, NeedSchema, headers={"ETag": {"schema": {"type": "string"}}})
@require_roles()
def cancel(data: dict[str, Any], need_id: uuid.UUID) -> Any:
    """Cancel a need: its allocations not yet shipped are cancelled and the donors'
    reservations released; what has shipped is on its way."""
    rt = runtime()
    with rt.unit_of_work() as session:
        need = load_need(session, need_id, for_update=True)
        _may_write(session, need)
        service.cancel_need(session, rt.outbox, need, data.get("reason"))
    return _with_etag(need)


@blp.route("/<uuid:need_id>/reconfirm", methods=["POST"], parameters=[DISPLAY_PARAMETER])
@retries_on_conflict
@blp.response(200, NeedSchema, headers={"ETag": {"schema": {"type": "string"}}})
@require_roles()
def reconfirm(need_id: uuid.UUID) -> Any:
    """Still needed: the need stays in matching for the full period from now (7 days
    unless configured otherwise) and its reminder is due again before then."""
    rt = runtime()
    with rt.unit_of_work() as session:
        need = load_need(session, need_id, for_update=True)
        _may_write(session, need)
        service.reconfirm_need(session, rt.outbox, need, ttl=service.NEED_TTL)
    return _with_etag(need)
