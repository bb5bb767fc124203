"""The gateway: the one address clients use. It owns identity and organisations,
and forwards the rest of the API to the service that owns it."""

from __future__ import annotations

from flask import Flask

from services.gateway import orgs
from services.gateway.models import messaging
from services.gateway.openapi import install_openapi
from services.gateway.proxy import ServiceClient, install_proxy
from shared.config import Settings
from shared.web import create_service_app


def create_app(settings: Settings | None = None, *, testing: bool = False) -> Flask:
    settings = settings or Settings.from_env()
    # The merged document replaces flask-smorest's own at /api/v1/openapi.json.
    app, api = create_service_app(
        "gateway",
        settings,
        title="aidlink gateway",
        models=messaging,
        testing=testing,
        openapi_json=False,
    )
    api.register_blueprint(orgs.blp)
    client = ServiceClient(settings)
    install_openapi(app, api, client)
    install_proxy(app, client)
    return app
