"""The embedded broker (Kombu's SQLAlchemy transport with ``SQLAlchemyChannel``) keeps
a taken message until it is acknowledged: deleted once acknowledged, handed back when
its consumer closes, put back on its queue when its consumer died holding it."""

from __future__ import annotations

from pathlib import Path
from queue import Empty
from typing import Any

from kombu import Connection

from shared.config import Settings
from shared.taskqueue import HELD, broker_transport_options
from tests.support.faults import broker_rows
from tests.support.stack import eventually


def _connect(url: str, visibility_timeout: float) -> Connection:
    return Connection(url, transport_options={"visibility_timeout": visibility_timeout})


def test_a_message_is_held_until_acknowledged_then_deleted(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    with _connect(url, 3600) as conn:
        queue = conn.SimpleQueue("relief")
        queue.put({"pledge": 1})
        message = queue.get(timeout=10)
        assert message.payload == {"pledge": 1}
        assert broker_rows(url, "relief") == [(False, HELD)]
        message.ack()
        assert broker_rows(url, "relief") == []

        # Handed back (rejected with requeue, or its consumer closing): on the queue
        # again, once.
        queue.put({"pledge": 2})
        queue.get(timeout=10).requeue()
        assert broker_rows(url, "relief") == [(True, 1)]
        again = queue.get(timeout=10)
        assert again.payload == {"pledge": 2}
        queue.close()
    assert broker_rows(url, "relief") == [(True, 1)]


def test_a_message_whose_consumer_died_goes_back_after_the_visibility_timeout(
    tmp_path: Path,
) -> None:
    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    with _connect(url, 1) as conn:
        queue = conn.SimpleQueue("relief")
        queue.put({"pledge": 3})
        taken = queue.get(timeout=10)
        # The consumer dies: nothing is acknowledged or handed back.
        taken.channel.qos._delivered.clear()
        queue.close()
    assert broker_rows(url, "relief") == [(False, HELD)]

    with _connect(url, 1) as conn:
        queue = conn.SimpleQueue("relief")

        def take() -> Any:
            try:
                return queue.get(timeout=0.5)
            except Empty:
                return None

        back = eventually(take, timeout=30)
        assert back.payload == {"pledge": 3}
        back.ack()
        queue.close()
    assert broker_rows(url, "relief") == []


def test_the_embedded_broker_gets_the_visibility_timeout(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"AIDLINK_VAR_DIR": str(tmp_path), "AIDLINK_BROKER_VISIBILITY_TIMEOUT": "900"}
    )
    assert broker_transport_options(settings)["visibility_timeout"] == 900
