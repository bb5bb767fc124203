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
from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint
from flask_smorest.fields import Upload as UploadField
from marshmallow import Schema, fields, validate
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session
from webargs.flaskparser import FlaskParser
from webargs.multidictproxy import MultiDictProxy
from werkzeug.datastructures import CombinedMultiDict

from services.donations.imports import spreadsheet
from services.donations.imports.spreadsheet import (
    CheckedRow,
    RowChecker,
    Sheet,
    SheetError,
    message,
)
from services.donations.models import ImportJob, Pledge
from services.donations.pledges import service
from services.donations.pledges.api import REGION, _may_pledge
from shared.db import utcnow
from shared.errors import Conflict, DomainError, NotFound, RuleBroken, TooLarge, Unavailable
from shared.identity import current_identity, forbidden, require_roles
from shared.pagination import ListArgsSchema, page_schema, paginate
from shared.web import ServiceRuntime, db_session, runtime

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
            checker = RowChecker(sheet, work.language, work.defaults)
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
                    "origin": {"region": first.region, "address": first.address},
                    "available_from": first.available_from,
                    "notes": None,
                },
                created_by=work.created_by,
                import_job_id=work.job_id,
            )
            ids.append(pledge.id)
        return ids

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


def register_import_tasks(rt: ServiceRuntime) -> None:
    @rt.celery.task(
        name=TASK_NAME,
        shared=False,
        bind=True,
        max_retries=5,
        soft_time_limit=TASK_SOFT_TIME_LIMIT,
        time_limit=TASK_TIME_LIMIT,
    )
    def import_pledges(self: Any, job_id: str) -> str | None:
        """Check and import the rows of an uploaded spreadsheet (see the module docs)."""
        runner = ImportRunner(rt)
        try:
            return runner.run(uuid.UUID(job_id))
        except TRANSIENT_ERRORS as exc:
            if self.request.retries >= self.max_retries:
                runner.fail(uuid.UUID(job_id), message("internal_error", "en"))
                raise
            raise self.retry(exc=exc, countdown=min(60, 2**self.request.retries)) from exc


# The API ---------------------------------------------------------------------------------------


class _MultipartParser(FlaskParser):
    """Reads form fields and files together, as one multipart/form-data body."""

    __location_map__ = {**FlaskParser.__location_map__, "multipart": "load_multipart"}

    def load_multipart(self, req: Any, schema: Schema) -> Any:
        return MultiDictProxy(CombinedMultiDict([req.form, req.files]), schema)


class _UploadBlueprint(Blueprint):
    ARGUMENTS_PARSER = _MultipartParser()
    DEFAULT_LOCATION_CONTENT_TYPE_MAPPING = {
        **Blueprint.DEFAULT_LOCATION_CONTENT_TYPE_MAPPING,
        "multipart": "multipart/form-data",
    }


blp = _UploadBlueprint(
    "pledge_imports",
    __name__,
    url_prefix="/api/v1/pledges/imports",
    description="Pledges imported from CSV or XLSX spreadsheets",
)


class UploadSchema(Schema):
    file = UploadField(
        required=True,
        metadata={"description": "CSV (UTF-8 or GB18030) or XLSX, at most 10 MB"},
    )
    mode = fields.String(
        load_default="all_or_nothing",
        validate=validate.OneOf(MODES),
        metadata={
            "description": "all_or_nothing: import only if every row is valid (default); "
            "valid_rows: import the valid rows and report the others"
        },
    )
    language = fields.String(
        load_default=None,
        validate=validate.OneOf(spreadsheet.LANGUAGES),
        metadata={"description": "Of the error messages; default from Accept-Language"},
    )
    origin_region = fields.String(
        load_default=None,
        validate=REGION,
        metadata={"description": "Shipping region for rows that name none"},
    )
    origin_address = fields.String(
        load_default=None,
        validate=validate.Length(max=500),
        metadata={"description": "Shipping address for rows that take the default region"},
    )
    org_id = fields.UUID(
        load_default=None,
        metadata={"description": "Coordinators only: the donor organisation pledging"},
    )


class RowErrorSchema(Schema):
    row = fields.Integer(metadata={"description": "Spreadsheet row; the first data row is 2"})
    column = fields.String(metadata={"description": "The column's header as in the file"})
    field = fields.String()
    code = fields.String()
    message = fields.String()


