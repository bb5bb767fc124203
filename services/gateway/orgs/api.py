"""The organisations API: register, list and read organisations."""

from __future__ import annotations

import uuid
from typing import Any

from flask import current_app, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from services.gateway.audit import service as audit
from services.gateway.members.service import may_list
from services.gateway.models import Organisation
from services.gateway.orgs.personal_data import COMMUNITY_KIND, erase, erase_residents, export
from services.gateway.orgs.service import (
    ORG_AUDIT_FIELDS,
    get_organisation,
    register_organisation,
    sees_private,
    visible_organisation,
    visible_to,
)
from services.gateway.proxy import ServiceClient
from shared.catalog.regions import RegionCode
from shared.errors import Forbidden, NotFound, Unavailable
from shared.events.registry import ORGANISATION_KINDS
from shared.identity import current_identity, require_login, require_roles
from shared.pagination import ListArgsSchema, page_schema, paginate
from shared.web import db_session, runtime

blp = Blueprint("orgs", __name__, url_prefix="/api/v1/orgs", description="Organisations")

ORG_STATUSES = ("pending", "verified", "suspended", "merged")
# Organisations one request for their names may ask for.
NAMES_MAX = 200

# A GB/T 2260 code of 2, 4 or 6 digits that the region table knows.
REGION = RegionCode()


class ContactSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    role = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=100))
    phone = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(r"^\+?[0-9 ()\-]{5,32}$", error="Not a phone number."),
    )
    email = fields.Email(load_default=None, allow_none=True)


class OrganisationInSchema(Schema):
    name = fields.String(
        required=True,
        validate=validate.Length(min=1, max=200),
        metadata={"description": "Legal name, as on the licence"},
    )
    name_zh = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    name_en = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    kind = fields.String(required=True, validate=validate.OneOf(ORGANISATION_KINDS))
    region = fields.String(
        required=True,
        validate=REGION,
        metadata={"description": "Administrative division code, e.g. 420102 (Wuhan, Jiang'an)"},
    )
    address = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))
    contacts = fields.List(
        fields.Nested(ContactSchema), load_default=list, validate=validate.Length(max=20)
    )
    licence_number = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(
            r"^[0-9A-Za-z\-]{6,64}$",
            error="Use the licence or registration number, e.g. the 18-character "
            "unified social credit code.",
        ),
    )
    website = fields.Url(load_default=None, allow_none=True, schemes={"http", "https"})


class OrganisationSchema(Schema):
    """What anyone signed in sees of an organisation."""

    id = fields.UUID(dump_only=True)
    name = fields.String()
    name_zh = fields.String(allow_none=True)
    name_en = fields.String(allow_none=True)
    kind = fields.String()
    region = fields.String()
    address = fields.String(allow_none=True)
    website = fields.String(allow_none=True)
    status = fields.String(metadata={"description": "pending, verified, suspended or merged"})
    verified_at = fields.AwareDateTime(allow_none=True)
    merged_into_id = fields.UUID(allow_none=True)
    created_at = fields.AwareDateTime(dump_only=True)
    version = fields.Integer(dump_only=True)


class OrganisationDetailSchema(OrganisationSchema):
    """What its own members and coordinators see as well."""

    contacts = fields.List(fields.Nested(ContactSchema))
    licence_number = fields.String(allow_none=True)
    verified_by = fields.UUID(allow_none=True)
    verification_evidence = fields.String(allow_none=True)
    suspended_at = fields.AwareDateTime(allow_none=True)
    suspended_by = fields.UUID(allow_none=True)
    suspension_reason = fields.String(allow_none=True)


class OrganisationListArgsSchema(ListArgsSchema):
    kind = fields.String(validate=validate.OneOf(ORGANISATION_KINDS))
    region = fields.String(validate=validate.Regexp(r"^\d{1,6}$", error="Digits only."))
    status = fields.String(validate=validate.OneOf(ORG_STATUSES))


OrganisationPageSchema = page_schema(OrganisationSchema, "OrganisationPageSchema")


def dump_organisation(org: Organisation) -> dict[str, Any]:
    """The attributes of ``org`` the current caller may see (the response schema
    serialises them)."""
    schema = (
        OrganisationDetailSchema()
        if sees_private(current_identity(), org)
        else OrganisationSchema()
    )
    return {name: getattr(org, name) for name in schema.fields}


@blp.route("")
class Organisations(MethodView):
    @blp.arguments(OrganisationListArgsSchema, location="query")
    @blp.response(200, OrganisationPageSchema)
    @require_login
    def get(self, args: dict[str, Any]) -> Any:
        """The directory. Coordinators see every organisation. A verified
        organisation's members see their own and the verified organisations other than
        individuals (individual donors are listed to coordinators alone); members of
        an organisation not yet verified see only their own."""
        stmt = select(Organisation).where(visible_to(current_identity()))
        for name in ("kind", "status"):
            if args.get(name):
                stmt = stmt.where(getattr(Organisation, name) == args[name])
        if args.get("region"):
            stmt = stmt.where(Organisation.region.startswith(args["region"]))
        return paginate(
            db_session(), stmt, Organisation, cursor=args["cursor"], limit=args["limit"]
        )

    @blp.arguments(OrganisationInSchema)
    @blp.response(201, OrganisationDetailSchema)
    @require_roles("coordinator")
    def post(self, data: dict[str, Any]) -> Any:
        """Register an organisation on its behalf (e.g. a hospital that phoned in).
        Organisations registering themselves use ``POST /api/v1/auth/register``."""
        rt = runtime()
        with rt.unit_of_work() as session:
            org = register_organisation(session=session, outbox=rt.outbox, data=data)
            audit.record(
                session,
                "org.register",
                "organisation",
                org.id,
                after=audit.snapshot(org, *ORG_AUDIT_FIELDS),
            )
            return org


