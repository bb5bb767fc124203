"""The dispatch service: needs, matching, allocations and shipments."""

from __future__ import annotations

from flask import Flask

from services.dispatch.models import Organisation, messaging
from shared.config import Settings
from shared.org_directory import org_directory_blueprint, org_event_handlers
from shared.web import create_service_app


def create_app(settings: Settings | None = None, *, testing: bool = False) -> Flask:
    settings = settings or Settings.from_env()
    app, api = create_service_app(
        "dispatch",
        settings,
        title="aidlink dispatch",
        models=messaging,
        handlers={**org_event_handlers(Organisation)},
        testing=testing,
    )
    api.register_blueprint(org_directory_blueprint("dispatch", Organisation))
    return app
