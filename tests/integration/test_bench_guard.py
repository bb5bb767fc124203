"""The benchmarks refuse a broker database that another consumer already waits on: a
worker an earlier run left behind would take the run's messages and apply them to
databases of its own, and the run's services would never hear of them."""

from __future__ import annotations

import threading
import time

import pytest

from bench.event_hop import BenchError, other_consumers, refuse_other_consumers
from shared.config import Settings
from shared.taskqueue import make_celery

pytestmark = pytest.mark.backend


def test_a_consumer_left_waiting_on_the_broker_is_found_and_refused(settings: Settings) -> None:
    app = make_celery("bench-guard", settings)
    try:
        assert other_consumers(app) == []
        refuse_other_consumers(app)  # nobody else: the run may start
        if not settings.broker_url.startswith("redis"):
            return  # the embedded transport's file is the run's own: nobody to find
        import redis

        stray = redis.Redis.from_url(settings.broker_url)
        waiting = threading.Thread(target=stray.brpop, args=(["stray-queue"], 2), daemon=True)
        waiting.start()
        deadline = time.monotonic() + 2.0
        found: list[str] = []
        while not found and time.monotonic() < deadline:
            found = other_consumers(app)
            time.sleep(0.05)
        assert len(found) == 1, found
        with pytest.raises(BenchError, match=r"1 other consumer\(s\) already wait") as refused:
            refuse_other_consumers(app)
        assert found[0].split(" ")[0] in str(refused.value)

        # One on another database of the same server is not this run's concern.
        number = int(settings.broker_url.rsplit("/", 1)[1])
        other = redis.Redis.from_url(
            settings.broker_url.rsplit("/", 1)[0] + f"/{0 if number else 1}"
        )
        waiting.join(timeout=5)
        stray.close()  # a client whose last command was a wait counts while connected
        elsewhere = threading.Thread(target=other.brpop, args=(["stray-queue"], 1), daemon=True)
        elsewhere.start()
        time.sleep(0.3)
        assert other_consumers(app) == []
        elsewhere.join(timeout=5)
        other.close()
    finally:
        app.close()
