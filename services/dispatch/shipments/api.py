"""The shipments API: consolidation by a coordinator, the logistics company's status
updates one by one or as a scanner's batch, and what each party may see."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta
from typing import Any

from flask import Response as FlaskResponse
from flask import jsonify, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from services.dispatch.models import Shipment, ShipmentLine
from services.dispatch.shipments import domain, service
from services.dispatch.shipments.service import ShipmentSchema
from shared.display_fields import DISPLAY_PARAMETER
from shared.http import etag, require_if_match
from shared.identity import current_identity, forbidden, require_roles
from shared.pagination import ListArgsSchema, page_schema, paginate
from shared.problems import Problem, flatten_errors
from shared.web import db_session, retries_on_conflict, runtime

blp = Blueprint(
    "shipments",
    __name__,
    url_prefix="/api/v1/shipments",
    description="Shipments: reserved allocations on their way, and their history",
)

CSV_COLUMNS = ("shipment_id", "status", "occurred_at", "location", "note")


# Schemas -----------------------------------------------------------------------------------


# Still in progress, as a run sheet lists them: not picked up yet, or on the way.
IN_PROGRESS = tuple(sorted(domain.BEFORE_PICKUP | domain.ON_THE_WAY))


class ShipmentListArgsSchema(ListArgsSchema):
    need_id = fields.UUID(metadata={"description": "Shipments carrying some of this need"})
    pledge_id = fields.UUID(metadata={"description": "Shipments carrying some of this pledge"})
    status = fields.String(validate=validate.OneOf(domain.STATUSES))
    logistics_org_id = fields.UUID()
    overdue = fields.Boolean(metadata={"description": "true: only those flagged overdue"})
    in_progress = fields.Boolean(
        metadata={
            "description": "true: only those not yet delivered (neither delivered, received "
            "nor in a final status), as a run sheet lists them; false: only those"
        }
    )
    tracking = fields.String(
        validate=validate.Length(min=1, max=100),
        metadata={
            "description": "A tracking number (AL-2020-000123) or the logistics company's "
            "own waybill number"
        },
    )


class ConsolidateSchema(Schema):
    allocation_ids = fields.List(
        fields.UUID(),
        required=True,
        validate=validate.Length(min=1, max=500),
        metadata={"description": "Reserved allocations of one origin and one destination"},
    )
    logistics_org_id = fields.UUID(load_default=None, allow_none=True)
    tracking_ref = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=1, max=100)
    )
    eta = fields.AwareDateTime(load_default=None, allow_none=True)


class ShipmentPatchSchema(Schema):
    logistics_org_id = fields.UUID(allow_none=True)
    tracking_ref = fields.String(allow_none=True, validate=validate.Length(min=1, max=100))
    eta = fields.AwareDateTime(allow_none=True)


class UpdateInSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(domain.STATUSES))
    occurred_at = fields.AwareDateTime(
        required=True, metadata={"description": "When it happened, with its zone"}
    )
    location = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class BatchRowSchema(UpdateInSchema):
    shipment_id = fields.String(
        required=True,
        validate=validate.Length(min=1, max=100),
        metadata={
            "description": "The shipment's id, its tracking number (AL-2020-000123, as "
            "printed on the waybill) or the logistics company's own waybill number"
        },
    )


class BatchInSchema(Schema):
    events = fields.List(fields.Dict(), required=True, metadata={"description": "The rows"})


class UpdateOutSchema(Schema):
    outcome = fields.String(metadata={"description": "applied, late or duplicate"})
    event = fields.Nested(service.ShipmentEventSchema)
    shipment = fields.Nested(ShipmentSchema)


class BatchResultSchema(Schema):
    index = fields.Integer(metadata={"description": "The row's place in the batch, from 0"})
    outcome = fields.String(metadata={"description": "applied, late, duplicate or refused"})
    shipment_id = fields.String(allow_none=True)
    status = fields.String(allow_none=True)
    occurred_at = fields.String(allow_none=True)
    reason = fields.String()
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))


class BatchOutSchema(Schema):
    rows = fields.Integer()
    applied = fields.Integer()
    late = fields.Integer()
    duplicate = fields.Integer()
    refused = fields.Integer()
    results = fields.List(fields.Nested(BatchResultSchema))


ShipmentPageSchema = page_schema(ShipmentSchema, "ShipmentPageSchema")


# Helpers -----------------------------------------------------------------------------------


def load_shipment(
    session: Session, shipment_id: uuid.UUID, *, for_update: bool = False
) -> Shipment:
    """The shipment, if the caller may see it; anyone else's is answered as not found.
    ``for_update``: read under its row lock (with its lines), and afresh."""
    shipment = (
        session.get(Shipment, shipment_id, with_for_update=True, populate_existing=True)
        if for_update
        else session.get(Shipment, shipment_id)
    )
    if shipment is None or not service.can_see(current_identity(), shipment):
        raise Problem(404, f"No shipment {shipment_id}.", slug="shipment-not-found")
    return shipment


def _dumped(schema: Schema, obj: Any) -> FlaskResponse:
    """A write's answer, dumped once while its session is open: the donor's name and the
    lines and history are read there (dumped after the session ended, the name came out
    empty), and the response decorator passes a response through as it is."""
    return jsonify(schema.dump(obj))


def _clock_skew() -> timedelta:
    return timedelta(seconds=runtime().settings.shipment_clock_skew)


def _batch_rows() -> list[dict[str, Any]]:
    """The batch's rows as dicts, from JSON ``{"events": [...]}`` or CSV with a header."""
    limit = runtime().settings.shipment_batch_max_rows
    mimetype = request.mimetype or ""
    raw: list[Any]
    if mimetype in ("text/csv", "application/csv"):
        try:
            text = request.get_data().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise Problem(
                422, "The CSV is not UTF-8.", errors={"file": ["Send UTF-8 text."]}
            ) from None
        reader = csv.DictReader(io.StringIO(text))
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [c for c in ("shipment_id", "status", "occurred_at") if c not in header]
        if missing:
            raise Problem(
                422,
                "The CSV needs the header " + ",".join(CSV_COLUMNS) + ".",
                errors={"header": [f"Missing column {c}." for c in missing]},
            )
        raw = []
        for record in reader:
            row = {
                (k or "").strip(): (v.strip() if isinstance(v, str) else v)
                for k, v in record.items()
            }
            raw.append({k: v for k, v in row.items() if k in CSV_COLUMNS and v not in ("", None)})
            if len(raw) > limit:
                break
    elif request.is_json:
        body = request.get_json(silent=True)
        try:
            events = BatchInSchema().load(body if isinstance(body, dict) else {})["events"]
        except ValidationError as exc:
            raise Problem(
                422, 'Send {"events": [...]}.', errors=flatten_errors(exc.messages)
            ) from None
        raw = list(events)
    else:
        raise Problem(
            415,
            "Send the batch as application/json or text/csv.",
            errors={"Content-Type": [f"{mimetype or 'none'} is not accepted."]},
        )
    if len(raw) > limit:
        raise Problem(
            422,
            f"A batch holds at most {limit} rows; split it.",
            errors={"events": [f"More than {limit} rows."]},
        )
    rows = []
    schema = BatchRowSchema()
    for index, record in enumerate(raw):
        try:
            row = dict(schema.load(record))
        except ValidationError as exc:
            row = {**record, "errors": flatten_errors(exc.messages)}
        row["index"] = index
        rows.append(row)
    return rows


