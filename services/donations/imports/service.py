"""Spreadsheet imports of pledges: the upload, the job a worker runs, and its progress.

A donor uploads a CSV or XLSX file (columns: see :mod:`services.donations.imports.spreadsheet`)
and gets a job back at once (202); a worker checks every row with the rules of the
pledges API and reports progress and errors, by spreadsheet row and column, in the
language of the upload. ``aidlink import pledges FILE --org ORG`` runs the same job
in the terminal.

Two modes:

* ``all_or_nothing`` (the default): every row is checked first, with the progress
  committed every ``PROGRESS_EVERY`` rows; then, only if no row has an error, every
  pledge is written and the job marked succeeded in one transaction. A worker that
  dies before that commit leaves nothing behind, and the job starts over.
* ``valid_rows``: rows are taken ``CHUNK_ROWS`` at a time; each chunk's pledges and
  the job's progress and errors commit together, so a job picked up again after a
  worker died resumes after the last committed chunk, never importing a row twice.

The same file (by SHA-256) is imported once per organisation: uploading it again
answers 409 naming the job it became, except after a job that failed without
importing anything, which the new upload runs again with its own mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from services.donations.imports import spreadsheet
from services.donations.imports.spreadsheet import (
    CheckedRow,
    RowChecker,
    Sheet,
    SheetError,
    message,
)
from services.donations.models import ImportJob, Place, Pledge
from services.donations.pledges import service
from shared.db import utcnow
from shared.errors import DomainError, RuleBroken, TooLarge
from shared.places import normalised_name
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)

TASK_NAME = "donations.import_pledges"
MODES = ("all_or_nothing", "valid_rows")
STATUSES = ("queued", "running", "succeeded", "failed")
FINAL_STATUSES = frozenset({"succeeded", "failed"})

# All-or-nothing: rows checked between two commits of the progress.
PROGRESS_EVERY = 200
# Valid rows only: rows imported per transaction.
CHUNK_ROWS = 500
# Errors kept on a job (and shown); the job's detail gives the full count.
MAX_STORED_ERRORS = 1000
# Errors that pass: the job is retried and picks up where it stood.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    ConnectionError,
)
# 20,000 rows take well under a minute; the limit only stops a job that hangs.
TASK_SOFT_TIME_LIMIT = 870
TASK_TIME_LIMIT = 900


# Submitting a file ----------------------------------------------------------------------------


@dataclass
class Upload:
    org_id: uuid.UUID
    filename: str
    content: bytes
    mode: str = "all_or_nothing"
    language: str = "en"
    defaults: dict[str, Any] = field(default_factory=dict)
    created_by: uuid.UUID | None = None


@dataclass
class Submitted:
    """The job a file became. ``state``: ``new``; ``restarted``, a job that had failed
    without importing anything, queued again; or ``duplicate``, a job left as it was."""

    job: ImportJob
    state: str
    ignored_columns: list[str]


def file_problem(status: int, detail: str, slug: str, **extensions: Any) -> DomainError:
    """A refused file (413 too large, else 422), its message under ``file``."""
    kind = TooLarge if status == 413 else RuleBroken
    return kind(detail, slug=slug, errors={"file": [detail]}, **extensions)


def read_upload(upload: Upload) -> Sheet:
    """The file's rows, or a problem naming ``file``: too large (413), not a CSV or XLSX
    spreadsheet, more than ``MAX_ROWS`` rows, or required columns missing (422)."""
    language = spreadsheet.language_of(upload.language)
    try:
        sheet = spreadsheet.read_sheet(upload.content)
    except SheetError as exc:
        slug = "file-too-large" if exc.status == 413 else "invalid-spreadsheet"
        raise file_problem(exc.status, exc.message(language), slug) from None
    missing = sheet.missing(upload.defaults)
    if missing:
        separator = "、" if language == "zh" else ", "
        names = separator.join(spreadsheet.COLUMN_BY_FIELD[m].label(language) for m in missing)
        raise file_problem(
            422,
            message("missing_columns", language, columns=names),
            "missing-columns",
            missing_columns=missing,
        )
    return sheet


def submit(rt: ServiceRuntime, upload: Upload) -> Submitted:
    """The job for ``upload``, checked as a whole first (see :func:`read_upload`).
    Queue it with :func:`enqueue` unless it is a duplicate that already ran."""
    sheet = read_upload(upload)
    digest = hashlib.sha256(upload.content).hexdigest()
    content_type = sheet.kind
    columns: dict[str, Any] = {
        "org_id": upload.org_id,
        "created_by": upload.created_by,
        "filename": (upload.filename or f"pledges.{content_type}")[:255],
        "content_type": content_type,
        "mode": upload.mode,
        "language": spreadsheet.language_of(upload.language),
        "status": "queued",
        "rows_total": len(sheet.rows),
        "rows_done": 0,
        "rows_imported": 0,
        "errors": [],
        "defaults": upload.defaults,
        "pledge_id": None,
        "started_at": None,
        "finished_at": None,
        "detail": None,
    }
    try:
        with rt.unit_of_work() as session:
            existing = session.scalar(
                select(ImportJob)
                .where(ImportJob.org_id == upload.org_id, ImportJob.sha256 == digest)
                .with_for_update()
            )
            if existing is not None:
                if existing.status == "failed" and existing.rows_imported == 0:
                    # Nothing of it was pledged: run it again, in the mode now asked.
                    for name, value in columns.items():
                        setattr(existing, name, value)
                    return Submitted(existing, "restarted", sheet.ignored)
                return Submitted(existing, "duplicate", sheet.ignored)
            job = ImportJob(id=uuid.uuid4(), sha256=digest, content=upload.content, **columns)
            session.add(job)
    except IntegrityError:
        # The same file, uploaded at the same moment, won the race.
        with rt.session_factory() as session:
            job = session.scalars(
                select(ImportJob).where(
                    ImportJob.org_id == upload.org_id, ImportJob.sha256 == digest
                )
            ).one()
        return Submitted(job, "duplicate", sheet.ignored)
    return Submitted(job, "new", sheet.ignored)


def enqueue(rt: ServiceRuntime, job_id: uuid.UUID) -> None:
    """Send the job to the donations worker."""
    rt.celery.send_task(
        TASK_NAME,
        args=[str(job_id)],
        retry=True,
        retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
    )


# Running a job ---------------------------------------------------------------------------------


class Superseded(Exception):
    """Another run of the same job got there first; this one stops."""


@dataclass
class _Work:
    job_id: uuid.UUID
    org_id: uuid.UUID
    created_by: uuid.UUID | None
    mode: str
    language: str
    defaults: dict[str, Any]
    content: bytes
    rows_done: int


ProgressCallback = Callable[[int, int], None]


class ImportRunner:
    """Runs import jobs against a service runtime. ``on_progress(rows_done,
    rows_total)`` is called after each commit of the progress."""

    def __init__(self, rt: ServiceRuntime, on_progress: ProgressCallback | None = None):
        self.rt = rt
        self.on_progress = on_progress

    def run(self, job_id: uuid.UUID) -> str | None:
        """Run the job to its end, or resume it; returns its final status, or None if
        there is no such job or another run has taken it over."""
        try:
            work = self._start(job_id)
            if isinstance(work, str) or work is None:
                return work
            try:
                sheet = spreadsheet.read_sheet(work.content)
            except SheetError as exc:
                return self.fail(job_id, exc.message(work.language))
            checker = RowChecker(sheet, work.language, work.defaults, self._places(work.org_id))
            if work.mode == "valid_rows":
                return self._valid_rows(work, sheet, checker)
            return self._all_or_nothing(work, sheet, checker)
        except Superseded:
            log.info("import %s: another run took it over; this one stops", job_id)
            return None
        except SoftTimeLimitExceeded:
            log.error("import %s ran out of time", job_id)
            return self.fail(job_id, message("timed_out", self._language(job_id)))
        except TRANSIENT_ERRORS:
            raise
        except Exception:
            log.exception("import %s failed", job_id)
            return self.fail(job_id, message("internal_error", self._language(job_id)))

    def progressed(self, job_id: uuid.UUID, rows_done: int, rows_total: int) -> None:
        """Called once ``rows_done`` is committed."""
        if self.on_progress is not None:
            self.on_progress(rows_done, rows_total)

    # Steps --------------------------------------------------------------------------------

    def _start(self, job_id: uuid.UUID) -> _Work | str | None:
        with self.rt.unit_of_work() as session:
            job = session.get(ImportJob, job_id, with_for_update=True)
            if job is None:
                log.warning("import %s: no such job", job_id)
                return None
            if job.status in FINAL_STATUSES:
                log.info("import %s is already %s", job_id, job.status)
                return job.status
            if job.mode != "valid_rows":
                # Nothing of an earlier attempt was committed but its progress.
                job.rows_done = 0
                job.errors = []
            job.status = "running"
            job.started_at = job.started_at or utcnow()
            return _Work(
                job_id=job.id,
                org_id=job.org_id,
                created_by=job.created_by,
                mode=job.mode,
                language=job.language,
                defaults=dict(job.defaults or {}),
                content=job.content,
                rows_done=job.rows_done,
            )

    def _claim(self, session: Session, job_id: uuid.UUID, rows_done: int | None) -> ImportJob:
        """The job, locked, if this run may still write to it."""
        job = session.get(ImportJob, job_id, with_for_update=True, populate_existing=True)
        if job is None or job.status != "running":
            raise Superseded
        if rows_done is not None and job.rows_done != rows_done:
            raise Superseded
        return job

    def _all_or_nothing(self, work: _Work, sheet: Sheet, checker: RowChecker) -> str:
        total = len(sheet.rows)
        checked: list[CheckedRow] = []
        errors: list[dict[str, Any]] = []
        bad_rows = 0
        for done, (number, cells) in enumerate(sheet.rows, start=1):
            row = checker.check(number, cells)
            checked.append(row)
            if row.errors:
                bad_rows += 1
                errors.extend(row.errors[: max(0, MAX_STORED_ERRORS - len(errors))])
            if done % PROGRESS_EVERY == 0 and done < total:
                with self.rt.unit_of_work() as session:
                    self._claim(session, work.job_id, None).rows_done = done
                self.progressed(work.job_id, done, total)
        if bad_rows:
            with self.rt.unit_of_work() as session:
                job = self._claim(session, work.job_id, None)
                job.status = "failed"
                job.rows_done = total
                job.errors = errors
                job.finished_at = utcnow()
                job.detail = _with_truncation(
                    message("rejected_all_or_nothing", work.language, rows=bad_rows),
                    errors,
                    work.language,
                )
            self.progressed(work.job_id, total, total)
            return "failed"
        groups = spreadsheet.group_rows(checked)
        with self.rt.unit_of_work() as session:
            # The job first: a second run of it waits here, then finds it done.
            job = self._claim(session, work.job_id, None)
            pledge_ids = self._pledge(session, work, groups)
            job.status = "succeeded"
            job.rows_done = total
            job.rows_imported = total
            job.pledge_id = pledge_ids[0] if pledge_ids else None
            job.finished_at = utcnow()
            job.detail = message("imported", work.language, rows=total, pledges=len(pledge_ids))
        self.progressed(work.job_id, total, total)
        return "succeeded"

    def _valid_rows(self, work: _Work, sheet: Sheet, checker: RowChecker) -> str:
        total = len(sheet.rows)
        done = work.rows_done
        while done < total:
            chunk = sheet.rows[done : done + CHUNK_ROWS]
            checked = [checker.check(number, cells) for number, cells in chunk]
            good = sum(1 for row in checked if row.line is not None)
            errors = [error for row in checked for error in row.errors]
            with self.rt.unit_of_work() as session:
                job = self._claim(session, work.job_id, done)
                pledge_ids = self._pledge(session, work, spreadsheet.group_rows(checked))
                job.rows_done = done + len(chunk)
                job.rows_imported += good
                if errors and len(job.errors) < MAX_STORED_ERRORS:
                    job.errors = [*job.errors, *errors][:MAX_STORED_ERRORS]
                if job.pledge_id is None and pledge_ids:
                    job.pledge_id = pledge_ids[0]
            done += len(chunk)
            self.progressed(work.job_id, done, total)
        with self.rt.unit_of_work() as session:
            job = self._claim(session, work.job_id, total)
            pledges = len(
                session.scalars(select(Pledge.id).where(Pledge.import_job_id == job.id)).all()
            )
            rejected = total - job.rows_imported
            job.finished_at = utcnow()
            if job.rows_imported == 0:
                job.status = "failed"
                job.detail = message("nothing_valid", work.language)
            else:
                job.status = "succeeded"
                job.detail = (
                    message(
                        "imported_valid_rows",
                        work.language,
                        rows=job.rows_imported,
                        pledges=pledges,
                        rejected=rejected,
                    )
                    if rejected
                    else message("imported", work.language, rows=total, pledges=pledges)
                )
            job.detail = _with_truncation(job.detail, job.errors, work.language)
            status = job.status
        return status

    def _pledge(
        self, session: Session, work: _Work, groups: list[list[CheckedRow]]
    ) -> list[uuid.UUID]:
        ids = []
        for rows in groups:
            first = rows[0]
            pledge = service.create_pledge(
                session,
                self.rt.outbox,
                org_id=work.org_id,
                data={
                    "lines": [row.line for row in rows],
                    "origin": (
                        {"place_id": first.place_id}
                        if first.place_id is not None
                        else {"region": first.region, "address": first.address}
                    ),
                    "available_from": first.available_from,
                    "notes": None,
                },
                created_by=work.created_by,
                import_job_id=work.job_id,
            )
            ids.append(pledge.id)
        return ids

    def _places(self, org_id: uuid.UUID) -> dict[str, tuple[Any, str, str]]:
        """The organisation's places a row may name, by normalised name."""
        with self.rt.session_factory() as session:
            return {
                normalised_name(p.name): (p.id, p.region, p.address)
                for p in session.scalars(
                    select(Place).where(Place.org_id == org_id, Place.archived.is_(False))
                )
            }

    def _language(self, job_id: uuid.UUID) -> str:
        with contextlib.suppress(Exception), self.rt.session_factory() as session:
            language = session.scalar(select(ImportJob.language).where(ImportJob.id == job_id))
            return spreadsheet.language_of(language)
        return "en"

    def fail(self, job_id: uuid.UUID, detail: str) -> str | None:
        """Mark a job that cannot go on as failed (what it committed stays)."""
        try:
            with self.rt.unit_of_work() as session:
                job = session.get(ImportJob, job_id, with_for_update=True)
                if job is None or job.status in FINAL_STATUSES:
                    return job.status if job else None
                job.status = "failed"
                job.finished_at = utcnow()
                job.detail = detail
        except Exception:
            log.exception("import %s: could not record its failure", job_id)
            return None
        return "failed"


def _with_truncation(detail: str, errors: list[dict[str, Any]], language: str) -> str:
    if len(errors) < MAX_STORED_ERRORS:
        return detail
    return f"{detail} {message('errors_truncated', language, limit=MAX_STORED_ERRORS)}"
