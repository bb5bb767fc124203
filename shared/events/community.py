"""Payloads of the community service's events. They carry counts and item totals
only: never a household, a resident, a room or a name (README: "Community")."""

from __future__ import annotations

import uuid

from marshmallow import Schema, fields, validate

from shared.events.registry import REGISTRY, SUBSCRIBERS


class RequestedLineV1(Schema):
    item = fields.String(required=True, metadata={"description": "A relief catalogue item"})
    quantity = fields.Integer(required=True, validate=validate.Range(min=1))
    unit = fields.String(required=True, metadata={"description": "The item's base unit"})


class NeedRequestedV1(Schema):
    """community.need_requested: a community confirmed its households' orders; dispatch
    posts the part relief supplies carry as the community's need."""

    org_id = fields.UUID(required=True)
    round_id = fields.UUID(required=True)
    title = fields.String(required=True)
    lines = fields.List(fields.Nested(RequestedLineV1), required=True)
    households = fields.Integer(required=True, validate=validate.Range(min=0))
    people_served = fields.Integer(required=True, validate=validate.Range(min=0))


REGISTRY.register("community.need_requested", 1, NeedRequestedV1())
SUBSCRIBERS["community.need_requested"] = ("dispatch",)


class DeliveredUnitsV1(Schema):
    item = fields.String(required=True, metadata={"description": "A relief catalogue item"})
    quantity = fields.Integer(required=True, validate=validate.Range(min=0))
    unit = fields.String(required=True, metadata={"description": "The item's base unit"})


class DeliveredFromShipmentV1(Schema):
    shipment_id = fields.UUID(required=True, metadata={"description": "A dispatch shipment"})
    receipt_id = fields.UUID(required=True, metadata={"description": "Its latest receipt"})
    item = fields.String(required=True)
    quantity = fields.Integer(
        required=True,
        validate=validate.Range(min=0),
        metadata={"description": "Units of the item delivered to households from it"},
    )


class UnitsDistributedV1(Schema):
    """community.units_distributed: what a community's distribution has reached so far,
    as counts. A cumulative snapshot: ``sequence`` grows with every one the community
    sends, and a consumer keeps the highest it has seen, so a copy delivered again or
    late changes nothing. The envelope's aggregate is the community's reach
    (:func:`reach_aggregate_id`), not the organisation, whose own events have their
    own versions.

    Never a household, a room, a person's name, a phone number or a note."""

    org_id = fields.UUID(required=True)
    sequence = fields.Integer(required=True, validate=validate.Range(min=1))
    households_reached = fields.Integer(required=True, validate=validate.Range(min=0))
    people_served = fields.Integer(required=True, validate=validate.Range(min=0))
    vulnerable_households_reached = fields.Integer(required=True, validate=validate.Range(min=0))
    units_delivered = fields.List(
        fields.Nested(DeliveredUnitsV1),
        required=True,
        metadata={"description": "Per relief item, in its base unit, since the first"},
    )
    from_shipments = fields.List(
        fields.Nested(DeliveredFromShipmentV1),
        load_default=list,
        metadata={
            "description": "The units delivered, by the dispatch shipment that brought them. "
            "A community's stock is one pool: units are attributed to the shipments first "
            "received first (first in, first out), as a storeroom hands them out"
        },
    )


class UnitsDistributedV2(UnitsDistributedV1):
    """community.units_distributed version 2: as version 1, except that
    ``from_shipments`` names only the shares this snapshot changed, each as a whole (the
    units delivered from that shipment now), unless ``whole``; a share not named stays
    as the previous snapshot left it. A delivery names the few shipments its units came
    from, rather than every shipment the community ever received. A consumer keeps the
    counts of the newest snapshot and each share from the newest snapshot that named
    it, whatever order they arrive in; a snapshot older than a whole one it took in
    says nothing of the shares."""

    whole = fields.Boolean(
        load_default=False,
        metadata={
            "description": "from_shipments names every share (the first snapshot of a "
            "community, and whenever it sends them all again); the shares it does not "
            "name are none"
        },
    )

    from_shipments = fields.List(
        fields.Nested(DeliveredFromShipmentV1),
        load_default=list,
        metadata={
            "description": "The units delivered by dispatch shipment, for the shipments "
            "whose share this snapshot changed, each share whole. A community's stock is "
            "one pool: units are attributed to the shipments first received first (first "
            "in, first out), as a storeroom hands them out"
        },
    )


def reach_aggregate_id(org_id: uuid.UUID | str) -> uuid.UUID:
    """The aggregate of a community's ``community.units_distributed`` events."""
    return uuid.uuid5(uuid.UUID(str(org_id)), "community.reach")


REGISTRY.register("community.units_distributed", 1, UnitsDistributedV1())
REGISTRY.register("community.units_distributed", 2, UnitsDistributedV2())
SUBSCRIBERS["community.units_distributed"] = ("dispatch",)


class HelpSessionHeldV1(Schema):
    """community.help_session_held: a helper closed a session as held. Ids and counts
    for the public ledger's figures (sessions held, people helped, hours given, by
    week and region); never a name, a topic, a contact or the helper's note.

    The envelope's aggregate is the session, version 1: a session is held once."""

    session_id = fields.UUID(required=True)
    person_key = fields.UUID(
        required=True,
        metadata={
            "description": "An opaque id of the person helped: the first request of the "
            "session's chain of follow-ups, so a person's sessions count as one person"
        },
    )
    region = fields.String(
        required=True,
        validate=validate.Length(min=2, max=12),
        metadata={"description": "The helper organisation's region code, 00 when unknown"},
    )
    week = fields.Date(
        required=True, metadata={"description": "The Monday of the session's week, Beijing time"}
    )
    minutes = fields.Integer(required=True, validate=validate.Range(min=1, max=1440))


REGISTRY.register("community.help_session_held", 1, HelpSessionHeldV1())
SUBSCRIBERS["community.help_session_held"] = ("dispatch",)
