"""The places API: ``/api/v1/orgs/{org_id}/places``, an organisation's named
warehouses, loading bays and collection points, for its own members and
coordinators."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from services.gateway.models import Place
from services.gateway.orgs.service import refuse_if_merged
from services.gateway.places import service
from shared.catalog.regions import RegionCode
from shared.contacts import PlaceContactSchema, contact_of
from shared.events.supply import PLACE_KINDS
from shared.http import etag, require_if_match
from shared.identity import current_identity, require_login
from shared.web import db_session, runtime

blp = Blueprint(
    "places",
    __name__,
    url_prefix="/api/v1/orgs/<uuid:org_id>/places",
    description="Organisations' named places",
)

# A GB/T 2260 code of 2, 4 or 6 digits that the region table knows.
REGION = RegionCode()


class PlaceInSchema(Schema):
    name = fields.String(
        required=True,
        validate=validate.Length(min=1, max=100),
        metadata={"description": 'Unique within the organisation, e.g. "1号仓库"'},
    )
    kind = fields.String(load_default="warehouse", validate=validate.OneOf(PLACE_KINDS))
    address = fields.String(required=True, validate=validate.Length(min=1, max=500))
    region = fields.String(required=True, validate=REGION)
    lat = fields.Float(load_default=None, allow_none=True, validate=validate.Range(-90, 90))
    lon = fields.Float(load_default=None, allow_none=True, validate=validate.Range(-180, 180))
    contact = fields.Nested(
        PlaceContactSchema,
        load_default=None,
        allow_none=True,
        metadata={"description": "Whom the driver calls there; seen by the carrier"},
    )
    opening_hours = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=200),
        metadata={"description": 'e.g. "08:00-18:00 daily"'},
    )
    access_notes = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=500),
        metadata={"description": 'e.g. "closed-off compound: call the gate"'},
    )


class PlacePatchSchema(Schema):
    name = fields.String(validate=validate.Length(min=1, max=100))
    kind = fields.String(validate=validate.OneOf(PLACE_KINDS))
    address = fields.String(validate=validate.Length(min=1, max=500))
    region = fields.String(validate=REGION)
    lat = fields.Float(allow_none=True, validate=validate.Range(-90, 90))
    lon = fields.Float(allow_none=True, validate=validate.Range(-180, 180))
    contact = fields.Nested(PlaceContactSchema, allow_none=True)
    opening_hours = fields.String(allow_none=True, validate=validate.Length(max=200))
    access_notes = fields.String(allow_none=True, validate=validate.Length(max=500))
    archived = fields.Boolean(metadata={"description": "Archived places cannot be named"})


class PlaceSchema(Schema):
    id = fields.UUID()
    org_id = fields.UUID()
    name = fields.String()
    kind = fields.String()
    address = fields.String()
    region = fields.String()
    lat = fields.Float(allow_none=True)
    lon = fields.Float(allow_none=True)
    contact = fields.Method("_contact", allow_none=True)
    opening_hours = fields.String(allow_none=True)
    access_notes = fields.String(allow_none=True)
    archived = fields.Boolean()
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    version = fields.Integer()

    def _contact(self, place: Place) -> dict[str, Any] | None:
        return contact_of(place.contact_name, place.contact_phone)


class PlaceListArgsSchema(Schema):
    archived = fields.Boolean(
        load_default=False, metadata={"description": "true: archived places too"}
    )


class PlaceListSchema(Schema):
    items = fields.List(fields.Nested(PlaceSchema))


@blp.route("")
class Places(MethodView):
    @blp.arguments(PlaceListArgsSchema, location="query")
    @blp.response(200, PlaceListSchema)
    @require_login
    def get(self, args: dict[str, Any], org_id: uuid.UUID) -> Any:
        """The organisation's places, by name."""
        session = db_session()
        service.organisation_for(session, current_identity(), org_id)
        return {"items": service.list_places(session, org_id, archived=args["archived"])}

    @blp.arguments(PlaceInSchema)
    @blp.response(201, PlaceSchema)
    @require_login
    def post(self, data: dict[str, Any], org_id: uuid.UUID) -> Any:
        """Add a place; pledges, imports and needs may then name it (``place_id``, or
        ``place`` by name), and shipments from or to it are planned together."""
        rt = runtime()
        with rt.unit_of_work() as session:
            org = service.organisation_for(session, current_identity(), org_id)
            refuse_if_merged(org)
            place = service.add_place(session, rt.outbox, org, data)
            return place, 201, {"ETag": etag(place.version)}


@blp.route("/<uuid:place_id>")
class PlaceById(MethodView):
    @blp.response(200, PlaceSchema)
    @require_login
    def get(self, org_id: uuid.UUID, place_id: uuid.UUID) -> Any:
        session = db_session()
        service.organisation_for(session, current_identity(), org_id)
        place = service.get_place(session, org_id, place_id)
        return place, 200, {"ETag": etag(place.version)}

    @blp.arguments(PlacePatchSchema)
    @blp.response(200, PlaceSchema)
    @require_login
    def patch(self, data: dict[str, Any], org_id: uuid.UUID, place_id: uuid.UUID) -> Any:
        """Change a place (``If-Match``: its ETag), or archive it (``archived``).
        Shipments already planned keep the place as it was."""
        rt = runtime()
        with rt.unit_of_work() as session:
            org = service.organisation_for(session, current_identity(), org_id)
            refuse_if_merged(org)
            place = service.get_place(session, org_id, place_id)
            require_if_match(place.version)
            service.change_place(session, rt.outbox, place, data)
            return place, 200, {"ETag": etag(place.version)}
