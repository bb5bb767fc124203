"""Payloads of the supply events: pledges, the allocation saga and shipments.

The gateway hears pledge and reservation events too, to deliver them to webhooks.

Pledge events carry the whole pledge, so a consumer that missed one is made whole by
the next, and one that receives an older one after a newer (by ``aggregate_version``)
rightly ignores it. Reservation events are about one allocation (their aggregate);
they also carry the pledge line's totals at ``pledge_version``, so the dispatch
service's view of available supply can follow them in order of that version.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from shared.events.registry import ORGANISATION_KINDS, REGISTRY, SUBSCRIBERS

LINE_STATUSES = (
    "available",
    "partially_reserved",
    "reserved",
    "partially_shipped",
    "shipped",
    "partially_delivered",
    "delivered",
    "cancelled",
    "expired",
)
PLEDGE_STATUSES = ("open", "cancelled", "closed")


class ContactV1(Schema):
    name = fields.String(load_default=None, allow_none=True)
    phone = fields.String(load_default=None, allow_none=True)


class LocationV1(Schema):
    # The named place it is (shared.places), when one was named.
    place_id = fields.UUID(load_default=None, allow_none=True)
    address = fields.String(load_default=None, allow_none=True)
    # Whom the driver calls there (a person's data: see the README's model).
    contact = fields.Nested(ContactV1, load_default=None, allow_none=True)
    region = fields.String(required=True, validate=validate.Regexp(r"^\d{2}(\d{2}){0,2}$"))
    lat = fields.Float(load_default=None, allow_none=True, validate=validate.Range(-90, 90))
    lon = fields.Float(load_default=None, allow_none=True, validate=validate.Range(-180, 180))


PLACE_KINDS = ("warehouse", "loading_bay", "collection_point", "office", "other")


class PlaceSavedV1(Schema):
    """place.saved: an organisation's named place as it now is (shared.places)."""

    id = fields.UUID(required=True)
    org_id = fields.UUID(required=True)
    name = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(PLACE_KINDS))
    address = fields.String(required=True)
    region = fields.String(required=True, validate=validate.Regexp(r"^\d{2}(\d{2}){0,2}$"))
    lat = fields.Float(load_default=None, allow_none=True, validate=validate.Range(-90, 90))
    lon = fields.Float(load_default=None, allow_none=True, validate=validate.Range(-180, 180))
    # Whom the driver calls there (a person's data: see the README's model).
    contact = fields.Nested(ContactV1, load_default=None, allow_none=True)
    opening_hours = fields.String(load_default=None, allow_none=True)
    access_notes = fields.String(load_default=None, allow_none=True)
    archived = fields.Boolean(load_default=False)


class RestrictionsV1(Schema):
    regions = fields.List(fields.String(), load_default=list)
    recipient_kinds = fields.List(
        fields.String(validate=validate.OneOf(ORGANISATION_KINDS)), load_default=list
    )
    note = fields.String(load_default=None, allow_none=True)


class LineTotalsV1(Schema):
    id = fields.UUID(required=True)
    quantity = fields.Integer(required=True, validate=validate.Range(min=1))
    reserved = fields.Integer(required=True, validate=validate.Range(min=0))
    shipped = fields.Integer(required=True, validate=validate.Range(min=0))
    delivered = fields.Integer(required=True, validate=validate.Range(min=0))
    status = fields.String(required=True, validate=validate.OneOf(LINE_STATUSES))


class PledgeLineV1(LineTotalsV1):
    line_no = fields.Integer(required=True)
    item = fields.String(required=True)
    standard = fields.String(load_default=None, allow_none=True)
    best_before = fields.Date(load_default=None, allow_none=True)
    restrictions = fields.Nested(RestrictionsV1, required=True)
    # How the donor packed it (absent in events from before they were carried): a box
    # or case of ``pack_size`` base units, for the waybill.
    entered_unit = fields.String(load_default=None, allow_none=True)
    pack_size = fields.Integer(load_default=None, allow_none=True)


class PledgeV1(Schema):
    """pledge.created, pledge.amended and pledge.cancelled: the pledge as it now is."""

    id = fields.UUID(required=True)
    org_id = fields.UUID(required=True)
    status = fields.String(required=True, validate=validate.OneOf(PLEDGE_STATUSES))
    origin = fields.Nested(LocationV1, required=True)
    available_from = fields.Date(load_default=None, allow_none=True)
    catalog_version = fields.String(required=True)
    lines = fields.List(fields.Nested(PledgeLineV1), required=True)
    reason = fields.String(load_default=None, allow_none=True)
    # The donor asked not to be named publicly; absent in events from before it existed.
    anonymous = fields.Boolean(load_default=False)


class AllocationProposedV1(Schema):
    allocation_id = fields.UUID(required=True)
    pledge_id = fields.UUID(required=True)
    pledge_line_id = fields.UUID(required=True)
    need_id = fields.UUID(required=True)
    need_line_id = fields.UUID(required=True)
    recipient_org_id = fields.UUID(required=True)
    quantity = fields.Integer(required=True, validate=validate.Range(min=1))
    # When the reservation lapses if nothing has shipped; the donations service's
    # default applies when absent.
    deadline = fields.AwareDateTime(load_default=None, allow_none=True)


