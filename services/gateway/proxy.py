"""The gateway's reverse proxy to the services that own each part of the API.

``/api/v1/<segment>/...`` goes to the service that owns ``<segment>``. Connections
are pooled per service, every call has a connect and a read timeout, and the
request and correlation ids travel with it. A service that is down or too slow
answers as a 502 or 504 problem naming it, never as a hang.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Self

import requests
from flask import Blueprint, Flask, Response, current_app, request, stream_with_context
from requests.adapters import HTTPAdapter
from urllib3 import BaseHTTPResponse
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import ProtocolError, ReadTimeoutError
from urllib3.util.retry import Retry
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from shared.config import Settings
from shared.identity import INTERNAL_HEADER, current_identity, internal_token
from shared.observability import (
    CORRELATION_ID_HEADER,
    REQUEST_ID_HEADER,
    correlation_id_var,
    request_id_var,
)
from shared.problems import Problem

log = logging.getLogger(__name__)

# The first path segment under /api/v1 and the service that owns it.
ROUTES: Mapping[str, str] = {
    "donations": "donations",
    "dispatch": "dispatch",
    "catalog": "donations",
    "pledges": "donations",
    "needs": "dispatch",
    "allocations": "dispatch",
    "matching": "dispatch",
    "shipments": "dispatch",
    "transparency": "dispatch",
    "community": "community",
}
# Paths owned by another service than their first segment's: the trace of a pledge is
# dispatch's (it follows the pledge's allocations, shipments and receipts).
ROUTE_OVERRIDES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^/api/v1/pledges/[^/]+/trace$"), "dispatch"),
)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
        # Credentials stop at the gateway; the services get the internal token instead.
        "authorization",
        "cookie",
        INTERNAL_HEADER.lower(),
    }
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_AUDIT_BODY_LIMIT = 64 * 1024
# What the audit keeps of an answer about residents (households, their orders and
# deliveries, cases and their notes, appointed people's names): which record, its
# number and its state, never what it says of a person. Residents' data leaves the
# community service only as counts; the audit log is read by coordinators.
_RESIDENTS_SEGMENTS = frozenset({"community"})
_RESIDENT_FREE_FIELDS = frozenset({"id", "number", "status", "version"})


class _OnceMoreOnAClosedConnection(Retry):
    """A request sent on a pooled connection that the service had just closed (its
    keep-alive ran out as the request left) fails before the service read it: it is
    sent once more, on a new connection, when its method may be repeated (GET, HEAD,
    OPTIONS, PUT, DELETE). A connection that could not be made (refused, or not made
    within the connect timeout) is tried once more whatever the method, since nothing
    was sent; a request the service took too long to answer never is (it may be
    working on it): that is a 504."""

    def _is_read_error(self, err: Exception) -> bool:
        return isinstance(err, ProtocolError)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        if isinstance(error, ReadTimeoutError):
            raise error  # as without retries: the caller answers 504
        return super().increment(method, url, response, error, _pool, _stacktrace)


class ServiceClient:
    """Pooled HTTP connections from the gateway to each service."""

    def __init__(self, settings: Settings, pool_size: int = 20) -> None:
        self.settings = settings
        self.session = requests.Session()
        retries = _OnceMoreOnAClosedConnection(
            total=1,
            connect=1,
            read=1,
            status=0,
            other=0,
            redirect=0,
            allowed_methods=Retry.DEFAULT_ALLOWED_METHODS,
            raise_on_redirect=False,
            raise_on_status=False,
            respect_retry_after_header=False,
        )
        adapter = HTTPAdapter(
            pool_connections=len(ROUTES) + 1, pool_maxsize=pool_size, max_retries=retries
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.timeout = (settings.proxy_connect_timeout, settings.proxy_read_timeout)

    def url(self, service: str, path: str) -> str:
        return f"{self.settings.service_urls[service]}{path}"

    def forward_headers(self, headers: Any, service: str) -> dict[str, str]:
        """The request's headers, less credentials, plus the ids and the caller's
        identity signed for ``service``."""
        forwarded = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
        forwarded[REQUEST_ID_HEADER] = request_id_var.get() or ""
        forwarded[CORRELATION_ID_HEADER] = correlation_id_var.get() or ""
        forwarded[INTERNAL_HEADER] = internal_token(
            current_identity(),
            self.settings.internal_key,
            service,
            self.settings.internal_token_ttl,
        )
        return forwarded

    def call(self, service: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Call ``service``; connection failures and timeouts become problems."""
        kwargs.setdefault("timeout", self.timeout)
        try:
            return self.session.request(method, self.url(service, path), **kwargs)
        except requests.Timeout:
            log.warning("%s did not answer %s %s in time", service, method, path)
            raise Problem(
                504,
                f"The {service} service did not answer in time; try again shortly.",
                slug="upstream-timeout",
                service=service,
            ) from None
        except requests.ConnectionError:
            log.warning("%s is unreachable for %s %s", service, method, path)
            raise Problem(
                502,
                f"The {service} service is unreachable; try again shortly.",
                slug="upstream-unavailable",
                service=service,
            ) from None


