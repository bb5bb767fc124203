"""RFC 9457 problem details: the one error format of every aidlink API."""

from __future__ import annotations

import contextlib
import logging
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, json, request
from marshmallow import INCLUDE, Schema, fields
from werkzeug.exceptions import HTTPException

from shared.errors import DomainError

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://aidlink.org/problems/"


class ProblemSchema(Schema):
    """The body of every error response."""

    type = fields.String(metadata={"description": "A URI naming the kind of problem"})
    title = fields.String(metadata={"description": "A short summary of the kind of problem"})
    status = fields.Integer()
    detail = fields.String(metadata={"description": "What went wrong this time"})
    instance = fields.String(metadata={"description": "The request path"})
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "Messages per offending field, e.g. lines.0.quantity"},
    )
    request_id = fields.String()
    # Extension members some problems carry, besides the standard ones.
    required_scope = fields.String(
        metadata={"description": "insufficient-scope: the scope the API token lacks"}
    )
    job_id = fields.String(
        metadata={"description": "A file uploaded before: the import job it became"}
    )
    merged_into_id = fields.String(
        metadata={"description": "organisation-merged: the organisation to act on instead"}
    )
    service = fields.String(metadata={"description": "upstream-*: the service that did not answer"})
    current_status = fields.String(
        metadata={"description": "A transition refused: the shipment's status now"}
    )
    status_now = fields.String(
        metadata={"description": "A change refused: the run's or allocation's status now"}
    )
    need_status = fields.String(metadata={"description": "A change refused: the need's status"})
    shipment_status = fields.String(
        metadata={"description": "A receipt refused: the shipment's status"}
    )
    receipt_id = fields.String(metadata={"description": "The receipt a correction replaces"})

    class Meta:
        # Other extension members (RFC 9457 section 3.2) may appear; clients ignore
        # those they do not know.
        unknown = INCLUDE


class Problem(Exception):
    """Raise from any view or service function to answer with a problem."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        title: str | None = None,
        slug: str | None = None,
        errors: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title or HTTPStatus(status).phrase)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.slug = slug
        self.errors = errors
        self.headers = headers or {}
        self.extensions = extensions

    def response(self) -> Response:
        """The ``application/problem+json`` answer, with the request's path and id."""
        from shared.observability import request_id_var

        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + (self.slug or self.title.lower().replace(" ", "-")),
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            body["detail"] = self.detail
        with contextlib.suppress(RuntimeError):
            body["instance"] = request.path
        if self.errors:
            body["errors"] = self.errors
        request_id = request_id_var.get()
        if request_id:
            body["request_id"] = request_id
        body.update(self.extensions)
        response = Response(json.dumps(body), status=self.status, mimetype=PROBLEM_CONTENT_TYPE)
        for name, value in self.headers.items():
            response.headers[name] = value
        return response


def flatten_errors(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn marshmallow's nested messages into ``{"lines.0.quantity": [...]}``."""
    flat: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            flat.update(flatten_errors(value, name))
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        flat[prefix or "_schema"] = list(messages)
    elif isinstance(messages, list):
        for index, value in enumerate(messages):
            flat.update(flatten_errors(value, f"{prefix}.{index}" if prefix else str(index)))
    else:
        flat[prefix or "_schema"] = [str(messages)]
    return flat


def _from_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    data = getattr(exc, "data", None) or {}
    errors = None
    detail = exc.description if status != 422 else "The request has invalid fields."
    messages = data.get("messages")
    if messages:
        # webargs nests messages under the request location (json, query, ...); the
        # client cares about the field, so drop the location.
        merged: dict[str, Any] = {}
        for location_messages in messages.values():
            if isinstance(location_messages, dict):
                merged.update(location_messages)
            else:
                merged.setdefault("_schema", []).extend(location_messages)
        errors = flatten_errors(merged)
    elif data.get("message"):
        detail = data["message"]
    headers = dict(data.get("headers") or {})
    if exc.response is None:
        headers.update({k: v for k, v in exc.get_headers() if k.lower() != "content-type"})
    return Problem(
        status,
        detail,
        errors=errors,
        headers=headers,
        slug="validation-error" if status == 422 else None,
    ).response()


def problem_of(error: DomainError) -> Problem:
    """The problem document of a domain error."""
    return Problem(
        error.status, error.detail, slug=error.slug, errors=error.errors, **error.details
    )


def install_problem_handlers(app: Flask) -> None:
    """Every error this app answers with, handled or not, is a problem document."""

    @app.errorhandler(Problem)
    def _problem(exc: Problem) -> Response:
        return exc.response()

    @app.errorhandler(DomainError)
    def _domain(exc: DomainError) -> Response:
        return problem_of(exc).response()

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        return _from_http_exception(exc)

    from sqlalchemy.orm.exc import StaleDataError

    @app.errorhandler(StaleDataError)
    def _stale(exc: StaleDataError) -> Response:
        # Optimistic concurrency: another writer changed the row since it was read.
        return Problem(
            409,
            "The resource was changed by someone else meanwhile; read it again and retry.",
            slug="concurrent-change",
        ).response()

    from sqlalchemy.exc import DBAPIError

    @app.errorhandler(DBAPIError)
    def _database(exc: DBAPIError) -> Response:
        from shared.db import conflict_to_retry

        if conflict_to_retry(exc):
            # A deadlock or serialization conflict with a concurrent request (for a
            # view marked to, still there after the service ran it again:
            # shared.web.ServiceFlask): the transaction that met it was not kept, and
            # asking again in a moment will most likely succeed.
            log.warning(
                "gave up on %s %s after concurrent conflicts: %s",
                request.method,
                request.path,
                exc.orig,
            )
            response = Problem(
                503,
                "The request met concurrent changes to the same records, and the "
                "change it was making was not applied; try again in a moment.",
                slug="concurrent-conflict",
            ).response()
            response.headers["Retry-After"] = "1"
            return response
        if not exc.connection_invalidated:
            return _unexpected(exc)
        # The connection died under the request (a database restart or failover; the
        # pool replaces every connection made before): nothing of an unfinished
        # transaction was kept, and asking again at once will most likely succeed.
        log.warning(
            "lost the database connection on %s %s: %s", request.method, request.path, exc.orig
        )
        response = Problem(
            503,
            "The service lost its database connection; try again in a moment.",
            slug="database-connection-lost",
        ).response()
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return Problem(
            500, "An unexpected error occurred; it has been logged with the request id."
        ).response()
