"""A coordinator's approval of a matching preview, as a person would give it."""

from __future__ import annotations

import time
from typing import Any

from tests.support.auth import Account


def approve(client: Any, run_id: str, who: Account, *, timeout: float = 60.0) -> Any:
    """Approve run ``run_id``; a 409 that says another run holds the item (a run the
    service started on an event of its own) is tried again, as its message asks.
    Returns the approved run's JSON; any other answer fails with its body."""
    deadline = time.monotonic() + timeout
    url = f"/api/v1/matching/runs/{run_id}/approve"
    while True:
        response = client.post(url, json={}, headers=who.headers)
        body = response.get_json()
        busy = response.status_code == 409 and str(body.get("type", "")).endswith(
            "matching-in-progress"
        )
        if not busy or time.monotonic() > deadline:
            assert response.status_code == 200, body
            return body
        time.sleep(0.2)
