"""The one beat process: `celery -A services.beat beat`.

It only schedules; each task runs on the worker of the service it names. Work due
in the far future is found in the databases by these periodic tasks, never parked on
the broker as a long ETA.
"""

from __future__ import annotations

from celery import Celery

from shared.config import SERVICES, Settings
from shared.taskqueue import make_celery


def create_beat(settings: Settings | None = None) -> Celery:
    settings = settings or Settings.from_env()
    app = make_celery("beat", settings)
    app.conf.beat_schedule = {
        f"{service}-sweep-outbox": {
            "task": f"{service}.sweep_outbox",
            "schedule": settings.outbox_sweep_interval,
            # A sweep that waited longer than its interval is replaced by the next one.
            "options": {"queue": service, "expires": settings.outbox_sweep_interval},
        }
        for service in SERVICES
    }
    app.conf.beat_schedule_filename = str(settings.var_dir / "celerybeat-schedule")
    return app


celery = create_beat()
