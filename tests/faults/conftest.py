"""A stack whose broker is a private redis-server of the test's own, which the test
may restart or leave holding a dead worker's messages (the databases are the
backend's: SQLite files, or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import Settings
from tests.support.faults import PrivateRedis
from tests.support.stack import Stack, build_stack

# Seconds before Redis hands a message no worker acknowledged to another worker:
# longer than any task of these tests, short enough to wait for.
VISIBILITY_TIMEOUT = 5


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def embedded_broker_stack(settings: Settings) -> Iterator[Stack]:
    """The backend's stack with the same short visibility timeout, when its broker is
    the embedded one (Kombu's SQLAlchemy transport)."""
    if settings.broker_is_redis:
        pytest.skip("this backend's broker is Redis, which redis_stack's tests cover")
    with build_stack(
        settings.with_overrides(broker_visibility_timeout=VISIBILITY_TIMEOUT)
    ) as stack:
        yield stack


@pytest.fixture
def redis_stack(settings: Settings, private_redis: PrivateRedis) -> Iterator[Stack]:
    with build_stack(
        settings.with_overrides(
            broker_url=private_redis.url, broker_visibility_timeout=VISIBILITY_TIMEOUT
        )
    ) as stack:
        yield stack
