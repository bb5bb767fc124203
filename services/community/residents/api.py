"""The residents API: a community's buildings, who holds which role in it, and its
households (seen by the committee and each household's building leader only)."""

from __future__ import annotations

import uuid
from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy.orm import Session

from services.community.distribution import service as distribution
from services.community.models import Household, Organisation
from services.community.residents import domain, privacy, service
from services.community.residents.domain import Standing
from services.community.sessions import privacy as help_privacy
from shared.errors import Forbidden
from shared.http import etag, require_if_match
from shared.identity import current_identity, require_login
from shared.web import db_session, runtime

blp = Blueprint(
    "community_residents",
    __name__,
    url_prefix="/api/v1/community",
    description="A community's buildings, roles and households",
)

REASON_HEADER = "X-Access-Reason"


def standing(org_id: uuid.UUID, what: str, *, residents: bool = True) -> Standing:
    """The caller's standing in the community; a coordinator's reading of residents'
    data is recorded with its reason."""
    identity = current_identity()
    reason = request.headers.get(REASON_HEADER)
    found = service.standing_of(db_session(), identity, org_id, reason, residents=residents)
    if found.coordinator and residents:
        with runtime().unit_of_work() as session:
            service.record_access(session, found, identity, reason, what)
    return found


def personal_data(session: Session, org_id: uuid.UUID) -> dict[str, Any]:
    """The community service's part of ``GET /api/v1/orgs/{id}/personal-data``: all of
    a community to its committee (or a coordinator giving a reason, which is
    recorded), see ``privacy``; only counts of an organisation that is not a community."""
    org = session.get(Organisation, org_id)
    # Its people's help: helpers, notes and signed-in requests, as the reader may see.
    help_part = help_privacy.personal_data(session, org_id, current_identity())
    if org is None or org.kind != service.COMMUNITY_KIND:
        return {**privacy.counts(session, org_id), **help_part}
    found = standing(org_id, "personal-data export")
    if not (found.committee or found.coordinator):
        raise Forbidden(
            "A community's export is its committee's: it holds every household.",
            slug="forbidden",
        )
    return {**privacy.everything(session, org_id), **help_part}


# Schemas ---------------------------------------------------------------------------------


class StandingSchema(Schema):
    org_id = fields.UUID()
    roles = fields.List(fields.String())
    leads = fields.List(fields.UUID(), metadata={"description": "Buildings led"})
    delivers = fields.List(fields.UUID(), metadata={"description": "Buildings delivered to"})


class BuildingInSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    area = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))


class BuildingSchema(BuildingInSchema):
    id = fields.UUID()
    created_at = fields.AwareDateTime()


class BuildingListSchema(Schema):
    items = fields.List(fields.Nested(BuildingSchema))


class AppointmentInSchema(Schema):
    user_id = fields.UUID(required=True, metadata={"description": "A user of the community"})
    role = fields.String(required=True, validate=validate.OneOf(domain.ROLES))
    building_id = fields.UUID(load_default=None, allow_none=True)
    area = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))
    name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=100))
    hours_per_day = fields.Float(
        load_default=None, allow_none=True, validate=validate.Range(min=0, max=24)
    )


class AppointmentSchema(AppointmentInSchema):
    id = fields.UUID()
    created_at = fields.AwareDateTime()


class AppointmentListSchema(Schema):
    items = fields.List(fields.Nested(AppointmentSchema))


class HouseholdInSchema(Schema):
    building_id = fields.UUID(required=True)
    unit = fields.String(load_default="", validate=validate.Length(max=16))
    room = fields.String(required=True, validate=validate.Length(min=1, max=16))
    people = fields.Integer(required=True, validate=validate.Range(min=1, max=50))
    flags = fields.List(
        fields.String(validate=validate.OneOf(domain.FLAGS)),
        load_default=list,
        validate=validate.Length(max=len(domain.FLAGS)),
    )
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))
    phone = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=32))


class HouseholdPatchSchema(Schema):
    """Only what changes."""

    building_id = fields.UUID()
    unit = fields.String(validate=validate.Length(max=16))
    room = fields.String(validate=validate.Length(min=1, max=16))
    people = fields.Integer(validate=validate.Range(min=1, max=50))
    flags = fields.List(
        fields.String(validate=validate.OneOf(domain.FLAGS)),
        validate=validate.Length(max=len(domain.FLAGS)),
    )
    note = fields.String(allow_none=True, validate=validate.Length(max=500))
    phone = fields.String(allow_none=True, validate=validate.Length(max=32))


class HouseholdSchema(HouseholdInSchema):
    id = fields.UUID()
    vulnerable = fields.Boolean()
    version = fields.Integer()
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()


class HouseholdListArgs(Schema):
    building_id = fields.UUID(load_default=None)


class HouseholdListSchema(Schema):
    items = fields.List(fields.Nested(HouseholdSchema))


# Endpoints -------------------------------------------------------------------------------


