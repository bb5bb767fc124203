"""The help sessions' periodic work: notes past their retention period deleted, and
closed requests past theirs cleared of what the person wrote and how to reach them
(beat runs ``community.delete_expired_session_notes`` every hour)."""

from __future__ import annotations

import logging

from services.community.sessions import privacy
from shared.db import utcnow
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)


def register_session_tasks(rt: ServiceRuntime) -> None:
    @rt.celery.task(name="community.delete_expired_session_notes", shared=False, time_limit=300)
    def delete_expired_session_notes() -> int:
        """Delete the helpers' notes older than AIDLINK_HELP_NOTE_RETENTION_DAYS, and
        clear the requests closed longer ago than AIDLINK_HELP_REQUEST_RETENTION_DAYS
        of their text and contact; answers the notes deleted."""
        now = utcnow()
        with rt.unit_of_work() as session:
            gone = privacy.delete_expired_notes(session, now, rt.settings.help_note_retention_days)
            cleared = privacy.clear_expired_requests(
                session, now, rt.settings.help_request_retention_days
            )
        if gone or cleared:
            log.info(
                "deleted %d session note(s) and cleared %d request(s) past their retention",
                gone,
                cleared,
            )
        return gone