# Endpoints ----------------------------------------------------------------------------------


@blp.route("", parameters=[DISPLAY_PARAMETER])
class Shipments(MethodView):
    @blp.arguments(ShipmentListArgsSchema, location="query")
    @blp.response(200, ShipmentPageSchema)
    @require_roles()
    def get(self, args: dict[str, Any]) -> Any:
        """Shipments you may see, oldest first: coordinators all, a donor those from its
        organisation, a recipient those to it, a logistics company those assigned to it."""
        stmt = select(Shipment)
        visible = service.visible_to(current_identity())
        if visible is not None:
            stmt = stmt.where(visible)
        if args.get("need_id"):
            stmt = stmt.where(
                Shipment.id.in_(
                    select(ShipmentLine.shipment_id).where(ShipmentLine.need_id == args["need_id"])
                )
            )
        if args.get("pledge_id"):
            stmt = stmt.where(
                Shipment.id.in_(
                    select(ShipmentLine.shipment_id).where(
                        ShipmentLine.pledge_id == args["pledge_id"]
                    )
                )
            )
        if args.get("status"):
            stmt = stmt.where(Shipment.status == args["status"])
        if args.get("logistics_org_id"):
            stmt = stmt.where(Shipment.logistics_org_id == args["logistics_org_id"])
        if args.get("tracking"):
            wanted = args["tracking"].strip()
            stmt = stmt.where(
                or_(Shipment.tracking_number == wanted.upper(), Shipment.tracking_ref == wanted)
            )
        if args.get("in_progress") is not None:
            # As a set of statuses, which the (logistics_org_id, status) index serves.
            in_progress = Shipment.status.in_(IN_PROGRESS)
            stmt = stmt.where(in_progress if args["in_progress"] else ~in_progress)
        if args.get("overdue") is True:
            stmt = stmt.where(Shipment.overdue_at.is_not(None))
        elif args.get("overdue") is False:
            stmt = stmt.where(Shipment.overdue_at.is_(None))
        return paginate(db_session(), stmt, Shipment, cursor=args["cursor"], limit=args["limit"])

    @retries_on_conflict
    @blp.arguments(ConsolidateSchema)
    @blp.response(201, ShipmentSchema, headers={"ETag": {"schema": {"type": "string"}}})
    @require_roles("coordinator")
    def post(self, data: dict[str, Any]) -> Any:
        """Consolidate reserved allocations of one origin and one destination into a new
        shipment, taking them off the planned shipments they were on."""
        rt = runtime()
        with rt.unit_of_work() as session:
            shipment = service.consolidate(
                session,
                rt.outbox,
                allocation_ids=data["allocation_ids"],
                logistics_org_id=data.get("logistics_org_id"),
                tracking_ref=data.get("tracking_ref"),
                eta=data.get("eta"),
                created_by=current_identity().user_id,
            )
            answer = _dumped(ShipmentSchema(), shipment)
        return answer, 201, {"ETag": etag(shipment.version)}


