"""A donations worker whose pledge imports commit in small steps and can be slowed or
stalled, so a test can watch the progress or kill the worker mid-import.

Environment:

* ``AIDLINK_TEST_MARKER_DIR``: each run of a job leaves ``<job id>.<n>`` there,
  holding ``<pid> <rows_done it started from>``.
* ``AIDLINK_TEST_IMPORT_STEP``: rows per progress commit and per chunk (default 20).
* ``AIDLINK_TEST_IMPORT_DELAY``: seconds to wait after each progress commit.
* ``AIDLINK_TEST_IMPORT_STALL_AFTER``: on a job's first run, stall for two minutes
  once this many rows are committed.
"""

import os
import time
import uuid
from pathlib import Path
from typing import Any

from services.donations.app import create_app
from services.donations.imports import service as imports
from tests.support.markers import write_marker

flask_app = create_app()
celery = flask_app.extensions["aidlink"].celery

_markers = Path(os.environ["AIDLINK_TEST_MARKER_DIR"])
_step = int(os.environ.get("AIDLINK_TEST_IMPORT_STEP", "20"))
_delay = float(os.environ.get("AIDLINK_TEST_IMPORT_DELAY", "0"))
_stall_after = int(os.environ.get("AIDLINK_TEST_IMPORT_STALL_AFTER", "0"))

imports.PROGRESS_EVERY = _step
imports.CHUNK_ROWS = _step

_start = imports.ImportRunner._start
_progressed = imports.ImportRunner.progressed


def _marked_start(self: Any, job_id: uuid.UUID) -> Any:
    work = _start(self, job_id)
    if isinstance(work, imports._Work):
        self.attempt = len(list(_markers.glob(f"{job_id}.*"))) + 1
        write_marker(_markers / f"{job_id}.{self.attempt}", f"{os.getpid()} {work.rows_done}")
    return work


def _slow_progress(self: Any, job_id: uuid.UUID, rows_done: int, rows_total: int) -> None:
    _progressed(self, job_id, rows_done, rows_total)
    if _stall_after and getattr(self, "attempt", 0) == 1 and rows_done >= _stall_after:
        time.sleep(120)
    if _delay:
        time.sleep(_delay)


imports.ImportRunner._start = _marked_start  # type: ignore[method-assign]
imports.ImportRunner.progressed = _slow_progress  # type: ignore[method-assign]
