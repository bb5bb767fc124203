"""The public transparency ledger and its open-data exports (no sign-in), and the
traces of a pledge (for its donor) and of a need (for its recipient)."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections import OrderedDict
from datetime import datetime
from typing import Any

from flask import Response, request
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from werkzeug.http import http_date

from services.dispatch.models import Need
from services.dispatch.transparency import service as ledger
from services.dispatch.transparency import totals, trace
from services.dispatch.transparency.totals import MEASURES
from shared import exports
from shared.catalog import display
from shared.display_fields import (
    DISPLAY_PARAMETER,
    DisplayField,
    DisplayQuantities,
    requested_language,
)
from shared.identity import current_identity, require_roles
from shared.problems import Problem
from shared.web import db_session, runtime

transparency_blp = Blueprint(
    "transparency",
    __name__,
    url_prefix="/api/v1/transparency",
    description="The public ledger: what came in, where it went (no sign-in needed)",
)
trace_blp = Blueprint(
    "traces",
    __name__,
    url_prefix="/api/v1",
    description="Traces: where a pledge went, where a need's supplies came from",
)

TABLES = ("totals", "flows")


class FilterArgsSchema(Schema):
    item = fields.String(validate=validate.Length(min=1, max=64))
    region = fields.String(
        validate=validate.Regexp(r"^\d{1,6}$", error="Digits only: a region code or its prefix.")
    )
    start = fields.Date(data_key="from", metadata={"description": "First day counted"})
    end = fields.Date(data_key="to", metadata={"description": "Last day counted"})

    @validates_schema
    def _ordered(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if data.get("start") and data.get("end") and data["end"] < data["start"]:
            raise ValidationError("Must not be before 'from'.", field_name="to")


class LedgerArgsSchema(FilterArgsSchema):
    cursor = fields.String(
        load_default=None,
        validate=validate.Length(max=500),
        metadata={"description": "next_cursor of the previous page (of flows)"},
    )
    limit = fields.Integer(
        load_default=ledger.FLOWS_PAGE,
        validate=validate.Range(min=1, max=ledger.FLOWS_PAGE_MAX),
        metadata={"description": "Flows in one page"},
    )


class ExportArgsSchema(FilterArgsSchema):
    table = fields.String(
        load_default="totals",
        validate=validate.OneOf(TABLES),
        metadata={"description": "totals (month, region, item) or flows (donor -> recipient)"},
    )


class FiguresSchema(DisplayQuantities, Schema):
    display_fields = ("pledged", "reserved", "shipped", "received")

    base_unit = fields.String(allow_none=True)
    pledged = fields.Integer()
    reserved = fields.Integer()
    shipped = fields.Integer()
    received = fields.Integer()


class FlowSchema(DisplayQuantities, Schema):
    display_fields = ("quantity", "shipped", "received")

    donor = fields.String(metadata={"description": "The donor's name, or 'anonymous'"})
    donor_org_id = fields.UUID(allow_none=True)
    recipient = fields.String()
    recipient_org_id = fields.UUID()
    item = fields.String()
    base_unit = fields.String(allow_none=True)
    quantity = fields.Integer(metadata={"description": "Reserved or shipped"})
    shipped = fields.Integer()
    received = fields.Integer()


class DeliveredUnitsSchema(DisplayQuantities, Schema):
    display_fields = ("quantity",)

    item = fields.String()
    base_unit = fields.String(allow_none=True)
    quantity = fields.Integer(metadata={"description": "Delivered to households, base unit"})


class CommunityReachSchema(Schema):
    org_id = fields.UUID()
    name = fields.String(metadata={"description": "The community organisation's name"})
    region = fields.String()
    households_reached = fields.Integer()
    people_served = fields.Integer()
    vulnerable_households_reached = fields.Integer()
    units_delivered = fields.List(
        fields.Nested(DeliveredUnitsSchema),
        metadata={"description": "Inside the community, per item (the item filtered on)"},
    )
    as_of = fields.AwareDateTime(metadata={"description": "When the community counted"})


class HelpWeekSchema(Schema):
    week = fields.Date(metadata={"description": "The Monday of the week, Beijing time"})
    region = fields.String(metadata={"description": "The city (4-digit region code)"})
    sessions_held = fields.Integer()
    people_helped = fields.Integer()
    hours_given = fields.Float(metadata={"description": "Hours, to a tenth"})


class HelpGivenSchema(Schema):
    sessions_held = fields.Integer()
    people_helped = fields.Integer(
        metadata={"description": "Each person once, however many sessions, weeks or cities"}
    )
    hours_given = fields.Float(metadata={"description": "Hours, to a tenth"})
    by_week = fields.List(fields.Nested(HelpWeekSchema))


class LedgerSchema(Schema):
    filters = fields.Dict()
    totals = fields.Dict(
        keys=fields.String(),
        values=fields.Nested(FiguresSchema),
        metadata={"description": "By item"},
    )
    by_region = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(keys=fields.String(), values=fields.Nested(FiguresSchema)),
        metadata={"description": "By city (4-digit region code), then item"},
    )
    by_month = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(keys=fields.String(), values=fields.Nested(FiguresSchema)),
        metadata={"description": "By month (YYYY-MM), then item"},
    )
    flows = fields.List(
        fields.Nested(FlowSchema),
        metadata={"description": "One page, by item, donor and recipient"},
    )
    next_cursor = fields.String(
        allow_none=True, metadata={"description": "The next page of flows; null after the last"}
    )
    communities = fields.List(
        fields.Nested(CommunityReachSchema),
        metadata={
            "description": "Inside each community: households reached, people served, "
            "vulnerable households reached and units delivered, as counts, never a "
            "household; the latest figures (filtered by region and item, not dates)"
        },
    )
    help_given = fields.Nested(
        HelpGivenSchema,
        metadata={
            "description": "Help from people's time (counselling and other sessions): "
            "sessions held, people helped and hours given, in all and by week and city, "
            "never a person; filtered by region (its city) and dates (the weeks that "
            "overlap them), not by item"
        },
    )


def _filters(args: dict[str, Any]) -> ledger.Filters:
    return ledger.Filters(
        item=args.get("item"),
        region=args.get("region"),
        start=args.get("start"),
        end=args.get("end"),
    )


@transparency_blp.route("/ledger", methods=["GET"], parameters=[DISPLAY_PARAMETER])
# An instance, not the class: webargs would build (and deep-copy) a schema per request.
@transparency_blp.arguments(LedgerArgsSchema(), location="query")
@transparency_blp.response(200, LedgerSchema)
@transparency_blp.alt_response(304, description="Not modified since the ETag or date given")
def public_ledger(args: dict[str, Any]) -> Any:
    """Totals pledged, reserved, shipped and received, by item, by city and by month,
    and the flows from donor to recipient organisations (a page at a time). Public: no
    sign-in needed. See the README for what each figure counts.

    Answers carry an ``ETag`` and a ``Last-Modified`` (the ledger's version, which
    every change of a figure moves) and may be kept by shared caches for
    ``AIDLINK_LEDGER_MAX_AGE`` seconds; ``If-None-Match`` or ``If-Modified-Since``
    gets a 304 when nothing changed."""
    filters = _filters(args)
    if args.get("cursor"):
        try:
            ledger.decode_cursor(args["cursor"])
        except ValueError:
            raise Problem(
                400,
                "The cursor is not one this API issued.",
                errors={"cursor": ["Invalid cursor."]},
            ) from None
    rt = runtime()
    # With ?display=true the answer is in the language Accept-Language asks for: an
    # answer, and an ETag, of its own.
    language = requested_language()
    asked = [filters.as_dict(), args.get("cursor"), args["limit"]]
    query = json.dumps(asked + ([language] if language else []), sort_keys=True).encode()
    # The version alone first, outside a session: most requests end with it (a 304, or
    # an answer already made for this version).
    version, changed_at = totals.current_state(rt.read_engine)
    etag, stamp = _validator(version, changed_at, query)
    if not_modified(etag, changed_at):
        return Response(status=304, headers=_headers(etag, changed_at, language))
    database = rt.settings.database_url("dispatch")
    body = _answers.get((database, version, stamp, query))
    if body is None:
        session = db_session()
        # The answer, and the version it is filed under, read from one snapshot: the
        # ledger may have moved since the read above, and may move between this
        # session's statements. (SQLite's read transaction is one snapshot already;
        # PostgreSQL's READ COMMITTED gives each statement its own.)
        if session.get_bind().dialect.name == "postgresql":
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        version, changed_at = totals.state(session)
        etag, stamp = _validator(version, changed_at, query)
        answer = ledger.ledger(session, filters, cursor=args.get("cursor"), limit=args["limit"])
        body = json.dumps(LedgerSchema().dump(answer), separators=(",", ":")).encode()
        _answers.put((database, version, stamp, query), body)
    # The answer as sent: asked again before anything changed, it is not made again.
    return Response(
        body,
        status=200,
        mimetype="application/json",
        headers=_headers(etag, changed_at, language),
    )


def _validator(version: int, changed_at: datetime | None, query: bytes) -> tuple[str, str]:
    """The ETag of the answer to ``query`` at ``version``, and the stamp of when that
    version was made. When the version last moved is part of what names an answer: a
    database made anew (or restored) counts its versions from the start again."""
    stamp = changed_at.isoformat() if changed_at is not None else ""
    etag = f"ledger-{version}-{hashlib.sha256(query + stamp.encode()).hexdigest()[:16]}"
    return etag, stamp


def _headers(etag: str, changed_at: datetime | None, language: str | None) -> dict[str, str]:
    headers = caching_headers(etag, changed_at)
    if language:
        headers["Vary"] = "Accept-Encoding, Accept-Language"
    return headers


class AnswerCache:
    """The ledger's latest answers in this process, by database, version (and when it
    moved) and query: an answer asked again before anything changed is not computed
    again."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._answers: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            answer = self._answers.get(key)
            if answer is not None:
                self._answers.move_to_end(key)
            return answer

    def put(self, key: Any, answer: Any) -> None:
        with self._lock:
            self._answers[key] = answer
            self._answers.move_to_end(key)
            while len(self._answers) > self.size:
                self._answers.popitem(last=False)


