"""The one beat process: `celery -A services.beat beat`.

It only schedules; each task runs on the worker of the service it names. Work due
in the far future is found in the databases by these periodic tasks, never parked on
the broker as a long ETA.
"""

from __future__ import annotations

from celery import Celery

from shared.config import SERVICES, Settings
from shared.taskqueue import make_celery

# Seconds between sweeps for webhook deliveries left behind.
WEBHOOK_SWEEP_INTERVAL = 30.0


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
    # Each producer asks its subscribers what they lack of its events, every tenth of
    # the delivery bound (shared/catchup.py); old events are archived hourly.
    catch_up_every = settings.event_delivery_bound / 10
    for service in SERVICES:
        if settings.event_catch_up:
            app.conf.beat_schedule[f"{service}-catch-up"] = {
                "task": f"{service}.catch_up",
                "schedule": catch_up_every,
                "options": {"queue": service, "expires": catch_up_every},
            }
        app.conf.beat_schedule[f"{service}-archive-events"] = {
            "task": f"{service}.archive_events",
            "schedule": 3600.0,
            "options": {"queue": service, "expires": 3600.0},
        }
    # Webhook deliveries whose task was lost (broker or worker gone) are queued again.
    app.conf.beat_schedule["gateway-sweep-webhooks"] = {
        "task": "gateway.sweep_webhooks",
        "schedule": WEBHOOK_SWEEP_INTERVAL,
        "options": {"queue": "gateway", "expires": WEBHOOK_SWEEP_INTERVAL},
    }
    # Perishables past their best-before date, hourly; reservations past their
    # deadline, every minute.
    for name, task, every in (
        ("donations-expire-perishables", "donations.expire_perishables", 3600.0),
        ("donations-release-overdue", "donations.release_overdue_reservations", 60.0),
        ("donations-resume-imports", "donations.resume_imports", 300.0),
    ):
        app.conf.beat_schedule[name] = {
            "task": task,
            "schedule": every,
            "options": {"queue": "donations", "expires": every},
        }
    # Every item matched on a schedule, besides the runs that supply and need events ask for.
    app.conf.beat_schedule["dispatch-match-all"] = {
        "task": "dispatch.match_all",
        "schedule": settings.matching_interval,
        "options": {"queue": "dispatch", "expires": settings.matching_interval},
    }
    # Needs past their expiry leave matching, every minute; reminders to reconfirm
    # before that, every five; shipments overdue are flagged every five.
    for name, task, every in (
        ("dispatch-expire-needs", "dispatch.expire_needs", 60.0),
        ("dispatch-remind-needs", "dispatch.remind_needs", 300.0),
        ("dispatch-flag-overdue-shipments", "dispatch.flag_overdue_shipments", 300.0),
    ):
        app.conf.beat_schedule[name] = {
            "task": task,
            "schedule": every,
            "options": {"queue": "dispatch", "expires": every},
        }
    # Helpers' notes on sessions past their retention period, hourly.
    app.conf.beat_schedule["community-delete-expired-session-notes"] = {
        "task": "community.delete_expired_session_notes",
        "schedule": 3600.0,
        "options": {"queue": "community", "expires": 3600.0},
    }
    app.conf.beat_schedule_filename = str(settings.var_dir / "celerybeat-schedule")
    return app


celery = create_beat()
