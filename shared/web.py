"""What every service's Flask app is made of.

``create_service_app`` gives a service its database, its outbox and inbox, its
Celery app, flask-smorest with problem+json errors, request and correlation ids,
structured logs, and ``/healthz`` and ``/readyz``. The service adds its blueprints.
"""

from __future__ import annotations

import http
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, current_app, g, has_request_context, request
from flask_smorest import Api
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from shared.catchup import CatchUp
from shared.config import Settings
from shared.db import conflict_to_retry, make_engine, make_session_factory
from shared.display_fields import check_parameter as check_display_parameter
from shared.idempotency import install_idempotency, is_bookkeeping
from shared.identity import install_internal_auth
from shared.inbox import Handler, Inbox
from shared.input_guard import install_input_guard
from shared.metrics import install_metrics, observe_event, serve_worker_metrics
from shared.observability import (
    CORRELATION_ID_HEADER,
    REQUEST_ID_HEADER,
    client_ip_var,
    configure_logging,
    correlation_id_var,
    new_id,
    request_id_var,
)
from shared.outbox import Outbox, celery_publisher, redis_started_at
from shared.problems import (
    PROBLEM_CONTENT_TYPE,
    Problem,
    ProblemSchema,
    install_problem_handlers,
)
from shared.runtime import MessagingModels, ServiceRuntime, define_messaging_models
from shared.taskqueue import make_celery

__all__ = ["MessagingModels", "ServiceRuntime", "define_messaging_models"]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def runtime() -> ServiceRuntime:
    """The runtime of the service whose app is current."""
    rt: ServiceRuntime = current_app.extensions["aidlink"]
    return rt


def db_session() -> Session:
    """The request's session for reading; closed at teardown. Write in
    :meth:`ServiceRuntime.unit_of_work`, never here."""
    if "db_session" not in g:
        rt = runtime()
        g.db_session = (rt.read_session_factory or rt.session_factory)()
    session: Session = g.db_session
    return session


class ServiceApi(Api):
    ERROR_SCHEMA = ProblemSchema

    def _register_responses(self) -> None:
        """flask-smorest's reusable responses, with errors documented as what they are:
        ``application/problem+json`` (RFC 9457), not ``application/json``."""
        from flask_smorest.utils import prepare_response

        for status in http.HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            content_type = self.DEFAULT_RESPONSE_CONTENT_TYPE
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
                content_type = PROBLEM_CONTENT_TYPE
            prepare_response(response, self.spec, content_type)
            self.spec.components.response(status.name, response, lazy=True)
        response = {
            "description": "Default error response",
            "schema": self.ERROR_SCHEMA,
        }
        prepare_response(response, self.spec, PROBLEM_CONTENT_TYPE)
        self.spec.components.response("DEFAULT_ERROR", response, lazy=True)


#: How many times a service runs a write request whose transaction the database ended
#: to break a deadlock or a serialization conflict (``shared.db.conflict_to_retry``).
CONFLICT_ATTEMPTS = 3


