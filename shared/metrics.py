"""Prometheus metrics of a service: request latency, event lag, outbox backlog, queue
depth and matching time, at ``GET /metrics`` of each service's web app.

Counters and histograms live in the process that observes them (a gunicorn worker
for requests, a Celery pool process for events and matching). With
``PROMETHEUS_MULTIPROC_DIR`` set, as the Procfile does for each service's web
processes and worker together, prometheus_client's multiprocess mode adds them up
across processes; without it, /metrics shows the serving process alone (fine for one
process, or for a worker exposing its own port, see ``serve_worker_metrics``).

Backlogs are read when scraped, from the service's database and the broker, so
they are right whichever process answers.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from shared.config import Settings


class ServiceRuntime(Protocol):
    """What the metrics read of a service's runtime (``shared.web.ServiceRuntime``,
    which installs them: a protocol here, so that neither module imports the other)."""

    @property
    def name(self) -> str: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def models(self) -> Any: ...
    @property
    def session_factory(self) -> Any: ...
    @property
    def read_session_factory(self) -> Any: ...
    @property
    def celery(self) -> Any: ...
    @property
    def catch_up(self) -> Any: ...


log = logging.getLogger(__name__)

REQUEST_LATENCY = Histogram(
    "aidlink_http_request_duration_seconds",
    "Time to answer an HTTP request, by route and status.",
    ["service", "method", "route", "status"],
)
EVENTS_HANDLED = Counter(
    "aidlink_events_handled",
    "Events taken off the service's queue, by type and outcome.",
    ["service", "type", "outcome"],
)
EVENT_LAG = Histogram(
    "aidlink_event_lag_seconds",
    "From an event's occurred_at to its consumer having handled it.",
    ["service", "type"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
MATCHING_SECONDS = Histogram(
    "aidlink_matching_duration_seconds",
    "Time the matcher took to plan one run, by trigger.",
    ["service", "trigger"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def observe_event(service: str, message: Any, outcome: str) -> None:
    """Count one handled event and, when it took effect, how long after it happened."""
    kind = message.get("type") if isinstance(message, dict) else None
    kind = kind if isinstance(kind, str) and len(kind) <= 64 else "invalid"
    EVENTS_HANDLED.labels(service, kind, outcome).inc()
    if outcome != "applied" or not isinstance(message, dict):
        return
    try:
        occurred = datetime.fromisoformat(str(message["occurred_at"]))
    except (KeyError, ValueError):
        return
    if occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=UTC)
    EVENT_LAG.labels(service, kind).observe(
        max(0.0, (datetime.now(UTC) - occurred).total_seconds())
    )


class BacklogCollector(Collector):
    """Gauges read when scraped: unpublished outbox rows and the age of the oldest,
    dead letters, messages waiting on the service's queue, and per subscriber the
    events it has not yet confirmed and those the catch-up sent it again."""

    def __init__(self, rt: ServiceRuntime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        rt = self.rt
        backlog = GaugeMetricFamily(
            "aidlink_outbox_backlog", "Events written but not yet published.", labels=["service"]
        )
        oldest = GaugeMetricFamily(
            "aidlink_outbox_oldest_seconds",
            "Age of the oldest unpublished event (0 when none).",
            labels=["service"],
        )
        dead = GaugeMetricFamily(
            "aidlink_dead_letters", "Events set aside as unprocessable.", labels=["service"]
        )
        depth = GaugeMetricFamily(
            "aidlink_queue_depth", "Messages waiting on the service's queue.", labels=["queue"]
        )
        if rt.models is not None:
            outbox = rt.models.outbox
            factory = rt.read_session_factory or rt.session_factory
            try:
                with factory() as session:
                    count, first = session.execute(
                        select(func.count(), func.min(outbox.created_at)).where(
                            outbox.published_at.is_(None)
                        )
                    ).one()
                    letters = session.scalar(
                        select(func.count()).select_from(rt.models.dead_letters)
                    )
                backlog.add_metric([rt.name], float(count or 0))
                age = 0.0
                if first is not None:
                    if first.tzinfo is None:
                        first = first.replace(tzinfo=UTC)
                    age = max(0.0, (datetime.now(UTC) - first).total_seconds())
                oldest.add_metric([rt.name], age)
                dead.add_metric([rt.name], float(letters or 0))
            except Exception:
                log.warning("metrics: could not read the outbox of %s", rt.name, exc_info=True)
        try:
            with rt.celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=3)
                declared = conn.default_channel.queue_declare(rt.name, passive=True)
                depth.add_metric([rt.name], float(declared.message_count or 0))
        except Exception:
            log.warning("metrics: could not read the depth of queue %s", rt.name, exc_info=True)
        yield from (backlog, oldest, dead, depth)
        yield from self._catch_up()

    def _catch_up(self) -> Iterator[Metric]:
        unconfirmed = GaugeMetricFamily(
            "aidlink_events_unconfirmed",
            "Events published to a subscriber that it has not yet confirmed taking in.",
            labels=["producer", "subscriber"],
        )
        oldest = GaugeMetricFamily(
            "aidlink_events_unconfirmed_oldest_seconds",
            "Age of the oldest event a subscriber has not yet confirmed (0 when none); "
            "past AIDLINK_EVENT_DELIVERY_BOUND it is late.",
            labels=["producer", "subscriber"],
        )
        resent = CounterMetricFamily(
            "aidlink_events_resent",
            "Copies of events the catch-up sent a subscriber again after it reported them "
            "missing (by the producer).",
            labels=["producer", "subscriber"],
        )
        recovered = CounterMetricFamily(
            "aidlink_events_recovered",
            "Events taken in from a copy the catch-up sent again, the broker having lost "
            "them (by the subscriber).",
            labels=["producer", "subscriber"],
        )
        catch_up = getattr(self.rt, "catch_up", None)
        if catch_up is None or not catch_up.enabled:
            return
        try:
            standing = catch_up.behind()
            taken_again = catch_up.recovered()
        except Exception:
            log.warning("metrics: could not read the catch-up of %s", self.rt.name, exc_info=True)
            return
        now = datetime.now(UTC)
        for entry in standing:
            labels = [entry.producer, entry.subscriber]
            unconfirmed.add_metric(labels, float(entry.unconfirmed))
            age = 0.0
            if entry.oldest is not None:
                first = entry.oldest if entry.oldest.tzinfo else entry.oldest.replace(tzinfo=UTC)
                age = max(0.0, (now - first).total_seconds())
            oldest.add_metric(labels, age)
            resent.add_metric(labels, float(entry.resent))
        for producer, (n, _last) in taken_again.items():
            recovered.add_metric([producer, self.rt.name], float(n))
        yield from (unconfirmed, oldest, resent, recovered)


def registry_for(rt: ServiceRuntime) -> CollectorRegistry:
    """What /metrics shows: this process's (or all processes') metrics and the backlogs."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        registry.register(_OwnSeries(multiprocess.MultiProcessCollector(None), rt.name))
    else:
        registry = CollectorRegistry()
        for collector in _process_collectors():
            registry.register(collector)
    registry.register(BacklogCollector(rt))
    return registry


