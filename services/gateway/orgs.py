"""Registering organisations. Every registration is announced as ``org.registered``."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.gateway.models import Organisation
from shared.events import new_event
from shared.events.registry import ORGANISATION_KINDS
from shared.outbox import Outbox
from shared.pagination import ListArgsSchema, page_schema, paginate
from shared.problems import Problem
from shared.web import db_session, runtime

blp = Blueprint("orgs", __name__, url_prefix="/api/v1/orgs", description="Organisations")


class OrganisationInSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    kind = fields.String(required=True, validate=validate.OneOf(ORGANISATION_KINDS))
    region = fields.String(
        required=True,
        validate=validate.Regexp(
            r"^\d{2}(\d{2}){0,2}$", error="Use a 2, 4 or 6 digit region code."
        ),
        metadata={"description": "Administrative division code, e.g. 420102 (Wuhan, Jiang'an)"},
    )
    address = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class OrganisationSchema(OrganisationInSchema):
    id = fields.UUID(dump_only=True)
    created_at = fields.AwareDateTime(dump_only=True)
    version = fields.Integer(dump_only=True)


class OrganisationListArgsSchema(ListArgsSchema):
    kind = fields.String(validate=validate.OneOf(ORGANISATION_KINDS))
    region = fields.String()


OrganisationPageSchema = page_schema(OrganisationSchema, "OrganisationPageSchema")


def register_organisation(
    *, session: Session, outbox: Outbox, data: dict[str, Any]
) -> Organisation:
    """Create an organisation and announce it, in one transaction."""
    name = data["name"].strip()
    if not name:
        raise Problem(
            422, "The organisation needs a name.", errors={"name": ["Must not be blank."]}
        )
    org = Organisation(
        id=uuid.uuid4(),
        name=name,
        kind=data["kind"],
        region=data["region"],
        address=data.get("address"),
    )
    session.add(org)
    session.flush()
    outbox.add(
        session,
        new_event(
            "org.registered",
            {
                "id": org.id,
                "name": org.name,
                "kind": org.kind,
                "region": org.region,
                "address": org.address,
            },
            producer="gateway",
            aggregate_id=org.id,
            aggregate_version=org.version,
        ),
    )
    return org


@blp.route("")
class Organisations(MethodView):
    @blp.arguments(OrganisationListArgsSchema, location="query")
    @blp.response(200, OrganisationPageSchema)
    def get(self, args: dict[str, Any]) -> Any:
        stmt = select(Organisation)
        if args.get("kind"):
            stmt = stmt.where(Organisation.kind == args["kind"])
        if args.get("region"):
            stmt = stmt.where(Organisation.region.startswith(args["region"]))
        return paginate(
            db_session(), stmt, Organisation, cursor=args["cursor"], limit=args["limit"]
        )

    @blp.arguments(OrganisationInSchema)
    @blp.response(201, OrganisationSchema)
    def post(self, data: dict[str, Any]) -> Any:
        rt = runtime()
        with rt.unit_of_work() as session:
            return register_organisation(session=session, outbox=rt.outbox, data=data)


@blp.route("/<uuid:org_id>")
class OrganisationById(MethodView):
    @blp.response(200, OrganisationSchema)
    def get(self, org_id: uuid.UUID) -> Any:
        org = db_session().get(Organisation, org_id)
        if org is None:
            raise Problem(404, f"No organisation {org_id}.", slug="organisation-not-found")
        return org
