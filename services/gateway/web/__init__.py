"""The web UI: server-rendered pages at ``/`` on the gateway, in English and Chinese.

Pages call the gateway's own API in-process as the signed-in user (see ``api``), so
they follow the same rules as every other client. The cookie session holds the
user's tokens (HttpOnly, SameSite=Lax, Secure when ``AIDLINK_WEB_SECURE_COOKIES`` is
set); every form carries a CSRF token. Each area of the UI (accounts, donors, recipients,
coordinators, shipments and receipts, traces, supply gaps, the public ledger, the pages
inside a community) is a module adding its pages to one blueprint.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from datetime import timedelta

from flask import Flask
from flask_babel import Babel

from services.gateway.web import (  # noqa: F401
    account,
    community,
    community_manage,
    coordinator,
    donor,
    gaps,
    help_sessions,
    hotline_calls,
    members,
    places,
    recipient,
    shipments,
    traces,
    transparency,
)
from services.gateway.web.base import bp, csrf
from services.gateway.web.i18n import select_locale
from shared.config import Settings

TRANSLATIONS = os.path.join(os.path.dirname(__file__), "translations")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def install_web(app: Flask, settings: Settings) -> None:
    """Serve the web UI from ``app`` (the gateway)."""
    # A key of its own for the cookie session, derived from the installation's secret,
    # so no second secret has to be kept and the access-token key is never used twice.
    app.secret_key = hmac.new(
        settings.secret_key.encode(), b"aidlink web session", hashlib.sha256
    ).hexdigest()
    app.config.update(
        SESSION_COOKIE_NAME="aidlink_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=_truthy(os.environ.get("AIDLINK_WEB_SECURE_COOKIES")),
        # As long as the refresh token: the sign-in's own expiry ends it sooner.
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.refresh_token_ttl),
        # CSRF is checked by the UI's blueprint only: the API takes bearer tokens.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_SSL_STRICT=True,
        BABEL_TRANSLATION_DIRECTORIES=TRANSLATIONS,
        BABEL_DEFAULT_LOCALE="en",
    )
    csrf.init_app(app)
    Babel(app, locale_selector=select_locale)
    app.register_blueprint(bp)