_answers = AnswerCache()


def caching_headers(etag: str, changed_at: datetime | None) -> dict[str, str]:
    max_age = runtime().settings.ledger_max_age
    headers = {
        "ETag": f'"{etag}"',
        "Cache-Control": f"public, max-age={max_age}",
        "Vary": "Accept-Encoding",
    }
    if changed_at is not None:
        headers["Last-Modified"] = http_date(changed_at)
    return headers


def not_modified(etag: str, changed_at: datetime | None) -> bool:
    """The request's validators say the client holds this answer (RFC 9110 13.1:
    If-None-Match, when sent, decides alone)."""
    if request.if_none_match:
        return request.if_none_match.contains_weak(etag)
    since = request.if_modified_since
    if since is not None and changed_at is not None:
        return changed_at.replace(microsecond=0) <= since
    return False


def _table(session: Any, table: str, filters: ledger.Filters) -> tuple[tuple[str, ...], Any]:
    """A table's columns and rows; with ?display=true each figure also as people read
    it, in a ``<figure>_display`` column after the exact ones, which stay as they are."""
    columns: tuple[str, ...]
    if table == "flows":
        columns, rows = ledger.FLOW_COLUMNS, ledger.flow_rows(session, filters)
        figures: tuple[str, ...] = ("quantity", "shipped", "received")
    else:
        columns, rows = ledger.TOTAL_COLUMNS, ledger.total_rows(session, filters)
        figures = tuple(MEASURES)
    language = requested_language()
    if language is None:
        return columns, rows
    shown = tuple(f"{figure}_display" for figure in figures)
    return (*columns, *shown), _displayed(rows, figures, language)