# The allocations one ``allocation.proposed`` (version 2) carries at most.
PROPOSALS_PER_EVENT = 500


class AllocationProposedV2(Schema):
    """allocation.proposed from version 2: allocations one change proposed together,
    up to ``PROPOSALS_PER_EVENT`` an event, each as version 1 carried one. A matching
    run proposes tens of thousands at once: one event, outbox row, message and inbox
    row each would cost more than the proposals themselves.

    The event is an aggregate of its own (its ``aggregate_id`` names no allocation):
    a consumer that keeps each allocation's events in order checks each allocation's
    own version (an ``allocation.cancelled``, an allocation's second event, may have
    come first), as the inbox checks a version 1 event's."""

    allocations = fields.List(
        fields.Nested(AllocationProposedV1),
        required=True,
        validate=validate.Length(min=1, max=PROPOSALS_PER_EVENT),
    )


class AllocationCancelledV1(Schema):
    allocation_id = fields.UUID(required=True)
    pledge_line_id = fields.UUID(required=True)
    reason = fields.String(required=True)


class ReservationV1(Schema):
    """reservation.accepted, reservation.rejected and reservation.released."""

    allocation_id = fields.UUID(required=True)
    reservation_id = fields.UUID(load_default=None, allow_none=True)
    pledge_id = fields.UUID(load_default=None, allow_none=True)
    pledge_line_id = fields.UUID(required=True)
    donor_org_id = fields.UUID(load_default=None, allow_none=True)
    # The donor asked not to be named: parties other than the donor and coordinators
    # hear of it without the donor's id or its pledge's.
    donor_anonymous = fields.Boolean(load_default=False)
    recipient_org_id = fields.UUID(load_default=None, allow_none=True)
    quantity = fields.Integer(required=True, validate=validate.Range(min=0))
    # What the line could still give when the reservation was decided.
    available = fields.Integer(required=True, validate=validate.Range(min=0))
    reason = fields.String(load_default=None, allow_none=True)
    line = fields.Nested(LineTotalsV1, load_default=None, allow_none=True)
    pledge_version = fields.Integer(load_default=None, allow_none=True)


# The shipment lifecycle (DESIGN.md, Lifecycles): movement in order, then exceptions.
SHIPMENT_MOVEMENT_STATUSES = (
    "planned",
    "ready_for_pickup",
    "picked_up",
    "in_transit",
    "out_for_delivery",
    "delivered",
    "received",
)
SHIPMENT_EXCEPTION_STATUSES = ("held", "delayed", "damaged", "lost", "returned", "cancelled")
SHIPMENT_STATUSES = SHIPMENT_MOVEMENT_STATUSES + SHIPMENT_EXCEPTION_STATUSES
# Nothing follows these.
SHIPMENT_FINAL_STATUSES = frozenset({"received", "lost", "returned", "cancelled"})


class ShipmentLineV1(Schema):
    allocation_id = fields.UUID(required=True)
    pledge_line_id = fields.UUID(required=True)
    quantity = fields.Integer(required=True, validate=validate.Range(min=1))


class ShipmentV1(Schema):
    """shipment.created and shipment.status_changed. The organisations are there for
    webhooks: the donor, the recipient and the logistics company each hear of it."""

    shipment_id = fields.UUID(required=True)
    status = fields.String(required=True, validate=validate.OneOf(SHIPMENT_STATUSES))
    previous_status = fields.String(
        load_default=None, allow_none=True, validate=validate.OneOf(SHIPMENT_STATUSES)
    )
    occurred_at = fields.AwareDateTime(required=True)
    lines = fields.List(fields.Nested(ShipmentLineV1), required=True)
    location = fields.String(load_default=None, allow_none=True)
    donor_org_id = fields.UUID(load_default=None, allow_none=True)
    # The donor asked not to be named: parties other than the donor and coordinators
    # hear of it without the donor's id or its pledge's.
    donor_anonymous = fields.Boolean(load_default=False)
    recipient_org_id = fields.UUID(load_default=None, allow_none=True)
    logistics_org_id = fields.UUID(load_default=None, allow_none=True)


class ShipmentOverdueV1(Schema):
    """shipment.overdue: no update for too long, or past its ETA and not delivered."""

    shipment_id = fields.UUID(required=True)
    status = fields.String(required=True)
    reason = fields.String(required=True)
    overdue_at = fields.AwareDateTime(required=True)
    last_event_at = fields.AwareDateTime(required=True)
    eta = fields.AwareDateTime(load_default=None, allow_none=True)
    tracking_ref = fields.String(load_default=None, allow_none=True)
    donor_org_id = fields.UUID(load_default=None, allow_none=True)
    # The donor asked not to be named: parties other than the donor and coordinators
    # hear of it without the donor's id or its pledge's.
    donor_anonymous = fields.Boolean(load_default=False)
    recipient_org_id = fields.UUID(load_default=None, allow_none=True)
    logistics_org_id = fields.UUID(load_default=None, allow_none=True)


