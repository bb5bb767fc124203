"""The embedded broker (Kombu's SQLAlchemy transport with ``SQLAlchemyChannel``) keeps
a taken message until it is acknowledged: deleted once acknowledged, handed back when
its consumer closes, put back on its queue when its consumer died holding it."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from kombu import Connection

from shared.config import Settings
from shared.taskqueue import HELD, SQLAlchemyChannel, broker_transport_options
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


def test_an_idle_consumer_looks_at_its_queue_less_and_less(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    looks: list[float] = []
    look = SQLAlchemyChannel._get

    def counted(self: SQLAlchemyChannel, queue: str, timeout: Any = None) -> Any:
        looks.append(time.monotonic())
        return look(self, queue, timeout)

    monkeypatch.setattr(SQLAlchemyChannel, "_get", counted)
    options = {"visibility_timeout": 3600, "idle_poll_max": 1.0}
    with Connection(url, transport_options=options) as conn:
        queue = conn.SimpleQueue("relief")
        with pytest.raises(Empty):
            queue.get(timeout=4)
        # Waits of 0.05, 0.1, 0.2, 0.4, 0.8, then 1 s: a look every 0.05 s would be 80.
        assert 5 <= len(looks) <= 12, looks
        gaps = [b - a for a, b in itertools.pairwise(looks)]
        assert min(gaps[-2:]) >= 0.9, gaps
        assert conn.transport.idle_wait == 1.0

        # A message sent meanwhile is taken at once, and the waits start again from
        # the polling interval.
        queue.put({"pledge": 4})
        sent = time.monotonic()
        message = queue.get(timeout=10)
        assert time.monotonic() - sent < 0.5
        message.ack()
        assert conn.transport.idle_wait == conn.transport.polling_interval
        queue.close()


def test_a_message_sent_by_another_process_wakes_an_idle_consumer(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    root = Path(__file__).resolve().parents[2]
    options = {"visibility_timeout": 3600, "idle_poll_max": 60.0}
    with Connection(url, transport_options=options) as conn:
        queue = conn.SimpleQueue("relief")
        # As after a long quiet spell: the next look at the queue is 30 s away.
        conn.transport.idle_wait = 30.0
        sender = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import time, shared.taskqueue\n"
                "from kombu import Connection\n"
                "time.sleep(1)\n"
                f"with Connection({url!r}) as conn:\n"
                "    conn.SimpleQueue('relief').put({'sent': time.time()})\n",
            ],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        try:
            message = queue.get(timeout=20)
        finally:
            assert sender.wait(30) == 0
        # Woken by the commit within the polling interval (0.05 s), not 30 s later.
        assert time.time() - message.payload["sent"] < 1.0
        message.ack()
        queue.close()


def test_a_broker_file_replaced_is_watched_anew(tmp_path: Path) -> None:
    from shared.taskqueue import BrokerWatch

    path = tmp_path / "broker.db"
    first = _database(path)
    watch = BrokerWatch(str(path))
    assert watch.changed()  # the first look tells nothing
    assert not watch.changed()
    first.execute("INSERT INTO t VALUES (1)")
    first.commit()
    assert watch.changed()
    assert not watch.changed()
    first.close()

    path.unlink()
    second = _database(path)
    watch.changed()  # the new file
    second.execute("INSERT INTO t VALUES (2)")
    second.commit()
    assert watch.changed()
    second.close()
    watch.close()


def test_the_watch_waits_for_a_commit_to_its_own_file(tmp_path: Path) -> None:
    from shared.taskqueue import BrokerWatch

    broker = _database(tmp_path / "broker.db")
    other = _database(tmp_path / "gateway.db")
    watch = BrokerWatch(str(tmp_path / "broker.db"))
    watch.changed()
    started = time.monotonic()
    assert not watch.wait(0.3, 0.05)
    assert time.monotonic() - started >= 0.25
    # Another database of the same folder does not wake it.
    other.execute("INSERT INTO t VALUES (1)")
    other.commit()
    assert not watch.wait(0.3, 0.05)
    broker.execute("INSERT INTO t VALUES (1)")
    broker.commit()
    started = time.monotonic()
    assert watch.wait(10, 0.05)
    assert time.monotonic() - started < 1
    for conn in (broker, other):
        conn.close()
    watch.close()


def _database(path: Path) -> Any:
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
    conn.commit()
    return conn


@pytest.mark.parametrize(("visibility", "lock"), [("3600", 60), ("5", 5)])
def test_a_redis_restore_lock_left_by_a_cut_worker_lives_a_minute_at_most(
    tmp_path: Path, visibility: str, lock: int
) -> None:
    settings = Settings.from_env(
        {
            "AIDLINK_VAR_DIR": str(tmp_path),
            "BROKER_URL": "redis://127.0.0.1:6379/0",
            "AIDLINK_BROKER_VISIBILITY_TIMEOUT": visibility,
        }
    )
    options = broker_transport_options(settings)
    assert options["unacked_mutex_expire"] == lock
    assert options["visibility_timeout"] == int(visibility)
