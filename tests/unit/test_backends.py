"""The embedded stack's one web process for the back ends (services/backends.py): each
request goes to the app of the port it came in on, and each service's /metrics shows
its own series when several services share a metrics folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from werkzeug.test import Client

from services import backends
from shared.config import ConfigError
from shared.metrics import _OwnSeries

BINDS = {
    "DONATIONS_BIND": "127.0.0.1:18501",
    "DISPATCH_BIND": "127.0.0.1:18502",
    "COMMUNITY_BIND": "127.0.0.1:18503",
}


def test_each_service_is_found_by_its_port() -> None:
    assert backends.ports({}) == {8001: "donations", 8002: "dispatch", 8003: "community"}
    assert backends.ports(BINDS) == {18501: "donations", 18502: "dispatch", 18503: "community"}


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"DISPATCH_BIND": "127.0.0.1:18501"}, "DISPATCH_BIND gives port 18501, which DONATIONS"),
        ({"COMMUNITY_BIND": "localhost"}, "COMMUNITY_BIND must be host:port, got 'localhost'"),
    ],
)
def test_a_port_given_twice_or_not_at_all_is_refused_by_name(
    changes: dict[str, str], said: str
) -> None:
    with pytest.raises(ConfigError, match=said):
        backends.ports({**BINDS, **changes})


def test_requests_reach_the_app_of_their_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIDLINK_VAR_DIR", str(tmp_path))
    for name, bind in BINDS.items():
        monkeypatch.setenv(name, bind)
    client = Client(backends.create_app())
    for port, service in ((18501, "donations"), (18502, "dispatch"), (18503, "community")):
        answer = client.get("/healthz", base_url=f"http://127.0.0.1:{port}")
        assert answer.status_code == 200
        assert answer.json == {"status": "ok", "service": service}
    stray = client.get("/healthz", base_url="http://127.0.0.1:18504")
    assert stray.status_code == 404
    assert b"No service is served on port '18504'" in stray.data


class _Shared(Collector):
    """What a metrics folder shared by donations and dispatch holds."""

    def collect(self) -> Iterator[Metric]:
        handled = CounterMetricFamily(
            "aidlink_events_handled", "Events handled.", labels=["service", "type"]
        )
        handled.add_metric(["donations", "allocation.proposed"], 3)
        handled.add_metric(["dispatch", "need.posted"], 5)
        yield handled
        matched = CounterMetricFamily("aidlink_matching_runs", "Runs.", labels=["trigger"])
        matched.add_metric(["event"], 2)
        yield matched


def test_a_service_shows_the_series_that_name_it_and_no_other() -> None:
    seen = {
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for metric in _OwnSeries(_Shared(), "donations").collect()
        for sample in metric.samples
    }
    assert seen == {
        (
            "aidlink_events_handled_total",
            (("service", "donations"), ("type", "allocation.proposed")),
            3.0,
        ),
    }


def test_every_series_of_the_services_names_its_service() -> None:
    """Else a folder shared by several services would show it in none of them."""
    from prometheus_client import Counter, Gauge, Histogram, Summary

    from shared import metrics

    defined = [
        value
        for value in vars(metrics).values()
        if isinstance(value, Counter | Gauge | Histogram | Summary)
    ]
    assert len(defined) >= 4
    for metric in defined:
        assert "service" in metric._labelnames, metric._name
