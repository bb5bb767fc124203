"""A donations worker whose first attempt at each org.registered event stalls, so a
test can kill the worker process in the middle of the task.

Each attempt leaves a file ``<event id>.<n>`` holding the pid of the process that ran
it, in the folder named by ``AIDLINK_TEST_MARKER_DIR``.
"""

import os
import time
from pathlib import Path

from sqlalchemy.orm import Session

from services.donations.app import create_app
from shared.events import Event
from tests.support.markers import write_marker

flask_app = create_app()
runtime = flask_app.extensions["aidlink"]
celery = runtime.celery

_markers = Path(os.environ["AIDLINK_TEST_MARKER_DIR"])
_apply = runtime.inbox.handlers["org.registered"]


def _stall_on_first_attempt(session: Session, event: Event) -> None:
    attempt = len(list(_markers.glob(f"{event.id}.*"))) + 1
    write_marker(_markers / f"{event.id}.{attempt}", str(os.getpid()))
    if attempt == 1:
        time.sleep(120)
    _apply(session, event)


runtime.inbox.handlers["org.registered"] = _stall_on_first_attempt
