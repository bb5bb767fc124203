"""scripts/keep-running, which keeps the Procfile's workers running under `make run`."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "keep-running"


def test_a_command_that_exits_is_started_again_until_it_keeps_failing(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = subprocess.run(
        [str(SCRIPT), "sh", "-c", f"echo run >> {runs}; exit 3"],
        env={**os.environ, "KEEP_RUNNING_DELAY": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    assert runs.read_text().count("run") == 5
    assert "starting it again" in done.stderr
    assert "exited 5 times in a row" in done.stderr


def test_sigterm_to_the_group_stops_the_command_and_the_loop(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    process = subprocess.Popen(
        [str(SCRIPT), "sh", "-c", f"echo run >> {runs}; exec sleep 60"],
        env={**os.environ, "KEEP_RUNNING_DELAY": "0"},
        start_new_session=True,  # as honcho starts each Procfile entry
    )
    deadline = time.monotonic() + 10
    while not runs.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=10) != 0
    time.sleep(0.3)
    assert runs.read_text().count("run") == 1  # not started again