def retries_on_conflict(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a service's write view as one to run again when the database ends its
    transaction on a conflict (see :class:`ServiceFlask`). Only for a view whose work is
    one transaction with no effect outside its database before the commit: no call to
    another system, no upload read from its stream, no commit of its own before the
    work's. Put it above the view's other decorators."""
    view.retries_on_conflict = True  # type: ignore[attr-defined]
    return view


def _marked_to_retry(app: Flask) -> bool:
    rule = request.url_rule
    view = app.view_functions.get(rule.endpoint) if rule is not None else None
    view_class = getattr(view, "view_class", None)
    if view_class is not None:
        view = getattr(view_class, request.method.lower(), None)
    return bool(getattr(view, "retries_on_conflict", False))


def _note_work_committed(session: Session) -> None:
    """A transaction of the request's own committed (not a lock's or a key's
    bookkeeping): from now on, running its view again would do work twice."""
    # A savepoint released is not a commit: its work commits, or not, with the
    # transaction around it.
    if (
        has_request_context()
        and not session.in_nested_transaction()
        and not is_bookkeeping(session)
    ):
        g.work_committed = True


class ServiceFlask(Flask):
    """A service's Flask app. A write view marked :func:`retries_on_conflict` whose
    transaction PostgreSQL ended to break a deadlock with a concurrent one (or on a
    serialization conflict) is run again, up to ``CONFLICT_ATTEMPTS`` times in all,
    after a short random pause: nothing of the ended transaction was kept. It is not
    run again once a transaction of its own has committed. Unmarked views, and a
    conflict that lasts, are answered 503 with Retry-After (``shared.problems``)."""

    def dispatch_request(self) -> Any:
        if request.method in ("GET", "HEAD", "OPTIONS") or not _marked_to_retry(self):
            return super().dispatch_request()
        # What the request committed before its view (an Idempotency-Key's record).
        g.pop("work_committed", None)
        attempt = 1
        while True:
            try:
                return super().dispatch_request()
            except DBAPIError as exc:
                if (
                    not conflict_to_retry(exc)
                    or attempt >= CONFLICT_ATTEMPTS
                    or g.get("work_committed")
                ):
                    raise
                log.info(
                    "%s %s: %s; running it again (attempt %d of %d)",
                    request.method,
                    request.path,
                    type(exc.orig).__name__,
                    attempt + 1,
                    CONFLICT_ATTEMPTS,
                )
                db = g.pop("db_session", None)
                if db is not None:
                    db.close()
                time.sleep(random.uniform(0.01, 0.05) * attempt)  # noqa: S311 (a pause, not a secret)
                attempt += 1


def create_service_app(
    name: str,
    settings: Settings,
    *,
    title: str,
    models: MessagingModels,
    handlers: Mapping[str, Handler] | None = None,
    testing: bool = False,
    openapi_json: bool = True,
    internal_auth: bool = True,
    ordered_events: bool = True,
) -> tuple[Flask, ServiceApi]:
    """A service's app. With ``internal_auth`` (every service but the gateway) each API
    call must carry the gateway's signed internal token."""
    configure_logging(name, settings.log_format, settings.log_level)
    app = ServiceFlask(f"aidlink.{name}") if internal_auth else Flask(f"aidlink.{name}")
    app.config.update(
        TESTING=testing,
        API_TITLE=title,
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        # Without a prefix flask-smorest serves no document of its own (the gateway
        # serves a merged one).
        OPENAPI_URL_PREFIX=API_PREFIX if openapi_json else None,
        OPENAPI_JSON_PATH="openapi.json",
        MAX_CONTENT_LENGTH=25 * 1024 * 1024,
        JSON_SORT_KEYS=False,
    )
    api = ServiceApi(app)
    install_problem_handlers(app)
    install_input_guard(app)

    engine = make_engine(settings.database_url(name), pool_size=settings.db_pool_size)
    session_factory = make_session_factory(engine)
    if isinstance(app, ServiceFlask):
        event.listen(session_factory, "after_commit", _note_work_committed)
    celery = make_celery(name, settings, app)
    outbox = Outbox(
        models.outbox,
        session_factory,
        celery_publisher(celery.send_task),
        sweep_grace=settings.outbox_sweep_grace,
        message_max=settings.event_batch_max,
        track_receipt=settings.event_catch_up,
    )
    if settings.broker_is_redis:
        outbox.broker_started = redis_started_at(settings.broker_url)
    if settings.outbox_relay == "background":
        outbox.relay_in_background()
    inbox = Inbox(
        service=name,
        session_factory=session_factory,
        inbox=models.inbox,
        versions=models.versions,
        deliveries=models.deliveries,
        dead_letters=models.dead_letters,
        handlers=handlers or {},
        max_deliveries=settings.max_deliveries,
        ordered=ordered_events,
    )
    read_session_factory = session_factory
    if engine.dialect.name == "sqlite":
        read_engine = make_engine(settings.database_url(name), read_only=True)
        read_session_factory = make_session_factory(read_engine)
    rt = ServiceRuntime(
        name,
        settings,
        engine,
        session_factory,
        celery,
        outbox,
        inbox,
        read_session_factory,
        models,
        CatchUp(
            service=name,
            outbox=outbox,
            inbox=inbox,
            rows=models.catch_up,
            session_factory=session_factory,
            send_task=celery.send_task,
            bound=settings.event_delivery_bound,
            enabled=settings.event_catch_up,
        ),
    )
    app.extensions["aidlink"] = rt
    _register_messaging_tasks(rt)
    _install_request_ids(app)
    if internal_auth:
        install_internal_auth(app, name, settings.internal_key)
        install_idempotency(app, models.idempotency, session_factory)
    _install_health(app, rt)
    install_metrics(app, rt)
    # ``?display=`` is a boolean wherever it is given: refused before any work is done.
    app.before_request(check_display_parameter)

    @app.teardown_appcontext
    def _close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()

    return app, api


