"""The web UI's way into the API: the gateway's own ``/api/v1`` called in-process.

Every page goes through the same endpoints as any other client, so authentication,
roles and organisation scope, rate limits, idempotency, the audit log and the
services' own checks all apply unchanged. Each call runs as a nested request in a
fresh application context, so it gets its own database session (a snapshot read
before a write in the same page would otherwise be stale on SQLite) and its own
identity.

The signed-in user's tokens live in the cookie session; an expired access token is
refreshed once with the refresh token, and a sign-in that cannot be refreshed ends
the UI session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, request, session
from werkzeug.datastructures import Headers
from werkzeug.test import Client, EnvironBuilder

from shared.observability import CORRELATION_ID_HEADER, REQUEST_ID_HEADER, request_id_var

API = "/api/v1"
# Refresh this many seconds before the access token runs out, so a page never fails
# halfway through its calls.
REFRESH_MARGIN = 30


class SignInRequired(Exception):
    """The page needs a signed-in user, and there is none (or the sign-in ended)."""


@dataclass
class ApiResponse:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def errors(self) -> dict[str, list[str]]:
        """A problem's messages per field (``lines.0.quantity``), else nothing."""
        if isinstance(self.body, dict) and isinstance(self.body.get("errors"), dict):
            return {str(k): [str(m) for m in v] for k, v in self.body["errors"].items()}
        return {}

    @property
    def detail(self) -> str:
        if isinstance(self.body, dict):
            return str(self.body.get("detail") or self.body.get("title") or "")
        return ""


def _language_header() -> str:
    from services.gateway.web.i18n import current_language

    return "zh-CN,zh;q=0.9" if current_language() == "zh" else "en"


def raw_call(
    method: str,
    path: str,
    *,
    token: str | None = None,
    json: Any = None,
    data: Any = None,
    query: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    content_type: str | None = None,
    if_match: str | None = None,
) -> ApiResponse:
    """One call to the gateway's API as a nested request, with ``token`` as the caller.
    ``content_type`` sends ``data`` as a raw body of that type (a CSV batch);
    ``if_match`` is the ETag an update was based on."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    headers = Headers({"Accept-Language": _language_header()})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    if if_match:
        headers["If-Match"] = if_match
    # The page's request id travels on, so the audit log and the services' logs tie
    # each API call to the page that made it.
    request_id = request_id_var.get()
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
        headers[CORRELATION_ID_HEADER] = request_id
    builder = EnvironBuilder(
        path=API + path,
        method=method,
        headers=headers,
        json=json,
        data=data,
        query_string=query,
        content_type=content_type,
        environ_base={"REMOTE_ADDR": request.remote_addr or "127.0.0.1"},
    )
    with app.app_context():
        try:
            response = Client(app, use_cookies=False).open(builder)
        finally:
            builder.close()
        try:
            body: Any = response.get_data()
            answer_type = response.headers.get("Content-Type", "")
            if "json" in answer_type:
                body = response.get_json(silent=True)
            return ApiResponse(response.status_code, body, dict(response.headers))
        finally:
            response.close()


def signed_in() -> bool:
    return bool(session.get("access_token"))


def start_session(tokens: dict[str, Any]) -> None:
    """Keep a token pair from sign-in or refresh in the cookie session."""
    session["access_token"] = tokens["access_token"]
    session["refresh_token"] = tokens["refresh_token"]
    session["expires_at"] = int(time.time()) + int(tokens.get("expires_in", 0))
    session.permanent = True


def end_session() -> None:
    for key in ("access_token", "refresh_token", "expires_at"):
        session.pop(key, None)


def _refresh() -> bool:
    refresh_token = session.get("refresh_token")
    if not refresh_token:
        return False
    answer = raw_call("POST", "/auth/refresh", json={"refresh_token": refresh_token})
    if not answer.ok or not isinstance(answer.body, dict):
        end_session()
        return False
    start_session(answer.body)
    return True


def call(method: str, path: str, **kwargs: Any) -> ApiResponse:
    """A call as the signed-in user; raises :class:`SignInRequired` when the sign-in
    has ended. Problems (4xx) come back as the answer, for the page to show."""
    if not signed_in():
        raise SignInRequired
    if int(session.get("expires_at", 0)) - REFRESH_MARGIN <= time.time() and not _refresh():
        raise SignInRequired
    answer = raw_call(method, path, token=session["access_token"], **kwargs)
    if answer.status == 401:
        if not _refresh():
            raise SignInRequired
        answer = raw_call(method, path, token=session["access_token"], **kwargs)
        if answer.status == 401:
            end_session()
            raise SignInRequired
    return answer


def get(path: str, **kwargs: Any) -> ApiResponse:
    return call("GET", path, **kwargs)


def post(path: str, **kwargs: Any) -> ApiResponse:
    return call("POST", path, **kwargs)


def patch(path: str, **kwargs: Any) -> ApiResponse:
    return call("PATCH", path, **kwargs)