def _displayed(rows: Any, figures: tuple[str, ...], language: str) -> Any:
    for row in rows:
        yield {
            **row,
            **{
                f"{figure}_display": display.quantity(row[figure], row["base_unit"], language)
                for figure in figures
            },
        }


@transparency_blp.route("/export.csv", methods=["GET"], parameters=[DISPLAY_PARAMETER])
@transparency_blp.arguments(ExportArgsSchema, location="query")
@transparency_blp.response(200, content_type="text/csv")
def export_csv(args: dict[str, Any]) -> Any:
    """The ledger as open data: ``table=totals`` (default), one row per month, city and
    item, or ``table=flows``, one row per donor, recipient and item. Columns are stable
    and documented in the README. Streamed as the rows are read."""
    columns, rows = _table(db_session(), args["table"], _filters(args))
    return exports.download(
        exports.csv_chunks(columns, rows),
        mimetype="text/csv",
        filename=f"aidlink-{args['table']}.csv",
    )


@transparency_blp.route("/export.xlsx", methods=["GET"], parameters=[DISPLAY_PARAMETER])
@transparency_blp.arguments(FilterArgsSchema, location="query")
@transparency_blp.response(200, content_type=exports.XLSX)
def export_xlsx(args: dict[str, Any]) -> Any:
    """Both tables of the CSV exports as one workbook, a sheet each (totals, flows)."""
    session = db_session()
    filters = _filters(args)
    sheets = [(name, *_table(session, name, filters)) for name in TABLES]
    return exports.download(
        exports.xlsx_chunks(sheets), mimetype=exports.XLSX, filename="aidlink-ledger.xlsx"
    )


