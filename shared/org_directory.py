"""A service's read model of organisations, fed by the gateway's org events.

donations and dispatch each keep their own copy in their own database (no service
reads another's tables); this module is the one definition of that copy, its event
handlers and the endpoint that shows it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields
from sqlalchemy import String, Uuid
from sqlalchemy.orm import Mapped, Session, mapped_column

from shared.db import UTCDateTime, utcnow
from shared.events import Event
from shared.identity import require_login, require_org_scope
from shared.inbox import Handler, OutOfOrder
from shared.problems import Problem
from shared.web import db_session


class OrganisationView:
    """Columns of the ``organisations`` read model."""

    if TYPE_CHECKING:

        def __init__(self, **columns: Any) -> None: ...

    __tablename__ = "organisations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    region: Mapped[str] = mapped_column(String(32), nullable=False)
    address: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # pending, verified, suspended or merged, as the gateway last announced.
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    merged_into_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    # The organisation's version at the gateway, from the event that last changed it.
    source_version: Mapped[int] = mapped_column(nullable=False)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class OrganisationViewSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    kind = fields.String()
    region = fields.String()
    address = fields.String(allow_none=True)
    status = fields.String()
    merged_into_id = fields.UUID(allow_none=True)
    source_version = fields.Integer()
    synced_at = fields.AwareDateTime()


def org_event_handlers(model: type[OrganisationView]) -> dict[str, Handler]:
    """Handlers that keep ``model`` in step with the gateway's organisations."""

    def on_registered(session: Session, event: Event) -> None:
        data = event.data()
        org = session.get(model, data["id"])
        if org is None:
            org = model(id=data["id"])
            session.add(org)
        org.name = data["name"]
        org.kind = data["kind"]
        org.region = data["region"]
        org.address = data.get("address")
        org.status = data.get("status") or "pending"
        org.source_version = event.aggregate_version
        org.synced_at = utcnow()

    def on_status(status: str) -> Handler:
        def handle(session: Session, event: Event) -> None:
            """Only the status changes; the rest, ``merged_into_id`` included, stays."""
            data = event.data()
            org = session.get(model, data["id"])
            if org is None:
                raise OutOfOrder(f"{event.type} for {data['id']} before its org.registered")
            org.status = status
            org.source_version = event.aggregate_version
            org.synced_at = utcnow()

        return handle

    def on_merged(session: Session, event: Event) -> None:
        data = event.data()
        org = session.get(model, data["id"])
        if org is None:
            raise OutOfOrder(f"{event.type} for {data['id']} before its org.registered")
        org.status = "merged"
        org.merged_into_id = data["merged_into"]
        org.source_version = event.aggregate_version
        org.synced_at = utcnow()

    def on_erased(session: Session, event: Event) -> None:
        """A person's data erased on request: the read model keeps no name or address."""
        data = event.data()
        org = session.get(model, data["id"])
        if org is None:
            raise OutOfOrder(f"{event.type} for {data['id']} before its org.registered")
        org.name = data["name"]
        org.address = None
        org.source_version = event.aggregate_version
        org.synced_at = utcnow()

    return {
        "org.registered": on_registered,
        "org.verified": on_status("verified"),
        "org.suspended": on_status("suspended"),
        "org.merged": on_merged,
        "org.erased": on_erased,
    }


class PersonalDataSchema(Schema):
    service = fields.String()
    organisation = fields.Dict(allow_none=True)
    records = fields.Dict(
        metadata={"description": "What else this service holds of it, by kind of record"}
    )


PersonalData = Callable[[Session, uuid.UUID], dict[str, Any]]


def org_directory_blueprint(
    service: str, model: type[OrganisationView], personal_data: PersonalData | None = None
) -> Blueprint:
    """``GET /api/v1/<service>/orgs/<id>``: what this service knows of an organisation;
    ``.../personal-data``: all it holds of it (for a person's request to see it)."""
    blp = Blueprint(
        f"{service}_orgs",
        __name__,
        url_prefix=f"/api/v1/{service}/orgs",
        description=f"Organisations as the {service} service knows them",
    )
    schema = type(f"{service.title()}OrganisationSchema", (OrganisationViewSchema,), {})
    data_schema = type(f"{service.title()}PersonalDataSchema", (PersonalDataSchema,), {})

    @blp.route("/<uuid:org_id>")
    class OrganisationById(MethodView):
        @blp.response(200, schema)
        @require_login
        def get(self, org_id: uuid.UUID) -> Any:
            """The organisation as this service knows it: its own members and
            coordinators only."""
            require_org_scope(org_id, "this organisation's record")
            org = db_session().get(model, org_id)
            if org is None:
                raise Problem(
                    404,
                    f"The {service} service has no organisation {org_id}; "
                    "if it was just registered, its event may still be on its way.",
                    slug="organisation-not-found",
                )
            return org

    @blp.route("/<uuid:org_id>/personal-data")
    class PersonalDataOf(MethodView):
        @blp.response(200, data_schema)
        @require_login
        def get(self, org_id: uuid.UUID) -> Any:
            """Everything this service holds of the organisation (a person exporting
            their data): its own members and coordinators only."""
            require_org_scope(org_id, "this organisation's data")
            session = db_session()
            org = session.get(model, org_id)
            return {
                "service": service,
                "organisation": OrganisationViewSchema().dump(org) if org is not None else None,
                "records": personal_data(session, org_id) if personal_data else {},
            }

    return blp