@blp.route("/<uuid:org_id>/me")
class Me(MethodView):
    @blp.response(200, StandingSchema)
    @require_login
    def get(self, org_id: uuid.UUID) -> Any:
        """The caller's roles in the community and the buildings they lead or deliver to."""
        found = standing(org_id, "standing", residents=False)
        return {
            "org_id": found.org_id,
            "roles": found.roles,
            "leads": sorted(found.leads, key=str),
            "delivers": sorted(found.delivers, key=str),
        }


@blp.route("/<uuid:org_id>/buildings")
class Buildings(MethodView):
    @blp.response(200, BuildingListSchema)
    @require_login
    def get(self, org_id: uuid.UUID) -> Any:
        """The community's buildings: its members and coordinators."""
        standing(org_id, "buildings", residents=False)
        return {"items": service.list_buildings(db_session(), org_id)}

    @blp.arguments(BuildingInSchema)
    @blp.response(201, BuildingSchema)
    @require_login
    def post(self, data: dict[str, Any], org_id: uuid.UUID) -> Any:
        """Register a building (the committee)."""
        found = standing(org_id, "buildings", residents=False)
        with runtime().unit_of_work() as session:
            return service.add_building(session, found, name=data["name"], area=data["area"])


@blp.route("/<uuid:org_id>/appointments")
class Appointments(MethodView):
    @blp.response(200, AppointmentListSchema)
    @require_login
    def get(self, org_id: uuid.UUID) -> Any:
        """Who holds which role (the committee)."""
        found = standing(org_id, "appointments", residents=False)
        return {"items": service.list_appointments(db_session(), found)}

    @blp.arguments(AppointmentInSchema)
    @blp.response(201, AppointmentSchema)
    @require_login
    def post(self, data: dict[str, Any], org_id: uuid.UUID) -> Any:
        """Appoint a user of the community: a building's leader or volunteer, an area's
        leader, a social worker (with hours a day), a case supervisor."""
        found = standing(org_id, "appointments", residents=False)
        with runtime().unit_of_work() as session:
            return service.appoint(session, found, data)


@blp.route("/<uuid:org_id>/appointments/<uuid:appointment_id>")
class AppointmentById(MethodView):
    @blp.response(204)
    @require_login
    def delete(self, org_id: uuid.UUID, appointment_id: uuid.UUID) -> None:
        """End an appointment (the committee)."""
        found = standing(org_id, "appointments", residents=False)
        with runtime().unit_of_work() as session:
            service.dismiss(session, found, appointment_id)


@blp.route("/<uuid:org_id>/households")
class Households(MethodView):
    @blp.arguments(HouseholdListArgs, location="query")
    @blp.response(200, HouseholdListSchema)
    @require_login
    def get(self, args: dict[str, Any], org_id: uuid.UUID) -> Any:
        """Households the caller sees: all of them for the committee (and a coordinator
        giving a reason), those of their buildings for a building leader."""
        found = standing(org_id, "households")
        return {"items": service.list_households(db_session(), found, args["building_id"])}

    @blp.arguments(HouseholdInSchema)
    @blp.response(201, HouseholdSchema)
    @require_login
    def post(self, data: dict[str, Any], org_id: uuid.UUID) -> Any:
        """Record a household (the committee, or the building's leader)."""
        found = standing(org_id, "households")
        with runtime().unit_of_work() as session:
            return service.add_household(session, found, data)


@blp.route("/<uuid:org_id>/households/<uuid:household_id>")
class HouseholdById(MethodView):
    @blp.response(200, HouseholdSchema)
    @require_login
    def get(self, org_id: uuid.UUID, household_id: uuid.UUID) -> Any:
        """One household; its version is the ETag."""
        found = standing(org_id, "household")
        household = service.get_household(db_session(), found, household_id)
        return household, 200, {"ETag": etag(household.version)}

    @blp.arguments(HouseholdPatchSchema)
    @blp.response(200, HouseholdSchema)
    @require_login
    def patch(self, data: dict[str, Any], org_id: uuid.UUID, household_id: uuid.UUID) -> Any:
        """Change a household (If-Match: its ETag)."""
        found = standing(org_id, "household")
        rt = runtime()
        with rt.unit_of_work() as session:
            household: Household = service.get_household(session, found, household_id)
            # Its size and flags count in the community's reach once it was reached.
            counted = "people" in data or "flags" in data
            if counted:
                distribution.lock_reach(session, household.org_id)
                session.refresh(household)
            require_if_match(household.version)
            service.change_household(session, found, household, data)
            if counted:
                distribution.household_changed(session, rt.outbox, household)
        return household, 200, {"ETag": etag(household.version)}

    @blp.response(204)
    @require_login
    def delete(self, org_id: uuid.UUID, household_id: uuid.UUID) -> None:
        """A household that moved away: its details are erased, its counts stay."""
        found = standing(org_id, "household")
        with runtime().unit_of_work() as session:
            service.remove_household(
                session, found, service.get_household(session, found, household_id)
            )
