"""The imports API: upload a spreadsheet, follow its job, download the template."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint
from flask_smorest.fields import Upload as UploadField
from marshmallow import Schema, fields, validate
from sqlalchemy import select
from sqlalchemy.orm import Session
from webargs.flaskparser import FlaskParser
from webargs.multidictproxy import MultiDictProxy
from werkzeug.datastructures import CombinedMultiDict

from services.donations.imports import spreadsheet
from services.donations.imports.service import (
    MAX_STORED_ERRORS,
    MODES,
    STATUSES,
    Upload,
    enqueue,
    submit,
)
from services.donations.imports.spreadsheet import message
from services.donations.models import ImportJob, Pledge
from services.donations.pledges.api import REGION, _may_pledge
from shared.errors import Conflict, NotFound, Unavailable
from shared.identity import current_identity, forbidden, require_roles
from shared.pagination import ListArgsSchema, page_schema, paginate
from shared.web import db_session, runtime

log = logging.getLogger(__name__)


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
