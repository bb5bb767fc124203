"""A worker killed in the middle of the saga, then replaced: every allocation ends
reserved or rejected, exactly once.

What each transport promises when a worker dies holding a message:
- a pool process killed (its main process lives on): the main process re-queues the
  task (``task_reject_on_worker_lost``), on Redis and on the embedded transport alike;
- the main process killed with its pool: the broker keeps the message as
  unacknowledged and gives it to the next worker once the visibility timeout has
  passed: Redis (on a private server, on both backends) and the embedded broker
  (``shared.taskqueue.SQLAlchemyChannel``, which marks a taken row held until it is
  acknowledged).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.support.faults import (
    Saga,
    assert_accounted,
    broker_rows,
    held_by_broker,
    kill_worker,
    start_faulty_worker,
)
from tests.support.stack import Stack, eventually

# Workers on the private Redis look for messages to restore every second.
ON_REDIS = {"redis_restore_every": 1}


def _stalling(markers: Path) -> dict[str, object]:
    return {"stall": {"type": "allocation.proposed", "markers": str(markers)}, **ON_REDIS}


def _mid_saga(stack: Stack, markers: Path) -> tuple[Saga, str, int]:
    """The saga under way, its first reservation stalled in the donations worker."""
    saga = Saga.begin(stack)
    saga.submit()
    eventually(saga.supply_known, timeout=60)
    saga.match()
    first = eventually(lambda: sorted(markers.glob("*.1")), timeout=60)
    return saga, first[0].name.split(".")[0], int(first[0].read_text())


def _main_process_killed_then_replaced(stack: Stack, markers: Path) -> None:
    start_faulty_worker(stack, "gateway", ON_REDIS)
    start_faulty_worker(stack, "community", ON_REDIS)
    start_faulty_worker(stack, "dispatch", ON_REDIS)
    doomed = start_faulty_worker(stack, "donations", _stalling(markers))
    saga, event_id, _pid = _mid_saga(stack, markers)

    killed = kill_worker(doomed)
    assert len(killed) >= 2  # the main process and its pool
    # The message the dead worker held is still the broker's; after its visibility
    # timeout (VISIBILITY_TIMEOUT) a worker puts it back on the queue for the new one.
    assert held_by_broker(stack.settings.broker_url, "donations") >= 1
    start_faulty_worker(stack, "donations", _stalling(markers))

    # The held message came back and ran on the new worker, once.
    eventually(lambda: list(markers.glob(f"{event_id}.2")), timeout=60)
    assert_accounted(saga)
    assert not list(markers.glob(f"{event_id}.3"))
    assert len(list(markers.glob("*.1"))) == 1
    assert {a.status for a in saga.allocations()} <= {"reserved", "rejected"}


def test_main_worker_process_killed_with_its_pool_mid_saga_then_restarted(
    redis_stack: Stack, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    _main_process_killed_then_replaced(redis_stack, markers)


def test_main_worker_process_killed_on_the_embedded_broker_then_restarted(
    embedded_broker_stack: Stack, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    _main_process_killed_then_replaced(embedded_broker_stack, markers)
    # Every message delivered and acknowledged is gone from the broker's table, the
    # dead worker's with them.
    eventually(
        lambda: broker_rows(embedded_broker_stack.settings.broker_url, "donations") == [],
        timeout=30,
    )


def test_pool_process_killed_mid_saga_is_replaced_and_the_task_runs_again(
    stack: Stack, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    stack.start_worker("gateway")
    stack.start_worker("community")
    stack.start_worker("dispatch")
    start_faulty_worker(stack, "donations", _stalling(markers))
    saga, event_id, pid = _mid_saga(stack, markers)

    os.kill(pid, signal.SIGKILL)

    second = eventually(lambda: list(markers.glob(f"{event_id}.2")), timeout=60)
    assert int(second[0].read_text()) != pid
    assert_accounted(saga)
    assert not list(markers.glob(f"{event_id}.3"))
    assert {a.status for a in saga.allocations()} <= {"reserved", "rejected"}
