"""A webhook is sent to the address that was checked (no DNS rebinding), with TLS
still verified for the host name, and the target's answer body never reaches the
subscriber."""

from __future__ import annotations

import io
import socket
import uuid
from typing import Any

import pytest
import requests

from services.gateway.webhooks import service
from shared.config import Settings

PUBLIC = "93.184.216.34"


class Resolver:
    """Answers each look-up of a name with the next address in turn."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    def __call__(self, host: str, *_args: Any, **_kw: Any) -> list[Any]:
        self.asked.append(host)
        address = self.answers[min(len(self.asked), len(self.answers)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 443))]


class Sent:
    def __init__(self, status: int, body: bytes = b"") -> None:
        self.status, self.body = status, body
        self.requests: list[requests.PreparedRequest] = []
        self.adapters: list[Any] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> Sent:
        def send(adapter: Any, request: requests.PreparedRequest, **_kw: Any) -> Any:
            return self(adapter, request)

        monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
        return self

    def __call__(self, adapter: Any, request: requests.PreparedRequest, **_kw: Any) -> Any:
        self.requests.append(request)
        self.adapters.append(adapter)
        response = requests.Response()
        response.status_code = self.status
        response._content = self.body
        response.raw = io.BytesIO(self.body)
        response.request = request
        response.url = request.url or ""
        return response


def _post(url: str, settings: Settings | None = None) -> tuple[int | None, str | None]:
    return service._post(
        settings or Settings.from_env({}),
        url,
        "whsec_test",
        b"{}",
        "org.verified",
        uuid.uuid4(),
        1,
    )


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    return Sent(204).install(monkeypatch)


def test_the_connection_goes_to_the_address_checked_not_a_second_answer(
    monkeypatch: pytest.MonkeyPatch, sent: Sent
) -> None:
    # A rebinding name: public when checked, loopback when asked again.
    resolver = Resolver(PUBLIC, "127.0.0.1")
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    status, error = _post("https://hooks.example.org:8443/in?x=1")
    assert (status, error) == (204, None)
    assert resolver.asked == ["hooks.example.org"], "resolved once, at the check"
    [request] = sent.requests
    assert request.url == f"https://{PUBLIC}:8443/in?x=1"
    assert request.headers["Host"] == "hooks.example.org:8443"
    # TLS is verified against the name, and SNI sends it.
    pool_kw = sent.adapters[0].poolmanager.connection_pool_kw
    assert pool_kw["server_hostname"] == "hooks.example.org"
    assert pool_kw["assert_hostname"] == "hooks.example.org"


def test_a_name_that_resolves_inside_is_refused_before_any_connection(
    monkeypatch: pytest.MonkeyPatch, sent: Sent
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", Resolver("10.1.2.3"))
    status, error = _post("https://hooks.example.org/in")
    assert status is None
    assert error is not None and "internal address (10.1.2.3)" in error
    assert sent.requests == []


def test_the_answer_body_never_reaches_the_subscriber(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", Resolver(PUBLIC))
    Sent(500, b"db password is hunter2").install(monkeypatch)
    status, error = _post("http://hooks.example.org/in")
    assert status == 500
    assert error is not None and error.startswith("HTTP 500 after ") and error.endswith(" ms")
    assert "hunter2" not in error


def test_an_installation_that_allows_private_targets_sends_as_asked(
    monkeypatch: pytest.MonkeyPatch, sent: Sent
) -> None:
    resolver = Resolver("127.0.0.1")
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    settings = Settings.from_env({"AIDLINK_WEBHOOK_ALLOW_PRIVATE": "true"})
    assert _post("http://localhost:9000/in", settings) == (204, None)
    assert sent.requests[0].url == "http://localhost:9000/in"


def test_the_pinned_url_keeps_credentials_brackets_ipv6_and_sends_the_idna_name() -> None:
    url, headers, adapter = service.pinned_request("https://u:p@[2001:db8::1]:8443/in", PUBLIC)
    assert url == f"https://u:p@{PUBLIC}:8443/in"
    assert headers["Host"] == "[2001:db8::1]:8443"
    url, headers, adapter = service.pinned_request("https://救援.例子.cn/in", "2606:4700::1")
    assert url == "https://[2606:4700::1]/in"
    ascii_name = "救援.例子.cn".encode("idna").decode()
    assert ascii_name.startswith("xn--") and headers["Host"] == ascii_name
    assert adapter.hostname == ascii_name  # type: ignore[attr-defined]


def test_a_url_that_cannot_be_sent_fails_the_attempt_instead_of_the_task(
    monkeypatch: pytest.MonkeyPatch, sent: Sent
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", Resolver(PUBLIC))
    status, error = _post("https://hooks.example.org:99999/in")
    assert status is None
    assert error is not None and error.startswith("refused: the URL cannot be sent to")
    assert sent.requests == []


def test_each_checked_address_is_tried_in_turn_until_one_takes_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    second = "93.184.216.35"

    def both(host: str, *_args: Any, **_kw: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, 443)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (second, 443)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", both)
    tried: list[str] = []

    def send(adapter: Any, request: requests.PreparedRequest, **_kw: Any) -> Any:
        tried.append(request.url or "")
        if PUBLIC in (request.url or ""):
            raise requests.ConnectionError("no route to host")
        return Sent(204)(adapter, request)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    assert _post("https://hooks.example.org/in") == (204, None)
    assert tried == [f"https://{PUBLIC}/in", f"https://{second}/in"]