class ImportSummarySchema(Schema):
    id = fields.UUID()
    org_id = fields.UUID()
    status = fields.String(metadata={"description": "queued, running, succeeded or failed"})
    mode = fields.String()
    language = fields.String()
    filename = fields.String()
    content_type = fields.String(metadata={"description": "csv or xlsx"})
    rows_total = fields.Integer(allow_none=True)
    rows_done = fields.Integer()
    rows_imported = fields.Integer()
    progress = fields.Float(metadata={"description": "rows_done / rows_total, 0 to 1"})
    error_count = fields.Integer(metadata={"description": "Errors listed (at most 1000)"})
    pledge_ids = fields.List(fields.UUID())
    detail = fields.String(allow_none=True)
    created_at = fields.AwareDateTime()
    started_at = fields.AwareDateTime(allow_none=True)
    finished_at = fields.AwareDateTime(allow_none=True)


class ImportJobSchema(ImportSummarySchema):
    errors = fields.List(fields.Nested(RowErrorSchema))
    errors_truncated = fields.Boolean(
        metadata={"description": f"More errors than the first {MAX_STORED_ERRORS} listed"}
    )
    ignored_columns = fields.List(
        fields.String(), metadata={"description": "On upload: columns not read"}
    )


class ImportListArgsSchema(ListArgsSchema):
    status = fields.String(validate=validate.OneOf(STATUSES))
    org_id = fields.UUID(metadata={"description": "Coordinators: one donor's imports"})


ImportPageSchema = page_schema(ImportSummarySchema, "ImportPageSchema")


class TemplateArgsSchema(Schema):
    language = fields.String(
        load_default="both",
        validate=validate.OneOf(("zh", "en", "both")),
        metadata={"description": "Header language: zh, en or both (default)"},
    )


