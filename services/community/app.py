"""The community service: what happens inside a residential community once supplies
reach its gate (README: "Community")."""

from __future__ import annotations

from flask import Flask

from services.community.models import Organisation, messaging
from shared.config import Settings
from shared.org_directory import org_directory_blueprint, org_event_handlers
from shared.web import ServiceRuntime, create_service_app


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
    rt.inbox.handlers.update(org_event_handlers(Organisation))
    flask_api.register_blueprint(org_directory_blueprint("community", Organisation))
    return app