def _install_request_ids(app: Flask) -> None:
    @app.before_request
    def _bind_ids() -> None:
        request_id = (request.headers.get(REQUEST_ID_HEADER) or new_id())[:64]
        correlation_id = (request.headers.get(CORRELATION_ID_HEADER) or request_id)[:64]
        g.request_id_token = request_id_var.set(request_id)
        g.correlation_id_token = correlation_id_var.set(correlation_id)
        g.client_ip_token = client_ip_var.set(request.remote_addr)

    @app.after_request
    def _echo_ids(response: Response) -> Response:
        request_id = request_id_var.get()
        if request_id:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response

    @app.teardown_request
    def _unbind_ids(_exc: BaseException | None) -> None:
        for name, var in (
            ("request_id_token", request_id_var),
            ("correlation_id_token", correlation_id_var),
            ("client_ip_token", client_ip_var),
        ):
            token = g.pop(name, None)
            if token is not None:
                var.reset(token)


def _install_health(app: Flask, rt: ServiceRuntime) -> None:
    @app.get("/healthz")
    def healthz() -> Any:
        return {"status": "ok", "service": rt.name}

    @app.get("/readyz")
    def readyz() -> Any:
        checks: dict[str, str] = {}
        try:
            with rt.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        try:
            with rt.celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=3)
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"unreachable: {type(exc).__name__}"
        if all(v == "ok" for v in checks.values()):
            return {"status": "ready", "service": rt.name, "checks": checks}
        failing = ", ".join(k for k, v in checks.items() if v != "ok")
        return Problem(
            503,
            f"{rt.name} is not ready: {failing} unreachable.",
            slug="not-ready",
            checks=checks,
        ).response()


# An event waiting for its predecessor is retried this often, at most this far apart
# (about three hours in all): far longer than the outbox sweep needs to catch up.
OUT_OF_ORDER_RETRIES = 60
OUT_OF_ORDER_MAX_DELAY = 180.0