class ExportSchema(Schema):
    columns = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))
    totals = fields.List(fields.Dict())
    flows = fields.List(fields.Dict())


@transparency_blp.route("/export.json", methods=["GET"], parameters=[DISPLAY_PARAMETER])
@transparency_blp.arguments(FilterArgsSchema, location="query")
@transparency_blp.response(200, ExportSchema)
def export_json(args: dict[str, Any]) -> Any:
    """The same rows as the CSV exports, both tables in one document, streamed."""
    session = db_session()
    filters = _filters(args)
    tables = [(name, *_table(session, name, filters)) for name in TABLES]
    head = {"columns": {name: list(columns) for name, columns, _rows in tables}}
    return exports.download(exports.json_chunks(head, tables), mimetype="application/json")


# Traces --------------------------------------------------------------------------------------


class ReceiptFiguresSchema(Schema):
    receipt_status = fields.String(metadata={"description": "pending, confirmed or corrected"})
    accepted = fields.Integer()
    damaged = fields.Integer()
    short = fields.Integer()


class ShipmentRefSchema(Schema):
    id = fields.UUID()
    status = fields.String()


# The quantities of a trace line's parties, their shipments and allocations, read in
# the line's item with ?display=true.
FIGURES = ("quantity", "accepted", "damaged", "short")
PARTY_FIGURES = ("quantity", "unshipped", "accepted", "damaged", "short")


def _parties(key: str) -> dict[str, tuple[str, ...]]:
    return {
        key: PARTY_FIGURES,
        f"{key}.shipments": FIGURES,
        f"{key}.allocations": FIGURES,
    }


class TracedAllocationSchema(DisplayField, Schema):
    allocation_id = fields.UUID()
    status = fields.String()
    quantity = fields.Integer()
    need_id = fields.UUID()
    pledge_id = fields.UUID(allow_none=True)
    shipment = fields.Nested(ShipmentRefSchema, allow_none=True)
    receipt_status = fields.String()
    accepted = fields.Integer()
    damaged = fields.Integer()
    short = fields.Integer()


class TracedShipmentSchema(DisplayField, ReceiptFiguresSchema):
    id = fields.UUID()
    status = fields.String()
    quantity = fields.Integer()


