"""The gateway killed and started again while clients are creating pledges through it:
clients retry with their Idempotency-Key; each pledge exists once, and a retry gets
the first answer."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import select

from services.donations.models import Pledge
from tests.support.auth import admin as make_admin
from tests.support.auth import verified
from tests.support.faults import GatewayProcess
from tests.support.stack import Stack, eventually

CLIENTS = 8
PLEDGES_EACH = 5


RETRIES = [0]


def _create(url: str, token: str, key: str, body: dict[str, Any], deadline: float) -> Any:
    """A client that keeps its key until it hears an answer, bounded in time."""
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    while time.monotonic() < deadline:
        try:
            response = requests.post(
                f"{url}/api/v1/pledges", json=body, headers=headers, timeout=15
            )
        except requests.RequestException:
            RETRIES[0] += 1
            time.sleep(0.2)  # the gateway is down: try again
            continue
        in_progress = response.status_code == 409 and "in-progress" in response.text
        if response.status_code >= 500 or in_progress:
            time.sleep(0.2)
            continue
        return response
    raise AssertionError(f"no answer for {key}")


def test_gateway_killed_mid_flight_clients_retry_and_each_pledge_exists_once(
    stack: Stack, tmp_path: Path
) -> None:
    client = stack.client()
    boss = make_admin(stack.apps["gateway"], client)
    donors = [verified(client, boss, kind="foundation", region="4403") for _ in range(CLIENTS)]
    gateway = GatewayProcess(stack.settings, tmp_path / "gateway.log")
    gateway.start()
    try:
        answers: dict[str, Any] = {}
        bodies: dict[str, tuple[str, dict[str, Any]]] = {}
        lock = threading.Lock()
        deadline = time.monotonic() + 120

        def donor_client(donor: Any) -> None:
            for n in range(PLEDGES_EACH):
                key = f"pledge-{uuid.uuid4().hex}"
                body = {
                    "lines": [{"item": "mask", "quantity": str(100 + n), "unit": "piece"}],
                    "origin": {"region": "4403"},
                    "notes": key,
                }
                with lock:
                    bodies[key] = (donor.access_token, body)
                answer = _create(gateway.url, donor.access_token, key, body, deadline)
                with lock:
                    answers[key] = answer

        threads = [threading.Thread(target=donor_client, args=(d,)) for d in donors]
        for thread in threads:
            thread.start()
        # Kill it once some answers are out and more requests are in flight.
        eventually(lambda: len(answers) >= CLIENTS, timeout=60, interval=0.02)
        gateway.kill()
        killed_after = len(answers)
        gateway.start()
        for thread in threads:
            thread.join(150)
        assert not any(thread.is_alive() for thread in threads)
        assert killed_after < CLIENTS * PLEDGES_EACH
        assert RETRIES[0] > 0  # clients did lose their connection and try again

        assert len(answers) == CLIENTS * PLEDGES_EACH
        assert {a.status_code for a in answers.values()} == {201}
        with stack.runtime("donations").session_factory() as session:
            stored = {p.notes: p.id for p in session.scalars(select(Pledge))}
        # Each key made exactly one pledge, the one its answer names.
        assert len(stored) == len(answers) == len(_pledge_ids(stack))
        for key, answer in answers.items():
            assert str(stored[key]) == answer.json()["id"]

        # Asked again with the same key, each gets the first answer, replayed.
        for key, (token, body) in bodies.items():
            again = _create(gateway.url, token, key, body, time.monotonic() + 30)
            assert again.status_code == 201
            assert again.headers.get("Idempotent-Replayed") == "true"
            assert again.json() == answers[key].json()
    finally:
        gateway.stop()


def _pledge_ids(stack: Stack) -> list[Any]:
    with stack.runtime("donations").session_factory() as session:
        return list(session.scalars(select(Pledge.id)))