class NamesArgsSchema(Schema):
    id = fields.List(
        fields.UUID(),
        required=True,
        validate=validate.Length(min=1, max=NAMES_MAX),
        metadata={"description": "Organisation ids, the parameter repeated (at most 200)"},
    )


class OrganisationNameSchema(Schema):
    id = fields.UUID()
    name = fields.String(metadata={"description": "The name it registered"})
    name_zh = fields.String(allow_none=True, metadata={"description": "Its Chinese name"})
    name_en = fields.String(allow_none=True, metadata={"description": "Its English name"})


class OrganisationNamesSchema(Schema):
    items = fields.List(fields.Nested(OrganisationNameSchema))


@blp.route("/names")
class OrganisationNames(MethodView):
    @blp.arguments(NamesArgsSchema, location="query")
    @blp.response(200, OrganisationNamesSchema)
    def get(self, args: dict[str, Any]) -> Any:
        """Public (no sign-in): the names of the organisations asked for, in each
        language they registered one, so that the public ledger and traces name them in
        the reader's language. Only verified organisations other than individuals (the
        ones the directory shows to every verified organisation) are answered; the rest
        are left out."""
        found = db_session().scalars(
            select(Organisation)
            .where(
                Organisation.id.in_(set(args["id"])),
                Organisation.status == "verified",
                Organisation.kind != "individual",
            )
            .order_by(Organisation.id)
        )
        return {"items": list(found)}


@blp.route("/<uuid:org_id>")
class OrganisationById(MethodView):
    @blp.response(200, OrganisationDetailSchema)
    @require_login
    def get(self, org_id: uuid.UUID) -> Any:
        """One organisation, if the directory lists it to you (see the list); contacts,
        licence and verification record only for its members and coordinators."""
        org = visible_organisation(db_session(), current_identity(), org_id)
        return dump_organisation(org)


class EraseSchema(Schema):
    reason = fields.String(
        required=True,
        validate=validate.Length(min=3, max=500),
        metadata={"description": "Why, e.g. the person's request and its date"},
    )


class PersonalDataExportSchema(Schema):
    gateway = fields.Dict(metadata={"description": "The record, its users, the audit log"})
    services = fields.List(fields.Dict(), metadata={"description": "What each service holds of it"})


REASON = "x-access-reason"


@blp.route("/<uuid:org_id>/personal-data")
class PersonalDataOf(MethodView):
    @blp.response(200, PersonalDataExportSchema)
    @require_login
    def get(self, org_id: uuid.UUID) -> Any:
        """Everything aidlink holds of a person (an individual donor) and its users, for
        the person (its own members) or a coordinator answering their request."""
        identity = current_identity()
        org = db_session().get(Organisation, org_id)
        if org is not None and org.kind == COMMUNITY_KIND:
            # A community's export holds every household: its admins' and
            # coordinators' (the community service also wants its committee, or a
            # coordinator's reason).
            if not (identity.is_coordinator or may_list(identity, org_id)):
                raise Forbidden(
                    "A community's export is for its committee's admins and coordinators.",
                    slug="forbidden",
                )
        elif not (identity.is_coordinator or identity.org_id == org_id):
            raise NotFound(f"No organisation {org_id}.", slug="organisation-not-found")
        org = get_organisation(db_session(), org_id)
        # The gateway's part first: it refuses what is not a person before any service
        # is asked.
        gateway_part = export(db_session(), org)
        client: ServiceClient = current_app.extensions["aidlink.services"]
        services = []
        # The community service holds a community's residents, and anyone's help
        # (as a helper or a seeker).
        names: tuple[str, ...] = ("donations", "dispatch", "community")
        for service in names:
            answer = client.call(
                service,
                "GET",
                f"/api/v1/{service}/orgs/{org_id}/personal-data",
                # A coordinator's reason for reading residents' data goes with it.
                headers=client.forward_headers(
                    {k: v for k, v in request.headers.items() if k.lower() == REASON},
                    service,
                ),
            )
            if answer.status_code == 403:
                raise Forbidden(
                    str(answer.json().get("detail") or "Refused."),
                    slug=str(answer.json().get("type", "")).rsplit("/", 1)[-1] or "forbidden",
                )
            if answer.status_code != 200:
                raise Unavailable(
                    f"The {service} service could not give its part ({answer.status_code}); "
                    "try again shortly.",
                    slug="export-incomplete",
                )
            services.append(answer.json())
        return {"gateway": gateway_part, "services": services}


@blp.route("/<uuid:org_id>/erase", methods=["POST"])
@blp.arguments(EraseSchema)
@blp.response(200, OrganisationDetailSchema)
@require_roles("coordinator")
def erase_person(data: dict[str, Any], org_id: uuid.UUID) -> Any:
    """Erase a person's data on their request (an individual donor): names, addresses,
    contacts, e-mails, pickup places, uploaded files, here and in every service.
    Quantities stay, so every total and the public ledger still add up. For a
    community committee, its residents' data in the community service (households,
    cases, deliveries' notes); the committee's own record stays."""
    rt = runtime()
    with rt.unit_of_work() as session:
        org = get_organisation(session, org_id)
        if org.kind == COMMUNITY_KIND:
            erase_residents(session, rt.outbox, org, data["reason"])
        else:
            erase(session, rt.outbox, org, data["reason"])
        return dump_organisation(org)
