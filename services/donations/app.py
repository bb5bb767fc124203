"""The donations service: pledges from foundations and reservations against them."""

from __future__ import annotations

import uuid

from flask import Flask
from sqlalchemy.orm import Session

from services.donations.catalog import api as catalog_api
from services.donations.imports import api as imports_api
from services.donations.imports.tasks import register_import_tasks
from services.donations.models import Organisation, Place, messaging
from services.donations.pledges import api as pledges_api
from services.donations.pledges.service import donor_personal_data, erase_donor
from services.donations.pledges.tasks import (
    register_pledge_tasks,
    saga_batch_handlers,
    saga_handlers,
)
from shared.config import Settings
from shared.events import Event
from shared.inbox import Handler
from shared.org_directory import org_directory_blueprint, org_event_handlers
from shared.places import erase_places, place_event_handlers
from shared.web import ServiceRuntime, create_service_app


def _org_handlers() -> dict[str, Handler]:
    """The read model of organisations, plus a person's data erased from its pledges."""
    handlers = org_event_handlers(Organisation)
    keep_erased = handlers["org.erased"]

    def on_erased(session: Session, event: Event) -> None:
        keep_erased(session, event)
        data = event.data()
        erase_donor(session, uuid.UUID(str(data["id"])), list(data.get("user_ids") or []))
        erase_places(session, Place, uuid.UUID(str(data["id"])))

    return {**handlers, **place_event_handlers(Place), "org.erased": on_erased}


def create_app(settings: Settings | None = None, *, testing: bool = False) -> Flask:
    settings = settings or Settings.from_env()
    app, flask_api = create_service_app(
        "donations",
        settings,
        title="aidlink donations",
        models=messaging,
        handlers=_org_handlers(),
        testing=testing,
    )
    rt: ServiceRuntime = app.extensions["aidlink"]
    rt.inbox.handlers.update(saga_handlers(rt.outbox, rt.inbox))
    rt.inbox.batch_handlers.update(saga_batch_handlers(rt.outbox, rt.inbox))
    register_pledge_tasks(rt)
    register_import_tasks(rt)
    flask_api.register_blueprint(
        org_directory_blueprint("donations", Organisation, donor_personal_data)
    )
    flask_api.register_blueprint(catalog_api.blp)
    flask_api.register_blueprint(pledges_api.blp)
    flask_api.register_blueprint(imports_api.blp)
    return app
