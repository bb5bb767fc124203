"""The community service: what happens inside a residential community once supplies
reach its gate (README: "Community")."""

from __future__ import annotations

import uuid

from flask import Flask
from sqlalchemy.orm import Session

from services.community.cases import api as cases_api
from services.community.distribution import api as distribution_api
from services.community.distribution import service as distribution
from services.community.hotlines import api as hotlines_api
from services.community.models import Organisation, messaging
from services.community.orders import api as orders_api
from services.community.residents import api as residents_api
from services.community.residents import privacy
from services.community.residents import service as residents
from services.community.sessions import api as sessions_api
from services.community.sessions import privacy as help_privacy
from services.community.sessions.tasks import register_session_tasks
from shared.config import Settings
from shared.db import utcnow
from shared.events import Event
from shared.inbox import Handler
from shared.org_directory import org_directory_blueprint, org_event_handlers
from shared.web import ServiceRuntime, create_service_app


def _org_handlers() -> dict[str, Handler]:
    """The read model of organisations; an erased organisation's residents' details (and
    its cases' text) go with it."""
    handlers = org_event_handlers(Organisation)
    keep_erased = handlers["org.erased"]

    def on_erased(session: Session, event: Event) -> None:
        keep_erased(session, event)
        data = event.data()
        org_id = uuid.UUID(str(data["id"]))
        residents.erase_community(session, org_id)
        help_privacy.erase_people(
            session,
            org_id,
            utcnow(),
            user_ids=[uuid.UUID(str(u)) for u in data.get("user_ids") or ()],
        )

    def on_residents_erased(session: Session, event: Event) -> None:
        org_id = uuid.UUID(str(event.data()["id"]))
        privacy.erase_residents(session, org_id)
        # The requests for help its residents made by calling a hotline.
        help_privacy.erase_callers(session, org_id)

    def on_member_removed(session: Session, event: Event) -> None:
        data = event.data()
        org_id, user_id = uuid.UUID(str(data["org_id"])), uuid.UUID(str(data["user_id"]))
        privacy.end_appointments(session, org_id, user_id)
        help_privacy.withdraw_member(session, org_id, user_id, utcnow())

    return {
        **handlers,
        "org.erased": on_erased,
        "org.residents_erased": on_residents_erased,
        "org.member_removed": on_member_removed,
    }


def create_app(settings: Settings | None = None, *, testing: bool = False) -> Flask:
    settings = settings or Settings.from_env()
    app, flask_api = create_service_app(
        "community",
        settings,
        title="aidlink community",
        models=messaging,
        testing=testing,
    )
    rt: ServiceRuntime = app.extensions["aidlink"]
    rt.inbox.handlers.update(_org_handlers())
    rt.inbox.handlers["receipt.confirmed"] = distribution.receipt_handler(rt.outbox)
    register_session_tasks(rt)
    flask_api.register_blueprint(
        org_directory_blueprint("community", Organisation, residents_api.personal_data)
    )
    flask_api.register_blueprint(residents_api.blp)
    flask_api.register_blueprint(orders_api.blp)
    flask_api.register_blueprint(distribution_api.blp)
    flask_api.register_blueprint(cases_api.blp)
    flask_api.register_blueprint(sessions_api.blp)
    flask_api.register_blueprint(hotlines_api.blp)
    return app
