"""Prometheus metrics: request latency and backlogs at each service's /metrics, event
lag from a real worker process serving its own, and the optional bearer token."""

from __future__ import annotations

import socket
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from services.donations.app import create_app as create_donations
from tests.support.auth import register
from tests.support.stack import Stack, eventually

PLEDGE = {
    "lines": [{"item": "mask", "quantity": "100", "unit": "piece"}],
    "origin": {"region": "4403"},
}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_each_service_shows_request_latency_and_its_backlogs(stack: Stack) -> None:
    client = stack.client()
    donor = register(client, kind="foundation")
    created = client.post("/api/v1/pledges", json=PLEDGE, headers=donor.headers)
    assert created.status_code == 201

    shown = stack.client("donations").get("/metrics")
    assert shown.status_code == 200
    assert shown.mimetype == "text/plain"
    text = shown.get_data(as_text=True)
    count = value(
        text,
        "aidlink_http_request_duration_seconds_count",
        service="donations",
        method="POST",
        route="/api/v1/pledges",
        status="201",
    )
    assert count is not None and count >= 1
    # No worker runs: the donor's org.registered waits on the donations queue (and
    # pledge.created on the dispatch and gateway queues).
    assert value(text, "aidlink_outbox_backlog", service="donations") == 0
    assert value(text, "aidlink_queue_depth", queue="donations") == 1
    assert value(text, "aidlink_dead_letters", service="donations") == 0
    gateway_text = client.get("/metrics").get_data(as_text=True)
    assert value(gateway_text, "aidlink_queue_depth", queue="gateway") is not None
    assert (
        value(
            gateway_text,
            "aidlink_http_request_duration_seconds_count",
            service="gateway",
            method="POST",
            route="/api/v1/<segment>",
            status="201",
        )
        or 0
    ) >= 1


def test_a_worker_serves_its_event_lag(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    stack.start_worker(
        "donations",
        env={
            "AIDLINK_WORKER_METRICS_PORT": str(port),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        },
    )
    # Registering an organisation sends org.registered to the donations worker.
    register(stack.client(), kind="foundation")

    def lag_seen() -> float | None:
        try:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except requests.ConnectionError:
            return None
        handled = value(
            text,
            "aidlink_events_handled_total",
            service="donations",
            type="org.registered",
            outcome="applied",
        )
        lag = value(
            text, "aidlink_event_lag_seconds_count", service="donations", type="org.registered"
        )
        return lag if handled and lag else None

    assert eventually(lag_seen, timeout=60) >= 1


def test_metrics_can_require_a_bearer_token(stack: Stack) -> None:
    app = create_donations(
        stack.settings.with_overrides(metrics_token="scrape-secret"), testing=True
    )
    try:
        client = app.test_client()
        refused = client.get("/metrics")
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        shown = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert shown.status_code == 200
        assert "aidlink_outbox_backlog" in shown.get_data(as_text=True)
    finally:
        app.extensions["aidlink"].dispose()