class _OwnSeries(Collector):
    """The series that name this service: processes of several services may share one
    multiprocess folder (the embedded stack serves the back ends from one web process,
    ``services/backends.py``), and each service's /metrics shows its own. Every series
    of this module names its service, so none is counted by two services."""

    def __init__(self, inner: Collector, service: str) -> None:
        self.inner = inner
        self.service = service

    def collect(self) -> Iterator[Metric]:
        for metric in self.inner.collect():
            metric.samples = [s for s in metric.samples if s.labels.get("service") == self.service]
            yield metric


class _DefaultRegistry(Collector):
    """The process-wide registry (this module's metrics, the process's own), seen from
    an app's registry without registering anything twice when several apps share a
    process, as in tests."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def _process_collectors() -> list[Collector]:
    return [_DefaultRegistry()]


def install_metrics(app: Flask, rt: ServiceRuntime) -> None:
    """Time every request and serve ``GET /metrics``, behind ``AIDLINK_METRICS_TOKEN``
    as a bearer token when that is set."""
    registry = registry_for(rt)

    @app.before_request
    def _start_clock() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.pop("metrics_started", None)
        if started is not None and request.path != "/metrics":
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            REQUEST_LATENCY.labels(
                rt.name, request.method, route, str(response.status_code)
            ).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        token = rt.settings.metrics_token
        if token:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                return Response(
                    "metrics need the bearer token in AIDLINK_METRICS_TOKEN\n",
                    status=401,
                    mimetype="text/plain",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def serve_worker_metrics(rt: ServiceRuntime, port: int) -> None:
    """Serve a Celery worker's metrics on ``port`` (its pool processes' too, in
    multiprocess mode): for deployments where the worker runs apart from the web
    processes, e.g. in its own container."""
    start_http_server(port, registry=registry_for(rt))
    log.info("worker metrics of %s on port %d", rt.name, port)
