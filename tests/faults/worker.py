"""A Celery worker for the fault tests: the service named by ``AIDLINK_TEST_SERVICE``
with the faults of ``AIDLINK_TEST_FAULTS`` (tests/support/faults.py ``install``)."""

import importlib
import json
import os

from tests.support import faults

_service = os.environ["AIDLINK_TEST_SERVICE"]
flask_app = importlib.import_module(f"services.{_service}.app").create_app()
runtime = flask_app.extensions["aidlink"]
celery = runtime.celery
faults.install(runtime, json.loads(os.environ.get(faults.FAULTS_ENV) or "{}"))
