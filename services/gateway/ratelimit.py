"""Rate limits at the gateway (Flask-Limiter).

- Sign-in and token refresh: ``ratelimit_login`` per client address.
- Every write (POST, PUT, PATCH, DELETE): ``ratelimit_writes`` per signed-in user, or
  per client address for anonymous callers, across the whole API.
- The public ledger (its API, exports and web page), and an anonymous seeker following
  their request for help, read without signing in: ``ratelimit_public`` per client
  address. Signed-in callers are not counted.

Counters live in Redis in production, so all gateway processes share them, and in
memory in embedded mode (per process). A breach is a 429 problem with Retry-After.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from shared.config import Settings
from shared.identity import current_identity

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Public pages anyone may read without signing in, and so limited per address.
PUBLIC_PATHS = ("/api/v1/transparency/", "/transparency")
# A seeker who asked for help without signing in follows their request here, with its
# token: limited per address as the public ledger is.
FOLLOW_PATH = re.compile(r"^/api/v1/community/help/requests/[^/]+/status$")


def caller_key() -> str:
    identity = current_identity()
    if identity.user_id is not None:
        return f"user:{identity.user_id}"
    return f"ip:{get_remote_address()}"


def install_rate_limits(app: Flask, settings: Settings) -> Limiter:
    """Install the limiter; call after authentication so limits can key on the user."""
    limiter = Limiter(
        caller_key,
        app=app,
        storage_uri=settings.ratelimit_storage_url,
        application_limits=[settings.ratelimit_writes],
        application_limits_exempt_when=lambda: (
            request.method in SAFE_METHODS or not request.path.startswith("/api/")
        ),
        headers_enabled=True,
        enabled=settings.ratelimit_enabled,
        key_prefix="aidlink-gateway",
        strategy="moving-window",
    )
    app.extensions["aidlink.limiter"] = limiter

    @app.before_request
    def _public_limit() -> None:
        if (
            request.method in SAFE_METHODS
            and (request.path.startswith(PUBLIC_PATHS) or FOLLOW_PATH.match(request.path))
            and current_identity().user_id is None
        ):
            with limiter.limit(
                settings.ratelimit_public, key_func=get_remote_address, scope="public"
            ):
                pass

    return limiter


@contextmanager
def login_limit() -> Iterator[None]:
    """Count this request against the sign-in limit of its client address."""
    limiter: Limiter = current_app.extensions["aidlink.limiter"]
    settings: Settings = current_app.extensions["aidlink"].settings
    with limiter.limit(settings.ratelimit_login, key_func=get_remote_address, scope="login"):
        yield
