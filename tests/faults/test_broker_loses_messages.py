"""The broker loses what it held, and every event still reaches every subscriber once:
the network between the workers and Redis cut at random moments of a 500-need matching
and shipping run, Redis flushed and restarted without its data mid-saga, a subscriber
down for longer than the broker's visibility timeout, the embedded broker's file
deleted while the stack runs.

The databases are the truth: what the broker lost, the catch-up (shared/catchup.py)
sends again. These stacks run its rounds every half second (``BOUND`` of 5 s, where
production's is 300 s), driven by the test as beat would drive them. Each test prints
how long recovery took (``pytest -s`` shows it; the README's reliability section
lists the figures).

The Redis faults need a Redis of the test's own (to cut, flush, restart): they run in
the PostgreSQL and Redis pass. The deleted file is the embedded broker's, so that
test runs in the embedded pass; the subscriber's absence runs in both, on each pass's
own broker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import SERVICES, Settings
from tests.support.faults import (
    PrivateRedis,
    Saga,
    assert_accounted,
    kill_worker,
    recovered_by_catch_up,
    resent_by_catch_up,
    start_faulty_worker,
    start_workers,
    supervised,
    sweep_all,
)
from tests.support.flaky_link import FlakyLink
from tests.support.stack import Stack, build_stack, eventually

# The catch-up's rounds every 0.5 s; a worker holding a message for 5 s without
# acknowledging it is taken for dead.
BOUND = 5.0
VISIBILITY_TIMEOUT = 5
# Workers on Redis look for messages to restore every second.
ON_REDIS = {"redis_restore_every": 1}


def _faulty(settings: Settings, **changes: object) -> Settings:
    return settings.with_overrides(
        broker_visibility_timeout=VISIBILITY_TIMEOUT, event_delivery_bound=BOUND, **changes
    )


@pytest.fixture
def own_redis_stack(settings: Settings, private_redis: PrivateRedis) -> Iterator[Stack]:
    if not settings.broker_is_redis:
        pytest.skip("a Redis fault: run in the PostgreSQL and Redis pass")
    with build_stack(_faulty(settings, broker_url=private_redis.url)) as stack:
        yield stack


def _report(what: str, seconds: float, stack: Stack, extra: str = "") -> None:
    print(
        f"\n[recovery] {what}: every event taken in and the invariants clean "
        f"{seconds:.1f} s after; recovered by the catch-up (the broker had lost them): "
        f"{recovered_by_catch_up(stack) or 'none'}; copies it sent again: "
        f"{resent_by_catch_up(stack) or 'none'}" + (f"; {extra}" if extra else "")
    )


def _recovered(saga: Saga, *, ship: bool = False) -> None:
    """Every allocation answered (and, with ``ship``, every shipped one delivered on
    both sides), running beat's sweeps and catch-up rounds meanwhile."""
    eventually(saga.decided, timeout=90, interval=0.25)
    if ship:

        def delivered() -> bool:
            sweep_all(saga.stack)
            return saga.delivered()

        eventually(delivered, timeout=90, interval=0.25)


# The run the network is cut during: 500 needs of one line each, masks and gloves in
# turn, from ten wards of each of three hospitals, against two donors' pledges of four
# fifths of what they ask for. The scans go ten shipments to a batch, so that the
# workers take in the first shipments' news while the next are scanned.
NEEDS = 500
NEED_SIZE = {"mask": 20, "gloves_exam": 10}
PLEDGE_SIZE = {"mask": 2000, "gloves_exam": 1000}
SCANNED_TOGETHER = 10


def test_network_cut_between_workers_and_redis_at_random_moments(
    own_redis_stack: Stack, private_redis: PrivateRedis
) -> None:
    stack = own_redis_stack
    link = FlakyLink(private_redis.port, seed=19)
    through_link = {"BROKER_URL": link.url}
    try:
        workers = start_workers(stack, ON_REDIS, env=through_link)
        with supervised(stack, workers, ON_REDIS, env=through_link):
            saga = Saga.begin(stack, donors=2, hospitals=3)
            for donor in saga.donors:
                saga.pledge(donor, **PLEDGE_SIZE)
            saga.post_needs(NEEDS, **NEED_SIZE)
            eventually(lambda: saga.supply_known(sweep=True), timeout=90, interval=0.25)

            # Matching the 500 needs, and shipping what it reserved, while the link
            # drops connections and holds packets; the first three deliveries of events
            # are cut off as they reach a worker.
            link.faulty, link.swallow = True, 3
            started = time.monotonic()
            run = saga.match()
            _recovered(saga)
            shipments = saga.ship(batch=SCANNED_TOGETHER)
            assert shipments > 0
            _recovered(saga, ship=True)
            link.faulty = False
            healed = time.monotonic()
            assert_accounted(saga)
            done = time.monotonic()
    finally:
        link.close()
    assert link.swallowed == 3
    # Those deliveries left Redis and never reached a worker: only the catch-up had them.
    assert sum(recovered_by_catch_up(stack).values()) >= 1
    delivered = sum(a.status == "delivered" for a in saga.allocations())
    _report(
        "network cuts between the workers and Redis",
        done - healed,
        stack,
        f"{link.cuts} connections cut, {link.holds} packets held and "
        f"{link.swallowed} deliveries swallowed over {healed - started:.1f} s of matching "
        f"{len(saga.needs)} needs ({len(run['allocations'])} allocations) and shipping "
        f"{shipments} shipments ({delivered} allocations delivered), which completed "
        "meanwhile",
    )