def _methods_of_path() -> list[str]:
    """The methods the gateway's own endpoints answer at the request's path (the
    proxy's catch-all aside): a path of the gateway's asked with another method is a
    405 with ``Allow``, not a 404."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    allowed: set[str] = set()
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        try:
            rule, _args = adapter.match(path_info=request.path, method=method, return_rule=True)
        except HTTPException:
            continue
        if not rule.endpoint.startswith("proxy."):
            allowed.add(method)
    if "GET" in allowed:
        allowed.add("HEAD")
    return sorted(allowed | ({"OPTIONS"} if allowed else set()))


def proxy_blueprint(client: ServiceClient) -> Blueprint:
    blp = Blueprint("proxy", __name__)

    @blp.route(
        "/api/v1/<segment>/<path:rest>",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    )
    @blp.route(
        "/api/v1/<segment>",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        defaults={"rest": ""},
    )
    def forward(segment: str, rest: str) -> Response:
        service = next(
            (owner for pattern, owner in ROUTE_OVERRIDES if pattern.match(request.path)),
            ROUTES.get(segment),
        )
        if service is None:
            allowed = _methods_of_path()
            if allowed:
                # The gateway's own endpoint, asked with another method.
                raise MethodNotAllowed(valid_methods=allowed)
            raise Problem(404, f"No API at /api/v1/{segment}.", slug="no-such-endpoint")
        upstream = client.call(
            service,
            request.method,
            request.full_path.rstrip("?") if request.query_string else request.path,
            headers=client.forward_headers(request.headers, service),
            data=request.get_data(),
            allow_redirects=False,
            stream=True,
        )
        headers = [(k, v) for k, v in upstream.raw.headers.items() if k.lower() not in HOP_BY_HOP]
        if request.method in SAFE_METHODS and _unbounded(upstream):
            # An export: passed on as it comes, so the gateway holds a chunk at a time.
            return Response(
                stream_with_context(_relayed(upstream)),
                status=upstream.status_code,
                headers=headers,
            )
        body = upstream.raw.read(decode_content=True)
        upstream.close()
        if request.method not in SAFE_METHODS and upstream.status_code < 400:
            _audit_forwarded_write(segment, upstream.status_code, upstream.headers, body)
        return Response(body, status=upstream.status_code, headers=headers)

    return blp


# Answers at most this long (by Content-Length) are read whole before being passed on.
_READ_WHOLE = 1024 * 1024


def _unbounded(upstream: requests.Response) -> bool:
    """A streamed answer (no Content-Length), or a long one."""
    length = upstream.headers.get("Content-Length")
    return length is None or not length.isdigit() or int(length) > _READ_WHOLE


def _relayed(upstream: requests.Response) -> Iterator[bytes]:
    try:
        yield from upstream.raw.stream(64 * 1024, decode_content=True)
    finally:
        upstream.close()


def _audit_forwarded_write(segment: str, status: int, headers: Any, body: bytes) -> None:
    """An audit row for a write a service accepted: what was asked and what it answered."""
    from services.gateway.audit import service as audit
    from shared.web import runtime

    after: dict[str, Any] | None = None
    if "json" in headers.get("Content-Type", "") and len(body) <= _AUDIT_BODY_LIMIT:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            after = parsed
            if segment in _RESIDENTS_SEGMENTS:
                after = {k: v for k, v in parsed.items() if k in _RESIDENT_FREE_FIELDS}
    target_id = None
    if after is not None and isinstance(after.get("id"), str):
        target_id = after["id"]
    else:
        found = _UUID.search(request.path)
        target_id = found.group(0) if found else None
    action = f"{request.method} {_UUID.sub('{id}', request.path)}"
    try:
        with runtime().unit_of_work() as session:
            audit.write(
                session, action, segment, target_id, after={"status": status, **(after or {})}
            )
    except Exception:
        # The service has already made the change; losing its audit row must not turn
        # the answer into an error the client would retry.
        log.exception("could not write the audit row for %s", action)


def install_proxy(app: Flask, client: ServiceClient) -> None:
    app.extensions["aidlink.services"] = client
    app.register_blueprint(proxy_blueprint(client))
