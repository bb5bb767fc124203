"""The donations service: pledges from foundations and reservations against them."""

from __future__ import annotations

from flask import Flask

from services.donations.models import Organisation, messaging
from shared.config import Settings
from shared.org_directory import org_directory_blueprint, org_event_handlers
from shared.web import create_service_app


def create_app(settings: Settings | None = None, *, testing: bool = False) -> Flask:
    settings = settings or Settings.from_env()
    app, api = create_service_app(
        "donations",
        settings,
        title="aidlink donations",
        models=messaging,
        handlers={**org_event_handlers(Organisation)},
        testing=testing,
    )
    api.register_blueprint(org_directory_blueprint("donations", Organisation))
    return app