class ReceiptLineV1(Schema):
    shipment_line_id = fields.UUID(required=True)
    allocation_id = fields.UUID(required=True)
    pledge_line_id = fields.UUID(required=True)
    need_line_id = fields.UUID(required=True)
    item = fields.String(required=True)
    quantity = fields.Integer(required=True, validate=validate.Range(min=1))
    accepted = fields.Integer(required=True, validate=validate.Range(min=0))
    damaged = fields.Integer(required=True, validate=validate.Range(min=0))
    short = fields.Integer(required=True, validate=validate.Range(min=0))


class ReceiptConfirmedV1(Schema):
    """receipt.confirmed: what the recipient found in a shipment, line by line. A
    correction (``sequence`` > 1, ``corrects`` the receipt it replaces) carries the
    full new figures, not the difference."""

    receipt_id = fields.UUID(required=True)
    shipment_id = fields.UUID(required=True)
    sequence = fields.Integer(required=True, validate=validate.Range(min=1))
    corrects = fields.UUID(load_default=None, allow_none=True)
    recipient_org_id = fields.UUID(required=True)
    donor_org_id = fields.UUID(load_default=None, allow_none=True)
    # The donor asked not to be named: parties other than the donor and coordinators
    # hear of it without the donor's id or its pledge's.
    donor_anonymous = fields.Boolean(load_default=False)
    confirmed_at = fields.AwareDateTime(required=True)
    lines = fields.List(fields.Nested(ReceiptLineV1), required=True)


NEED_STATUSES = (
    "draft",
    "open",
    "partially_allocated",
    "allocated",
    "fulfilled",
    "expired",
    "cancelled",
)
URGENCIES = ("critical", "high", "normal")


class NeedLineV1(Schema):
    id = fields.UUID(required=True)
    line_no = fields.Integer(required=True)
    item = fields.String(required=True)
    standards = fields.List(fields.String(), required=True)
    quantity = fields.Integer(required=True, validate=validate.Range(min=1))
    urgency = fields.String(required=True, validate=validate.OneOf(URGENCIES))
    needed_by = fields.Date(load_default=None, allow_none=True)
    proposed = fields.Integer(required=True)
    reserved = fields.Integer(required=True)
    shipped = fields.Integer(required=True)
    received = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(NEED_STATUSES))


class NeedV1(Schema):
    """need.posted, need.updated, need.expired, need.fulfilled, need.cancelled and
    need.reconfirm_due: the need as it now is."""

    id = fields.UUID(required=True)
    org_id = fields.UUID(required=True)
    status = fields.String(required=True, validate=validate.OneOf(NEED_STATUSES))
    location = fields.Nested(LocationV1, required=True)
    expires_at = fields.AwareDateTime(required=True)
    lines = fields.List(fields.Nested(NeedLineV1), required=True)
    reason = fields.String(load_default=None, allow_none=True)


NEED_EVENT_TYPES = (
    "need.posted",
    "need.updated",
    "need.expired",
    "need.fulfilled",
    "need.cancelled",
    "need.reconfirm_due",
)
for _type in NEED_EVENT_TYPES:
    REGISTRY.register(_type, 1, NeedV1())
    # Only the gateway listens (webhooks, the recipient's reminders).
    SUBSCRIBERS[_type] = ("gateway",)

for _type in ("pledge.created", "pledge.amended", "pledge.cancelled"):
    REGISTRY.register(_type, 1, PledgeV1())
    SUBSCRIBERS[_type] = ("dispatch", "gateway")
REGISTRY.register("place.saved", 1, PlaceSavedV1())
SUBSCRIBERS["place.saved"] = ("donations", "dispatch")
REGISTRY.register("allocation.proposed", 1, AllocationProposedV1())
REGISTRY.register("allocation.proposed", 2, AllocationProposedV2(), carries="allocations")
REGISTRY.register("allocation.cancelled", 1, AllocationCancelledV1())
SUBSCRIBERS["allocation.proposed"] = ("donations",)
SUBSCRIBERS["allocation.cancelled"] = ("donations",)
for _type in ("reservation.accepted", "reservation.rejected", "reservation.released"):
    REGISTRY.register(_type, 1, ReservationV1())
    SUBSCRIBERS[_type] = ("dispatch", "gateway")
# Donations moves pledge lines along; the gateway delivers webhooks.
for _type in ("shipment.created", "shipment.status_changed"):
    REGISTRY.register(_type, 1, ShipmentV1())
    SUBSCRIBERS[_type] = ("donations", "gateway")
REGISTRY.register("shipment.overdue", 1, ShipmentOverdueV1())
SUBSCRIBERS["shipment.overdue"] = ("gateway",)
REGISTRY.register("receipt.confirmed", 1, ReceiptConfirmedV1())
# Donations closes its reservations; the gateway tells the donor's and recipient's webhooks.
SUBSCRIBERS["receipt.confirmed"] = ("donations", "gateway", "community")
