"""Events between commit and queue: the relay cut off, or killed, for a whole saga,
then the sweep catching up; and the broker itself restarted while events flow."""

from __future__ import annotations

from pathlib import Path

from services.donations.models import Reservation
from shared.config import SERVICES
from shared.events.supply import PROPOSALS_PER_EVENT
from tests.support.faults import (
    PrivateRedis,
    Saga,
    Switchable,
    assert_accounted,
    deliveries_of,
    start_faulty_worker,
    start_workers,
    supervised,
    sweep_all,
)
from tests.support.orgs import count
from tests.support.stack import Stack, eventually


def _backlog(stack: Stack) -> dict[str, int]:
    return {service: stack.runtime(service).outbox.backlog() for service in SERVICES}


def test_relay_failing_for_a_whole_saga_then_the_sweep_catches_up(
    stack: Stack, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    stack.start_worker("gateway")
    stack.start_worker("community")
    stack.start_worker("dispatch")
    # The donations worker's process dies after committing its first two commits of
    # reservation answers and before relaying them (the proposals of one run arrive
    # as one batch, answered in one commit: a death loses all its answers at once).
    start_faulty_worker(
        stack,
        "donations",
        {
            "dies_before_publishing": {
                "markers": str(markers),
                "types": ["reservation.accepted", "reservation.rejected"],
                "times": 2,
            }
        },
    )
    saga = Saga.begin(stack)
    relays = {service: Switchable(stack.runtime(service).outbox.publisher) for service in SERVICES}
    for service, relay in relays.items():
        stack.runtime(service).outbox.publisher = relay
        relay.down = True

    # Pledges and needs commit; their events wait in the outboxes.
    saga.submit()
    assert _backlog(stack)["donations"] == len(saga.pledges)
    assert _backlog(stack)["dispatch"] == len(saga.needs)
    assert not saga.supply_known()

    for relay in relays.values():
        relay.down = False
    assert sweep_all(stack) == len(saga.pledges) + len(saga.needs)
    eventually(saga.supply_known, timeout=60)

    for relay in relays.values():
        relay.down = True
    run = saga.match()
    proposed = len(run["allocations"])
    assert proposed > 0
    # Nothing reached donations: every proposal is still only in dispatch's outbox,
    # in the one allocation.proposed event (version 2) that carries the run's few.
    assert proposed <= PROPOSALS_PER_EVENT
    assert _backlog(stack)["dispatch"] == 1
    assert count(stack.runtime("donations"), Reservation) == 0
    assert all(a.status == "proposed" for a in saga.allocations())

    for relay in relays.values():
        relay.down = False
    # The sweep sends the proposals; two answers are lost with the process that wrote
    # them, and the sweep (run as beat would) sends those too.
    assert_accounted(saga)
    died = sorted(p.name.split(".", 1)[1] for p in markers.glob("died.*"))
    assert 1 <= len(died) <= 2
    # Each lost answer was committed once, redelivered to a new process that found it
    # done, and reached dispatch once, by the sweep (assert_accounted checked every
    # answer did; these are the first of each commit lost).
    taken = deliveries_of(stack, "dispatch")
    assert all(taken[event_id] == 1 for event_id in died)
    assert relays["donations"].refused > 0 and relays["dispatch"].refused > 0


def test_redis_restarted_while_events_flow_delivers_every_event_once(
    redis_stack: Stack, private_redis: PrivateRedis
) -> None:
    stack = redis_stack
    # A task cut off by the outage stays Redis's, unacknowledged, until its visibility
    # timeout runs out; these workers look for such messages every second.
    workers = start_workers(stack, {"redis_restore_every": 1})
    saga = Saga.begin(stack)
    saga.submit()
    eventually(saga.supply_known, timeout=60)
    saga.match()

    # While the proposals and their answers are on their way, Redis goes down and
    # comes back from its append-only file; pledges and needs keep coming. Workers
    # reconnect by themselves (tests/faults/test_broker_reconnect.py); one that exits
    # all the same is started again, as compose's restart policy would.
    with supervised(stack, workers, {"redis_restore_every": 1}):
        private_redis.restart()
        saga.submit()
        eventually(lambda: saga.supply_known(sweep=True), timeout=90, interval=0.5)
        saga.match(first=False)
        report = assert_accounted(saga)
    assert report.counts["allocations"] > 0
    for service in SERVICES:
        # Each event was applied once; deliveries beyond one are duplicates the inbox
        # recognised.
        assert deliveries_of(stack, service)