def _pledge_ids(session: Session, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
    found: dict[uuid.UUID, list[uuid.UUID]] = {job_id: [] for job_id in job_ids}
    if job_ids:
        rows = session.execute(
            select(Pledge.import_job_id, Pledge.id)
            .where(Pledge.import_job_id.in_(job_ids))
            .order_by(Pledge.created_at, Pledge.id)
        )
        for job_id, pledge_id in rows:
            if job_id is not None:
                found[job_id].append(pledge_id)
    return found


def job_view(
    job: ImportJob, pledge_ids: list[uuid.UUID], ignored_columns: list[str] | None = None
) -> dict[str, Any]:
    errors = list(job.errors or [])
    if job.status == "succeeded":
        progress = 1.0
    else:
        progress = job.rows_done / job.rows_total if job.rows_total else 0.0
    return {
        "id": job.id,
        "org_id": job.org_id,
        "status": job.status,
        "mode": job.mode,
        "language": job.language,
        "filename": job.filename,
        "content_type": job.content_type,
        "rows_total": job.rows_total,
        "rows_done": job.rows_done,
        "rows_imported": job.rows_imported,
        "progress": round(min(1.0, progress), 4),
        "error_count": len(errors),
        "errors": errors,
        "errors_truncated": len(errors) >= MAX_STORED_ERRORS,
        "pledge_ids": pledge_ids,
        "detail": job.detail,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "ignored_columns": ignored_columns or [],
    }


def _location(job_id: uuid.UUID) -> str:
    return f"{blp.url_prefix}/{job_id}"


def _request_language(asked: str | None) -> str:
    if asked:
        return asked
    return request.accept_languages.best_match(spreadsheet.LANGUAGES) or "en"


@blp.route("")
class Imports(MethodView):
    @blp.arguments(ImportListArgsSchema, location="query")
    @blp.response(200, ImportPageSchema)
    @require_roles()
    def get(self, args: dict[str, Any]) -> Any:
        """Your organisation's imports (coordinators: everyone's), oldest first."""
        identity = current_identity()
        stmt = select(ImportJob)
        if identity.is_coordinator:
            if args.get("org_id"):
                stmt = stmt.where(ImportJob.org_id == args["org_id"])
        elif identity.has_role("donor"):
            stmt = stmt.where(ImportJob.org_id == identity.org_id)
        else:
            raise forbidden("Imports are seen by their donors and by coordinators.")
        if args.get("status"):
            stmt = stmt.where(ImportJob.status == args["status"])
        session = db_session()
        page = paginate(session, stmt, ImportJob, cursor=args["cursor"], limit=args["limit"])
        jobs: list[ImportJob] = page["items"]
        ids = _pledge_ids(session, [job.id for job in jobs])
        page["items"] = [job_view(job, ids[job.id]) for job in jobs]
        return page

    @blp.response(202, ImportJobSchema, headers={"Location": {"schema": {"type": "string"}}})
    @blp.alt_response(409, description="The same file was uploaded before: see job_id")
    @blp.alt_response(413, description="The file is larger than 10 MB")
    @require_roles("donor", "coordinator")
    @blp.arguments(UploadSchema, location="multipart")
    def post(self, form: dict[str, Any]) -> Any:
        """Import pledges from a spreadsheet (multipart/form-data, field ``file``).

        A CSV (UTF-8 or GB18030) or XLSX file of at most 10 MB and 20,000 rows, with
        a header row in English or Chinese (GET ``template.xlsx``):

        item 物资 (required: code or name, e.g. mask, 医用外科口罩), standard 标准,
        quantity 数量 (required), unit 单位 (required: 个, 箱, kg, ...), pack_size
        每箱数量 (for boxes and cases), bottle_volume_ml 每瓶容量(毫升) (for bottled
        liquids), best_before 保质期至, origin_region 发货地区代码 (required unless
        ``origin_region`` is given with the upload), origin_address 发货地址,
        available_from 可发货日期, regions 限定地区, recipient_kinds 限定受助类型,
        note 备注. Dates: 2020-02-03, 2020/2/3 or date cells.

        Answers 202 with the job; follow it at its ``Location``. Rows are checked
        with the rules of ``POST /api/v1/pledges``; rows sharing an origin and an
        available-from date become one pledge. The same file uploaded again answers
        409 with the ``job_id`` it became (unless that job failed having imported
        nothing: then it runs again, in the mode now asked).
        """
        identity = current_identity()
        org_id = _may_pledge(identity, form.get("org_id"))
        storage = form["file"]
        upload = Upload(
            org_id=org_id,
            # Some browsers send the whole path; the name is what is shown.
            filename=(storage.filename or "").replace("\\", "/").rsplit("/", 1)[-1],
            # MAX_CONTENT_LENGTH bounds this; the import's own limit is checked next.
            content=storage.read(),
            mode=form["mode"],
            language=_request_language(form.get("language")),
            defaults={
                key: form[key] for key in ("origin_region", "origin_address") if form.get(key)
            },
            created_by=identity.user_id,
        )
        rt = runtime()
        submitted = submit(rt, upload)
        job = submitted.job
        if submitted.state == "duplicate":
            if job.status == "queued":
                # Its task may have been lost on the way to the worker; a second one is
                # harmless, as every run checks the job's state first.
                enqueue(rt, job.id)
            raise Conflict(
                message("duplicate_file", upload.language, job=job.id, status=job.status),
                slug="import-duplicate",
                headers={"Location": _location(job.id)},
                job_id=str(job.id),
                job_status=job.status,
            )
        try:
            enqueue(rt, job.id)
        except Exception:
            log.exception("could not queue import %s", job.id)
            raise Unavailable(
                f"The import {job.id} is saved but could not be queued; upload the same "
                "file again shortly to start it.",
                slug="queue-unavailable",
                job_id=str(job.id),
            ) from None
        return (
            job_view(job, [], submitted.ignored_columns),
            202,
            {"Location": _location(job.id)},
        )


@blp.route("/template.xlsx", methods=["GET"])
@blp.arguments(TemplateArgsSchema, location="query")
@blp.response(200, content_type=spreadsheet.XLSX_MIMETYPE)
@require_roles()
def template(args: dict[str, Any]) -> Any:
    """The import template: the columns with an example row to delete, the items of
    the catalogue with their units and standards, and what each column holds."""
    return Response(
        spreadsheet.template_xlsx(args["language"]),
        mimetype=spreadsheet.XLSX_MIMETYPE,
        headers={"Content-Disposition": 'attachment; filename="aidlink-pledges-template.xlsx"'},
    )


@blp.route("/<uuid:job_id>")
class ImportById(MethodView):
    @blp.response(200, ImportJobSchema)
    @require_roles()
    def get(self, job_id: uuid.UUID) -> Any:
        """An import's progress, and its errors by row and column (the first 1000)."""
        session = db_session()
        job = session.get(ImportJob, job_id)
        if job is None or not current_identity().can_act_for(job.org_id):
            raise NotFound(f"No import {job_id}.", slug="import-not-found")
        return job_view(job, _pledge_ids(session, [job.id])[job.id])
