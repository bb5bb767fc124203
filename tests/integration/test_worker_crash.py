"""A worker process killed in the middle of a task: the task runs again, once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from services.donations.models import messaging
from tests.support.auth import register
from tests.support.orgs import HOSPITAL, count, read_model_org
from tests.support.stack import Stack, eventually


def test_worker_killed_mid_task_runs_it_again_on_a_new_process_and_applies_it_once(
    stack: Stack, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    donations = stack.runtime("donations")
    worker = stack.start_worker(
        "donations",
        module="tests.support.stalling_donations_worker",
        env={"AIDLINK_TEST_MARKER_DIR": str(markers)},
    )

    org_id = register(stack.client(), **HOSPITAL).org_id
    first = eventually(lambda: sorted(markers.glob("*.1")), timeout=60)
    event_id = first[0].name.split(".")[0]
    doomed_pid = int(first[0].read_text())
    os.kill(doomed_pid, signal.SIGKILL)

    # The worker re-queues the task of the process it lost; a new process runs it.
    second = eventually(lambda: sorted(markers.glob(f"{event_id}.2")), timeout=60)
    assert int(second[0].read_text()) != doomed_pid
    org = eventually(lambda: read_model_org(donations, org_id), timeout=60)

    assert org.name == HOSPITAL["name"]
    assert count(donations, messaging.inbox) == 1
    assert count(donations, messaging.deliveries) == 1
    with donations.session_factory() as session:
        delivery = session.get(messaging.deliveries, event_id)
        assert delivery is not None and delivery.attempts == 2
    assert "WorkerLostError" in worker.log() or "signal 9" in worker.log()
    assert not list(markers.glob(f"{event_id}.3"))
