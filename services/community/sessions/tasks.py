"""The help sessions' periodic work: notes past their retention period deleted (beat
runs ``community.delete_expired_session_notes`` every hour)."""

from __future__ import annotations

import logging

from services.community.sessions import privacy
from shared.db import utcnow
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)


def register_session_tasks(rt: ServiceRuntime) -> None:
    @rt.celery.task(name="community.delete_expired_session_notes", shared=False, time_limit=300)
    def delete_expired_session_notes() -> int:
        """Delete the helpers' notes older than AIDLINK_HELP_NOTE_RETENTION_DAYS."""
        with rt.unit_of_work() as session:
            gone = privacy.delete_expired_notes(
                session, utcnow(), rt.settings.help_note_retention_days
            )
        if gone:
            log.info("deleted %d session note(s) past their retention period", gone)
        return gone