class CommunityTraceSchema(DisplayQuantities, Schema):
    display_fields = ("units_delivered", "delivered_from_these_shipments")

    households_reached = fields.Integer()
    people_served = fields.Integer()
    vulnerable_households_reached = fields.Integer()
    item = fields.String()
    base_unit = fields.String(allow_none=True)
    units_delivered = fields.Integer(
        metadata={"description": "Of the line's item, delivered inside the community"}
    )
    delivered_from_these_shipments = fields.Integer(
        metadata={
            "description": "Of those, from the shipments listed (first in, first out: the "
            "community's stock is one pool)"
        }
    )
    as_of = fields.AwareDateTime()


class PartySchema(DisplayField, Schema):
    org_id = fields.UUID(allow_none=True)
    name = fields.String()
    quantity = fields.Integer(metadata={"description": "Reserved, shipped or received"})
    unshipped = fields.Integer(metadata={"description": "Reserved, not yet in a shipment"})
    accepted = fields.Integer()
    damaged = fields.Integer()
    short = fields.Integer()
    shipments = fields.List(fields.Nested(TracedShipmentSchema))
    allocations = fields.List(fields.Nested(TracedAllocationSchema))
    community = fields.Nested(
        CommunityTraceSchema,
        allow_none=True,
        metadata={"description": "A community recipient: what it reached inside, as counts"},
    )


class OrgRefSchema(Schema):
    org_id = fields.UUID()
    name = fields.String()


class PledgeTraceLineSchema(DisplayQuantities, Schema):
    display_fields = ("quantity", "allocated", "accepted", "damaged", "short")
    display_nested = _parties("recipients")

    pledge_line_id = fields.UUID()
    item = fields.String()
    standard = fields.String(allow_none=True)
    quantity = fields.Integer()
    status = fields.String()
    allocated = fields.Integer()
    accepted = fields.Integer()
    damaged = fields.Integer()
    short = fields.Integer()
    recipients = fields.List(fields.Nested(PartySchema))


class PledgeTraceSchema(Schema):
    pledge_id = fields.UUID()
    donor = fields.Nested(OrgRefSchema)
    anonymous = fields.Boolean()
    lines = fields.List(fields.Nested(PledgeTraceLineSchema))


class NeedTraceLineSchema(DisplayQuantities, Schema):
    display_fields = ("quantity", "shipped", "received")
    display_nested = _parties("donors")

    need_line_id = fields.UUID()
    line_no = fields.Integer()
    item = fields.String()
    quantity = fields.Integer()
    status = fields.String()
    shipped = fields.Integer()
    received = fields.Integer()
    donors = fields.List(fields.Nested(PartySchema))


class NeedTraceSchema(Schema):
    need_id = fields.UUID()
    recipient = fields.Nested(OrgRefSchema)
    lines = fields.List(fields.Nested(NeedTraceLineSchema))


@trace_blp.route("/pledges/<uuid:pledge_id>/trace", methods=["GET"], parameters=[DISPLAY_PARAMETER])
@trace_blp.response(200, PledgeTraceSchema)
@require_roles()
def pledge_trace(pledge_id: uuid.UUID) -> Any:
    """For each line of the pledge: which recipient organisations got how much, through
    which shipments, and what their receipts said. For the donor and coordinators."""
    session = db_session()
    owner = trace.pledge_owner(session, pledge_id)
    if owner is None or not current_identity().can_act_for(owner):
        raise Problem(404, f"No pledge {pledge_id}.", slug="pledge-not-found")
    return trace.pledge_trace(session, pledge_id)


@trace_blp.route("/needs/<uuid:need_id>/trace", methods=["GET"], parameters=[DISPLAY_PARAMETER])
@trace_blp.response(200, NeedTraceSchema)
@require_roles()
def need_trace(need_id: uuid.UUID) -> Any:
    """For each line of the need: which donor organisations it came from, through which
    shipments, and what was received. For the recipient and coordinators; a donor who
    asked to stay anonymous appears as 'anonymous'."""
    session = db_session()
    identity = current_identity()
    need = session.get(Need, need_id)
    if need is None or not identity.can_act_for(need.org_id):
        raise Problem(404, f"No need {need_id}.", slug="need-not-found")
    return trace.need_trace(session, need, reveal_anonymous=identity.is_coordinator)
