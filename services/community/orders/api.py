"""The orders API: rounds of household orders, a building's batch (rows or a pasted
table), the totals per building and for the community, and the committee's
confirmation, which asks relief supplies for what they carry."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate, validates_schema
from marshmallow.exceptions import ValidationError

from services.community.orders import service
from services.community.residents.api import standing
from shared.catalog.community import COMMUNITY_CATALOG_VERSION, COMMUNITY_ITEMS
from shared.identity import require_login
from shared.web import db_session, runtime

blp = Blueprint(
    "community_orders",
    __name__,
    url_prefix="/api/v1/community",
    description="Household orders, their totals and the community's need",
)

Quantities = fields.Dict(
    keys=fields.String(validate=validate.Length(min=1, max=64)),
    values=fields.Integer(validate=validate.Range(min=0, max=100_000)),
)


class CommunityItemSchema(Schema):
    code = fields.String()
    name_zh = fields.Function(lambda item: item.names.zh)
    name_en = fields.Function(lambda item: item.names.en)
    unit_zh = fields.Function(lambda item: item.unit.zh)
    unit_en = fields.Function(lambda item: item.unit.en)
    dose = fields.String(allow_none=True)
    relief_item = fields.String(allow_none=True)
    base_per_unit = fields.Integer()
    donated = fields.Boolean()


class CommunityCatalogSchema(Schema):
    version = fields.String()
    items = fields.List(fields.Nested(CommunityItemSchema))


class RoundInSchema(Schema):
    title = fields.String(required=True, validate=validate.Length(min=1, max=100))
    limits = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=64)),
        values=fields.Integer(validate=validate.Range(min=1, max=100_000)),
        load_default=dict,
        metadata={"description": "The most one household may order, per item"},
    )


class RoundSchema(RoundInSchema):
    id = fields.UUID()
    status = fields.String()
    requested = fields.Dict(allow_none=True)
    people_served = fields.Integer(allow_none=True)
    confirmed_at = fields.AwareDateTime(allow_none=True)
    created_at = fields.AwareDateTime()


class RoundListSchema(Schema):
    items = fields.List(fields.Nested(RoundSchema))


class OrderRowSchema(Schema):
    household_id = fields.UUID(required=True)
    items = Quantities


class BatchSchema(Schema):
    building_id = fields.UUID(required=True)
    rows = fields.List(
        fields.Nested(OrderRowSchema), validate=validate.Length(max=2000), load_default=None
    )
    text = fields.String(
        load_default=None,
        validate=validate.Length(max=500_000),
        metadata={"description": "A pasted table: a header of items, one row a household"},
    )

    @validates_schema
    def _one_of(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if (data.get("rows") is None) == (data.get("text") is None):
            raise ValidationError("Send either rows or text.", "rows")


class BatchResultSchema(Schema):
    households = fields.Integer()


class BuildingArgs(Schema):
    building_id = fields.UUID(required=True)


class HouseholdOrderSchema(Schema):
    household_id = fields.UUID()
    unit = fields.String()
    room = fields.String()
    people = fields.Integer()
    items = fields.Dict()


class BuildingOrdersSchema(Schema):
    items = fields.List(fields.Nested(HouseholdOrderSchema))


class BuildingTotalsSchema(Schema):
    building_id = fields.UUID()
    name = fields.String()
    items = fields.Dict()
    households = fields.Integer()
    people = fields.Integer()


class TotalsSchema(Schema):
    round_id = fields.UUID()
    status = fields.String()
    buildings = fields.List(fields.Nested(BuildingTotalsSchema))
    community = fields.Dict()
    households = fields.Integer()
    people = fields.Integer()
    requested = fields.Dict(allow_none=True)


class ConfirmSchema(Schema):
    quantities = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=64)),
        values=fields.Integer(validate=validate.Range(min=0, max=10_000_000)),
        load_default=None,
        allow_none=True,
        metadata={"description": "The committee's figures per item, where they differ"},
    )


@blp.route("/catalog")
class Catalog(MethodView):
    @blp.response(200, CommunityCatalogSchema)
    @require_login
    def get(self) -> Any:
        """What households may order, in the units they order in."""
        return {"version": COMMUNITY_CATALOG_VERSION, "items": COMMUNITY_ITEMS}


@blp.route("/<uuid:org_id>/rounds")
class Rounds(MethodView):
    @blp.response(200, RoundListSchema)
    @require_login
    def get(self, org_id: uuid.UUID) -> Any:
        """The community's order rounds, newest first."""
        found = standing(org_id, "order rounds", residents=False)
        return {"items": service.list_rounds(db_session(), found)}

    @blp.arguments(RoundInSchema)
    @blp.response(201, RoundSchema)
    @require_login
    def post(self, data: dict[str, Any], org_id: uuid.UUID) -> Any:
        """Open a round of orders, with the most a household may order of each item
        (the committee)."""
        found = standing(org_id, "order rounds", residents=False)
        with runtime().unit_of_work() as session:
            return service.open_round(session, found, data)


@blp.route("/<uuid:org_id>/rounds/<uuid:round_id>/orders")
class Orders(MethodView):
    @blp.arguments(BuildingArgs, location="query")
    @blp.response(200, BuildingOrdersSchema)
    @require_login
    def get(self, args: dict[str, Any], org_id: uuid.UUID, round_id: uuid.UUID) -> Any:
        """A building's sheet: each household and what it ordered."""
        found = standing(org_id, "orders")
        session = db_session()
        order_round = service.get_round(session, found, round_id)
        return {"items": service.orders_of(session, found, order_round, args["building_id"])}

    @blp.arguments(BatchSchema)
    @blp.response(200, BatchResultSchema)
    @require_login
    def post(self, data: dict[str, Any], org_id: uuid.UUID, round_id: uuid.UUID) -> Any:
        """A building's orders, one row a household (``rows``, or a pasted table in
        ``text``); each replaces that household's order. All rows or none."""
        found = standing(org_id, "orders")
        with runtime().unit_of_work() as session:
            order_round = service.get_round(session, found, round_id)
            count = service.enter_batch(
                session,
                found,
                order_round,
                building_id=data["building_id"],
                rows=data["rows"],
                text=data["text"],
            )
        return {"households": count}


@blp.route("/<uuid:org_id>/rounds/<uuid:round_id>/totals")
class Totals(MethodView):
    @blp.response(200, TotalsSchema)
    @require_login
    def get(self, org_id: uuid.UUID, round_id: uuid.UUID) -> Any:
        """What the round adds up to, per building and for the community (counts and
        totals only)."""
        found = standing(org_id, "order totals", residents=False)
        session = db_session()
        return service.totals_of(session, found, service.get_round(session, found, round_id))


@blp.route("/<uuid:org_id>/rounds/<uuid:round_id>/confirm", methods=["POST"])
class Confirm(MethodView):
    @blp.arguments(ConfirmSchema)
    @blp.response(200, RoundSchema)
    @require_login
    def post(self, data: dict[str, Any], org_id: uuid.UUID, round_id: uuid.UUID) -> Any:
        """The committee confirms the totals (or its own figures per item); the part
        relief supplies carry becomes the community's need in dispatch."""
        found = standing(org_id, "order round", residents=False)
        rt = runtime()
        with rt.unit_of_work() as session:
            order_round = service.get_round(session, found, round_id)
            return service.confirm(session, rt.outbox, found, order_round, data["quantities"])
