"""Task messages sized by the changes their events carry: an ``allocation.proposed``
of version 2 asks of donations what as many version 1 events did (shared.outbox)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import sessionmaker

from shared.events import REGISTRY
from shared.outbox import Outbox, OutboxRow


def _message(type: str, version: int, carried: int | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"x": 1}
    if carried is not None:
        payload = {"allocations": [{"n": n} for n in range(carried)]}
    return {"id": str(uuid.uuid4()), "type": type, "version": version, "payload": payload}


def test_an_event_weighs_the_changes_it_carries() -> None:
    assert REGISTRY.weight(_message("allocation.proposed", 2, 300)) == 300
    assert REGISTRY.weight(_message("allocation.proposed", 1)) == 1
    assert REGISTRY.weight(_message("need.posted", 1)) == 1
    # A list of that name in an event that carries none is not counted, nor garbage.
    assert REGISTRY.weight(_message("need.posted", 1, 40)) == 1
    assert REGISTRY.weight(_message("allocation.proposed", "2", 40)) == 1  # type: ignore[arg-type]
    assert REGISTRY.weight("not a message") == 1


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[list[int]] = []

    def __call__(self, service: str, message: dict[str, Any]) -> None:
        self.sent.append([REGISTRY.weight(message)])

    def many(self, service: str, messages: list[dict[str, Any]]) -> None:
        self.sent.append([REGISTRY.weight(m) for m in messages])


def test_task_messages_hold_at_most_message_max_changes_and_a_heavier_event_goes_alone() -> None:
    recorder = _Recorder()
    outbox = Outbox(OutboxRow, sessionmaker(), recorder, message_max=500)
    weights = [1, 1, 300, 200, 499, 600, 1, 1]
    messages = [
        (uuid.uuid4(), _message("allocation.proposed", 2, w) if w > 1 else _message("x.y", 1))
        for w in weights
    ]
    assert outbox.send_to("donations", messages) == []
    assert recorder.sent == [[1, 1, 300], [200], [499], [600], [1, 1]]
    # In order, every event once.
    assert [w for task in recorder.sent for w in task] == weights
