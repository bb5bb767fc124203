"""The gateway: the one address clients use. It owns identity and organisations,
and forwards the rest of the API to the service that owns it."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from services.gateway.audit import api as audit_api
from services.gateway.auth import api as auth
from services.gateway.auth.credentials import configure_passwords
from services.gateway.duplicates import api as duplicate_review
from services.gateway.members import api as members_api
from services.gateway.models import messaging
from services.gateway.openapi import install_openapi
from services.gateway.orgs import api as orgs
from services.gateway.places import api as places
from services.gateway.proxy import ROUTES, ServiceClient, install_proxy
from services.gateway.ratelimit import install_rate_limits
from services.gateway.security import install_authentication
from services.gateway.tokens import api as tokens
from services.gateway.verification import api as verification
from services.gateway.web import install_web
from services.gateway.webhooks import api as webhooks_api
from services.gateway.webhooks.tasks import HANDLERS as WEBHOOK_HANDLERS
from services.gateway.webhooks.tasks import register_webhook_tasks
from shared.config import Settings
from shared.idempotency import install_idempotency
from shared.web import create_service_app


def _forwarded(path: str) -> bool:
    """Is ``path`` forwarded to a service (which then honours the key itself)?"""
    parts = path.split("/")
    return len(parts) > 3 and parts[3] in ROUTES


def create_app(settings: Settings | None = None, *, testing: bool = False) -> Flask:
    settings = settings or Settings.from_env()
    # The merged document replaces flask-smorest's own at /api/v1/openapi.json.
    app, api = create_service_app(
        "gateway",
        settings,
        title="aidlink gateway",
        models=messaging,
        handlers=WEBHOOK_HANDLERS,
        # The gateway consumes events only to fan them out to webhooks: every one
        # counts, whatever order they arrive in.
        ordered_events=False,
        testing=testing,
        openapi_json=False,
        internal_auth=False,
    )
    if settings.trusted_proxies:
        # Behind that many reverse proxies the client is named by X-Forwarded-For (and
        # the scheme by X-Forwarded-Proto): the
        # sign-in limit, rate limits, idempotency keys and the audit log use it.
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops
        )
    api.spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT or API token"}
    )
    configure_passwords(settings)
    # Authentication first: the rate limits key on the caller it finds.
    install_authentication(app)
    install_rate_limits(app, settings)
    # The gateway's own POSTs; forwarded ones carry the key to the service that owns them.
    install_idempotency(
        app,
        messaging.idempotency,
        app.extensions["aidlink"].session_factory,
        skip=_forwarded,
    )
    for blueprint in (
        auth.blp,
        orgs.blp,
        members_api.blp,
        places.blp,
        verification.blp,
        duplicate_review.blp,
        tokens.blp,
        audit_api.blp,
        webhooks_api.blp,
    ):
        api.register_blueprint(blueprint)
    register_webhook_tasks(app.extensions["aidlink"])
    client = ServiceClient(settings)
    install_openapi(app, api, client)
    install_proxy(app, client)
    # The web UI at /, over the same API.
    install_web(app, settings)
    return app
