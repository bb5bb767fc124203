"""The distribution API: the community's stock and its accounts, the committee's split
over households by a rule, each building's delivery list and the volunteers'
outcomes, and write-offs."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, post_dump, validate

from services.community.distribution import domain, service
from services.community.models import Organisation
from services.community.residents.api import standing
from services.community.residents.service import COMMUNITY_KIND, require_committee
from shared.display_fields import DISPLAY_PARAMETER, requested_language, shown
from shared.errors import NotFound
from shared.identity import require_login
from shared.web import db_session, runtime

blp = Blueprint(
    "community_distribution",
    __name__,
    url_prefix="/api/v1/community",
    description="Stock, its split over households and volunteers' deliveries",
)


class StockSchema(Schema):
    stock = fields.Dict(metadata={"description": "Per relief item, in its base unit"})
    accounts = fields.Dict(
        metadata={
            "description": "Per item: received, delivered, pending (out for delivery), "
            "in_stock and written_off; received = delivered + pending + in_stock + "
            "written_off"
        }
    )


class DistributionInSchema(Schema):
    rule = fields.String(required=True, validate=validate.OneOf(domain.RULES))
    round_id = fields.UUID(
        load_default=None,
        allow_none=True,
        metadata={"description": "Whose orders count; the latest confirmed round if not"},
    )
    items = fields.List(fields.String(validate=validate.Length(min=1, max=64)), load_default=None)
    allocations = fields.Dict(
        keys=fields.UUID(),
        values=fields.Dict(
            keys=fields.String(), values=fields.Integer(validate=validate.Range(min=0))
        ),
        load_default=None,
        metadata={"description": "by_hand: household -> community item -> ordered units"},
    )


class DistributionSchema(Schema):
    id = fields.UUID()
    rule = fields.String()
    round_id = fields.UUID(allow_none=True)
    created_at = fields.AwareDateTime()
    deliveries = fields.Integer()


class DeliveryArgs(Schema):
    building_id = fields.UUID(load_default=None)
    distribution_id = fields.UUID(load_default=None)
    status = fields.String(
        load_default=None, validate=validate.OneOf(("pending", *service.OUTCOMES))
    )


class DeliverySchema(Schema):
    id = fields.UUID()
    distribution_id = fields.UUID()
    building_id = fields.UUID()
    household_id = fields.UUID()
    unit = fields.String()
    room = fields.String()
    note = fields.String(allow_none=True)
    items = fields.Dict()
    status = fields.String()
    outcome_note = fields.String(allow_none=True)
    done_at = fields.AwareDateTime(allow_none=True)


class DeliveryListSchema(Schema):
    items = fields.List(fields.Nested(DeliverySchema))


class OutcomeSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(service.OUTCOMES))
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class WriteOffSchema(Schema):
    item = fields.String(required=True, validate=validate.Length(min=1, max=64))
    quantity = fields.Integer(required=True, validate=validate.Range(min=1))
    reason = fields.String(required=True, validate=validate.Length(min=3, max=500))


class WriteOffOutSchema(WriteOffSchema):
    id = fields.UUID()
    at = fields.AwareDateTime()


@blp.route("/<uuid:org_id>/stock")
class Stock(MethodView):
    @blp.response(200, StockSchema)
    @require_login
    def get(self, org_id: uuid.UUID) -> Any:
        """What the community holds, and where every unit it received went (the
        committee and coordinators)."""
        found = standing(org_id, "stock", residents=False)
        if not found.coordinator:
            require_committee(found)
        session = db_session()
        return {
            "stock": service.stock_of(session, org_id),
            "accounts": service.accounts(session, org_id),
        }


@blp.route("/<uuid:org_id>/distributions")
class Distributions(MethodView):
    @blp.arguments(DistributionInSchema)
    @blp.response(201, DistributionSchema)
    @require_login
    def post(self, data: dict[str, Any], org_id: uuid.UUID) -> Any:
        """Split the stock over households by a rule (as ordered, per person,
        vulnerable first, by hand) into delivery lists per building (the committee)."""
        found = standing(org_id, "distribution", residents=False)
        with runtime().unit_of_work() as session:
            made = service.distribute(session, found, data)
            count = len(service.deliveries(session, found, distribution_id=made.id))
            return {
                "id": made.id,
                "rule": made.rule,
                "round_id": made.round_id,
                "created_at": made.created_at,
                "deliveries": count,
            }


@blp.route("/<uuid:org_id>/deliveries")
class Deliveries(MethodView):
    @blp.arguments(DeliveryArgs, location="query")
    @blp.response(200, DeliveryListSchema)
    @require_login
    def get(self, args: dict[str, Any], org_id: uuid.UUID) -> Any:
        """Delivery lists: a building's for its volunteers and leader, all for the
        committee (and a coordinator giving a reason)."""
        found = standing(org_id, "deliveries")
        return {"items": service.deliveries(db_session(), found, **args)}


@blp.route("/<uuid:org_id>/deliveries/<uuid:delivery_id>/outcome", methods=["POST"])
class Outcome(MethodView):
    @blp.arguments(OutcomeSchema)
    @blp.response(200, DeliverySchema)
    @require_login
    def post(self, data: dict[str, Any], org_id: uuid.UUID, delivery_id: uuid.UUID) -> Any:
        """How it went at the door: delivered, not home, refused or returned (the last
        three go back to stock)."""
        found = standing(org_id, "delivery", residents=False)
        rt = runtime()
        with rt.unit_of_work() as session:
            service.record_outcome(
                session, rt.outbox, found, delivery_id, data["status"], data["note"]
            )
            # The door's own row, not the community's every delivery.
            [done] = service.deliveries(session, _all_of(found), delivery_id=delivery_id)
            return done


def _all_of(found: Any) -> Any:
    from dataclasses import replace

    return replace(found, committee=True)


class ReachSchema(Schema):
    org_id = fields.UUID()
    households_reached = fields.Integer()
    people_served = fields.Integer()
    vulnerable_households_reached = fields.Integer()
    units_delivered = fields.Dict(metadata={"description": "Per relief item, in its base unit"})
    display = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(keys=fields.String(), values=fields.String()),
        dump_only=True,
        metadata={
            "description": "Only with ?display=true: units_delivered, each item's figure as "
            'people read it ("40 吨" / "40 t"), in the language of Accept-Language '
            "(zh: Chinese, otherwise English)"
        },
    )

    @post_dump
    def _display(self, data: dict[str, Any], **_kw: Any) -> dict[str, Any]:
        data.pop("display", None)
        language = requested_language()
        if language is not None:
            data["display"] = {
                "units_delivered": {
                    item: shown({"item": item, "units": units}, ("units",), language)["units"]
                    for item, units in (data.get("units_delivered") or {}).items()
                }
            }
        return data


@blp.route("/<uuid:org_id>/reach", parameters=[DISPLAY_PARAMETER])
class Reach(MethodView):
    @blp.response(200, ReachSchema)
    def get(self, org_id: uuid.UUID) -> Any:
        """Public: households the community reached, people served, vulnerable
        households reached and units delivered inside it. Counts only."""
        session = db_session()
        org = session.get(Organisation, org_id)
        if org is None or org.kind != COMMUNITY_KIND:
            raise NotFound(f"No community {org_id}.", slug="community-not-found")
        return service.reach(session, org_id)


@blp.route("/<uuid:org_id>/write-offs", methods=["POST"])
class WriteOffs(MethodView):
    @blp.arguments(WriteOffSchema)
    @blp.response(201, WriteOffOutSchema)
    @require_login
    def post(self, data: dict[str, Any], org_id: uuid.UUID) -> Any:
        """Write off stock that cannot be handed out, with the reason (the committee)."""
        found = standing(org_id, "write-off", residents=False)
        with runtime().unit_of_work() as session:
            move = service.write_off(session, found, data)
            return {
                "id": move.id,
                "item": move.item,
                "quantity": -move.quantity,
                "reason": move.reason,
                "at": move.at,
            }