def test_redis_flushed_then_restarted_without_its_data_mid_saga(
    own_redis_stack: Stack, private_redis: PrivateRedis
) -> None:
    stack = own_redis_stack
    workers = start_workers(stack, ON_REDIS)
    saga = Saga.begin(stack, donors=2, hospitals=2)
    saga.submit()
    eventually(lambda: saga.supply_known(sweep=True), timeout=90, interval=0.25)

    # The proposals wait on the donations queue (its worker is away a moment) when an
    # operator runs FLUSHALL: the queues and the exchanges' bindings go with it.
    workers["donations"].discard()
    saga.match()
    private_redis.flushall()
    flushed = time.monotonic()
    workers["donations"] = start_workers(stack, ON_REDIS, only="donations")["donations"]
    _recovered(saga)
    after_flush = time.monotonic() - flushed

    # The shipments' news waits on the donations queue when Redis dies and comes back
    # without its append-only file.
    workers["donations"].discard()
    assert saga.ship() > 0
    with supervised(stack, workers, ON_REDIS):
        private_redis.restart_empty()
        restarted = time.monotonic()
        workers["donations"] = start_workers(stack, ON_REDIS, only="donations")["donations"]
        _recovered(saga, ship=True)
        after_restart = time.monotonic() - restarted
        assert_accounted(saga)
    assert sum(recovered_by_catch_up(stack).values()) >= 1
    _report("FLUSHALL with the proposals queued", after_flush, stack)
    _report("Redis restarted without its data, shipment news queued", after_restart, stack)


@pytest.fixture
def short_visibility_stack(settings: Settings) -> Iterator[Stack]:
    with build_stack(_faulty(settings)) as stack:
        yield stack


def test_subscriber_down_longer_than_the_visibility_timeout_then_back(
    short_visibility_stack: Stack, tmp_path: Path
) -> None:
    stack = short_visibility_stack
    markers = tmp_path / "markers"
    markers.mkdir()
    for service in SERVICES:
        if service != "donations":
            start_faulty_worker(stack, service, ON_REDIS)
    stalling = {"stall": {"type": "allocation.proposed", "markers": str(markers)}, **ON_REDIS}
    donations = start_faulty_worker(stack, "donations", stalling)
    saga = Saga.begin(stack)
    saga.submit()
    eventually(lambda: saga.supply_known(sweep=True), timeout=90, interval=0.25)

    # The donations worker dies holding the proposals, and stays away for twice the
    # visibility timeout while needs and pledges keep coming and the producers keep
    # asking it what it lacks.
    saga.match()
    eventually(lambda: sorted(markers.glob("*.1")), timeout=60)
    kill_worker(donations)
    away_until = time.monotonic() + 2 * VISIBILITY_TIMEOUT
    saga.submit()
    while time.monotonic() < away_until:
        sweep_all(stack)
        time.sleep(0.25)
    back = time.monotonic()
    start_faulty_worker(stack, "donations", ON_REDIS)
    eventually(lambda: saga.supply_known(sweep=True), timeout=90, interval=0.25)
    saga.match(first=False)
    _recovered(saga)
    assert_accounted(saga)
    _report(
        f"donations away {2 * VISIBILITY_TIMEOUT} s (visibility timeout "
        f"{VISIBILITY_TIMEOUT} s), then back",
        time.monotonic() - back,
        stack,
    )


@pytest.fixture
def embedded_stack(settings: Settings) -> Iterator[Stack]:
    if settings.broker_is_redis:
        pytest.skip("the embedded broker's file: run in the embedded pass")
    with build_stack(_faulty(settings)) as stack:
        yield stack


def test_embedded_broker_file_deleted_while_the_stack_runs(embedded_stack: Stack) -> None:
    stack = embedded_stack
    workers = start_workers(stack)
    saga = Saga.begin(stack)
    saga.submit()
    eventually(lambda: saga.supply_known(sweep=True), timeout=90, interval=0.25)

    # The proposals wait in the broker's file when an operator clears it
    # (rm var/broker.db*): every process has it open, and each opens a new one.
    workers["donations"].discard()
    saga.match()
    broker_file = Path(stack.settings.broker_url.split("sqlite:///", 1)[1])
    for path in broker_file.parent.glob(f"{broker_file.name}*"):
        path.unlink()
    deleted = time.monotonic()
    with supervised(stack, workers):
        workers["donations"] = start_workers(stack, only="donations")["donations"]
        _recovered(saga)
        assert saga.ship() > 0
        _recovered(saga, ship=True)
        assert_accounted(saga)
    assert broker_file.exists()
    assert sum(recovered_by_catch_up(stack).values()) >= 1
    _report(
        "the embedded broker's file deleted, proposals in it", time.monotonic() - deleted, stack
    )
