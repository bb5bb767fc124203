"""The gateway's calls to a service over a pooled connection that the service closes as
the request leaves (its keep-alive ran out): a request that may be repeated is sent
once more on a new connection; one that may not is answered 502; a service that takes
too long is still answered 504, never tried twice."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.gateway.proxy import ServiceClient
from shared.config import Settings
from shared.problems import Problem

BODY = b'{"ok": true}'
OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
    + BODY
)


class Upstream:
    """A service that reads each request and then, per connection in turn: ``close``
    (hangs up without answering, as a keep-alive running out does), ``answer``, or
    ``stall`` (never answers)."""

    def __init__(self, plan: list[str]) -> None:
        self.plan = plan
        self.requests: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        # Each connection on a thread of its own: a stalled one does not keep another
        # (a request sent again) from being taken and counted.
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            what = self.plan.pop(0) if self.plan else "answer"
            threading.Thread(target=self._answer, args=(conn, what), daemon=True).start()

    def _answer(self, conn: socket.socket, what: str) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        self.requests.append(data)
        if what == "answer":
            conn.sendall(OK)
        elif what == "stall":
            self.stop.wait(5)
        conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def upstream(request: pytest.FixtureRequest) -> Iterator[Upstream]:
    server = Upstream(list(request.param))
    yield server
    server.close()


def _client(tmp_path: Path, port: int) -> ServiceClient:
    return ServiceClient(
        Settings.from_env(
            {
                "AIDLINK_VAR_DIR": str(tmp_path),
                "DONATIONS_URL": f"http://127.0.0.1:{port}",
                "AIDLINK_PROXY_READ_TIMEOUT": "0.5",
            }
        )
    )


@pytest.mark.parametrize("upstream", [["close", "answer"]], indirect=True)
def test_a_read_sent_as_the_connection_closed_is_sent_again(
    tmp_path: Path, upstream: Upstream
) -> None:
    answer = _client(tmp_path, upstream.port).call("donations", "GET", "/api/v1/pledges")
    assert answer.status_code == 200
    assert answer.json() == {"ok": True}
    assert [r.split(b"\r\n")[0] for r in upstream.requests] == [b"GET /api/v1/pledges HTTP/1.1"] * 2


@pytest.mark.parametrize("upstream", [["close", "answer"]], indirect=True)
def test_a_post_sent_as_the_connection_closed_is_not_sent_again(
    tmp_path: Path, upstream: Upstream
) -> None:
    with pytest.raises(Problem) as raised:
        _client(tmp_path, upstream.port).call("donations", "POST", "/api/v1/pledges", json={})
    assert raised.value.status == 502
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("upstream", [["stall", "answer"]], indirect=True)
def test_a_service_too_slow_is_a_timeout_and_is_asked_once(
    tmp_path: Path, upstream: Upstream
) -> None:
    with pytest.raises(Problem) as raised:
        _client(tmp_path, upstream.port).call("donations", "GET", "/api/v1/pledges")
    assert raised.value.status == 504
    time.sleep(0.2)  # a request sent again would have reached the service by now
    assert len(upstream.requests) == 1