def _register_messaging_tasks(rt: ServiceRuntime) -> None:
    from celery.signals import worker_ready

    from shared.inbox import OutOfOrder
    from shared.taskqueue import TRANSIENT_ERRORS

    @worker_ready.connect(weak=False)
    def _serve_metrics(sender: Any = None, **_kwargs: Any) -> None:
        port = rt.settings.worker_metrics_port
        if port and getattr(sender, "app", None) is rt.celery:
            serve_worker_metrics(rt, port)

    # Transient database and broker errors are retried with backoff and jitter, as
    # often as an event may be delivered.
    retrying: dict[str, Any] = {
        "shared": False,
        "autoretry_for": TRANSIENT_ERRORS,
        "retry_backoff": True,
        "retry_backoff_max": 300,
        "retry_jitter": True,
        "max_retries": rt.settings.max_deliveries,
    }

    @rt.celery.task(name=f"{rt.name}.handle_event", bind=True, **retrying)
    def handle_event(self: Any, message: Any, caught_up: bool = False) -> str:
        try:
            outcome = rt.inbox.handle(message, caught_up=caught_up).value
        except OutOfOrder as exc:
            # Its predecessor has not arrived yet: an expected wait, not a failure.
            # The inbox did not count this delivery; wait longer each time, for as
            # long as a broker outage or a slow sweep may take.
            delay = min(OUT_OF_ORDER_MAX_DELAY, 2 ** min(self.request.retries, 8))
            raise self.retry(
                exc=exc,
                countdown=delay * (0.5 + random.random()),  # noqa: S311 (jitter, not secrets)
                max_retries=OUT_OF_ORDER_RETRIES,
            ) from None
        observe_event(rt.name, message, outcome)
        return outcome

    @rt.celery.task(name=f"{rt.name}.handle_events", **retrying)
    def handle_events(messages: Any, caught_up: bool = False) -> dict[str, int]:
        """Several events of one commit, applied in one transaction (Inbox.handle_many);
        one that must wait for a predecessor goes on as a ``handle_event`` task of its
        own, with that task's patient retries. ``caught_up``: copies the catch-up sent
        again (shared/catchup.py)."""
        if not isinstance(messages, list):
            messages = [messages]
        handled, again = rt.inbox.handle_many(messages, caught_up=caught_up)
        try:
            for message in again:
                handle_event.apply_async(
                    args=[message],
                    kwargs={"caught_up": caught_up} if caught_up else {},
                    queue=rt.name,
                    countdown=1.0,
                )
        except Exception as exc:
            # Not acknowledged yet: the whole batch is tried again, and what took
            # effect is recognised as a duplicate.
            raise ConnectionError(f"could not queue {len(again)} event(s) again: {exc}") from exc
        outcomes: dict[str, int] = {}
        for message, outcome in handled:
            observe_event(rt.name, message, outcome.value)
            outcomes[outcome.value] = outcomes.get(outcome.value, 0) + 1
        if again:
            outcomes["again"] = len(again)
        return outcomes

    @rt.celery.task(
        name=f"{rt.name}.sweep_outbox", shared=False, time_limit=120, soft_time_limit=100
    )
    def sweep_outbox() -> int:
        from shared import idempotency

        if rt.models is not None:
            idempotency.sweep(rt.models.idempotency, rt.session_factory)
        sent = rt.outbox.sweep()
        if sent:
            log.warning("outbox sweep published %d event(s) the relay had not", sent)
        return sent

    # The catch-up (shared/catchup.py): beat asks, subscribers answer, the producer
    # sends again what is missing. Each step that fails is retried, or left to the
    # next round.
    @rt.celery.task(name=f"{rt.name}.catch_up", shared=False, time_limit=120, soft_time_limit=100)
    def catch_up() -> dict[str, int]:
        assert rt.catch_up is not None
        return rt.catch_up.ask()

    @rt.celery.task(name=f"{rt.name}.report_received", **retrying)
    def report_received(
        producer: str, ids: list[str], asked_at: str | None = None
    ) -> dict[str, int]:
        assert rt.catch_up is not None
        taken, missing = rt.catch_up.report(producer, ids, asked_at)
        return {"taken": taken, "missing": missing}

    @rt.celery.task(name=f"{rt.name}.resend_missing", **retrying)
    def resend_missing(
        subscriber: str, taken: list[str], missing: list[str], asked_at: str | None = None
    ) -> int:
        assert rt.catch_up is not None
        return rt.catch_up.on_answer(subscriber, taken, missing, asked_at)

    @rt.celery.task(
        name=f"{rt.name}.archive_events", shared=False, time_limit=1800, soft_time_limit=1750
    )
    def archive_old_events() -> dict[str, int]:
        from shared.event_archive import archive_events

        assert rt.models is not None
        return archive_events(
            service=rt.name,
            models=rt.models,
            session_factory=rt.session_factory,
            retention_days=rt.settings.event_retention_days,
            directory=rt.settings.event_archive_path,
        )
