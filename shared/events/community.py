"""Payloads of the community service's events. They carry counts and item totals
only: never a household, a resident, a room or a name (README: "Community")."""

from __future__ import annotations

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