@blp.route("/<uuid:shipment_id>", parameters=[DISPLAY_PARAMETER])
class ShipmentById(MethodView):
    @blp.response(200, ShipmentSchema, headers={"ETag": {"schema": {"type": "string"}}})
    @require_roles()
    def get(self, shipment_id: uuid.UUID) -> Any:
        shipment = load_shipment(db_session(), shipment_id)
        return shipment, 200, {"ETag": etag(shipment.version)}

    @retries_on_conflict
    @blp.arguments(ShipmentPatchSchema)
    @blp.response(200, ShipmentSchema, headers={"ETag": {"schema": {"type": "string"}}})
    @require_roles()
    def patch(self, data: dict[str, Any], shipment_id: uuid.UUID) -> Any:
        """Assign the logistics company, the tracking reference or the ETA (coordinators;
        send If-Match with the ETag)."""
        rt = runtime()
        with rt.unit_of_work() as session:
            shipment = load_shipment(session, shipment_id)
            if not current_identity().is_coordinator:
                raise forbidden("Only coordinators assign shipments.")
            session.refresh(shipment, with_for_update=True)
            require_if_match(shipment.version)
            service.amend(session, shipment, data)
            answer = _dumped(ShipmentSchema(), shipment)
        return answer, 200, {"ETag": etag(shipment.version)}


@blp.route("/<uuid:shipment_id>/events", methods=["POST"], parameters=[DISPLAY_PARAMETER])
@retries_on_conflict
@blp.arguments(UpdateInSchema)
@blp.response(201, UpdateOutSchema, headers={"ETag": {"schema": {"type": "string"}}})
@blp.alt_response(200, schema=UpdateOutSchema, description="The same update was recorded before")
@require_roles()
def post_update(data: dict[str, Any], shipment_id: uuid.UUID) -> Any:
    """Record a status update (the logistics company assigned, or a coordinator). An
    update that happened before the current status is kept in the history as ``late``
    without moving the status; the same status at the same moment again is a
    ``duplicate`` (200); an impossible transition is a 409 naming both statuses."""
    rt = runtime()
    identity = current_identity()
    with rt.unit_of_work() as session:
        shipment = load_shipment(session, shipment_id, for_update=True)
        if not service.can_update(identity, shipment):
            raise forbidden("Only the logistics company assigned, or a coordinator, updates it.")
        outcome = service.record_update(
            session,
            rt.outbox,
            shipment,
            status=data["status"],
            occurred_at=data["occurred_at"],
            location=data.get("location"),
            note=data.get("note"),
            actor_id=identity.user_id,
            actor_org_id=identity.org_id,
            source="api",
            clock_skew=_clock_skew(),
            locked=True,
        )
        body = {"outcome": outcome.result, "event": outcome.event, "shipment": shipment}
        answer = _dumped(UpdateOutSchema(), body)
    status = 200 if outcome.result == "duplicate" else 201
    return answer, status, {"ETag": etag(shipment.version)}


@blp.route("/events:batch", methods=["POST"])
@blp.doc(
    requestBody={
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"events": {"type": "array", "items": {"type": "object"}}},
                }
            },
            "text/csv": {"schema": {"type": "string"}},
        },
        "description": 'JSON {"events": [{shipment_id, status, occurred_at, location?, '
        "note?}]} or CSV with the header " + ",".join(CSV_COLUMNS),
    }
)
@retries_on_conflict
@blp.response(200, BatchOutSchema)
@require_roles("logistics", "coordinator")
def post_batch() -> Any:
    """A scanner's batch. Each row is applied, kept as late, found a duplicate, or
    refused with its reason and field; the good rows stay whatever the bad ones are, and
    the same batch sent again applies nothing twice. At most
    ``AIDLINK_SHIPMENT_BATCH_MAX_ROWS`` rows (5000 unless configured otherwise)."""
    rows = _batch_rows()
    rt = runtime()
    identity = current_identity()
    if not identity.is_coordinator and not identity.org_active:
        raise forbidden(f"Your organisation is {identity.org_status}; it cannot update shipments.")
    with rt.unit_of_work() as session:
        results = service.apply_batch(session, rt.outbox, rows, identity, clock_skew=_clock_skew())
    counts = {name: 0 for name in ("applied", "late", "duplicate", "refused")}
    for result in results:
        counts[result.outcome] += 1
    return {"rows": len(results), **counts, "results": [r.as_dict() for r in results]}
