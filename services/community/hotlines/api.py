"""The hotlines API: an organisation's hotlines; the call log its operators keep (any
signed-in member of the hotline's organisation); an emergency call made a household
delivery or a case in the caller's community in one step; a counselling call booked
as a request for help; and the daily figures per hotline and per organisation.

Coordinators read everything and set up hotlines; anyone else is answered as if a
hotline did not exist. A call holds no caller's name or number."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from services.community.cases import domain as case_rules
from services.community.hotlines import domain, service
from services.community.residents.domain import FLAGS
from services.community.sessions.api import RequestInSchema
from shared.catalog.regions import RegionCode
from shared.http import etag, require_if_match
from shared.identity import current_identity, require_login
from shared.pagination import ListArgsSchema
from shared.web import db_session, runtime

blp = Blueprint(
    "community_hotlines",
    __name__,
    url_prefix="/api/v1/community/hotlines",
    description="Hotlines: the operators' call log, emergency calls taken further, daily figures",
)


def _if_match(version: int) -> None:
    """Steps on a call may name the version they were based on (its ETag)."""
    if request.headers.get("If-Match"):
        require_if_match(version)


def _today() -> date:
    return domain.beijing_day(datetime.now(domain.BEIJING))


# Schemas -------------------------------------------------------------------------------


class HotlineInSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    org_id = fields.UUID(
        load_default=None,
        allow_none=True,
        metadata={"description": "Coordinators name the organisation; its admins leave it out"},
    )
    phone = fields.String(
        required=True,
        validate=[
            validate.Length(min=3, max=32),
            validate.Regexp(r"^\+?[0-9][0-9 \-]*$", error="Digits, spaces and dashes."),
        ],
        metadata={"description": "The hotline's public number"},
    )
    languages = fields.List(
        fields.String(validate=validate.Length(min=2, max=16)),
        required=True,
        validate=validate.Length(min=1, max=10),
        metadata={"description": "Languages and dialects its operators speak: zh, yue, en"},
    )
    region = fields.String(
        required=True,
        validate=RegionCode(),
        metadata={"description": "The region it serves (GB/T 2260: 42, 4201, 420102)"},
    )


class HotlineSchema(Schema):
    id = fields.UUID()
    org_id = fields.UUID()
    name = fields.String()
    phone = fields.String()
    languages = fields.List(fields.String())
    region = fields.String()
    version = fields.Integer()
    created_at = fields.AwareDateTime()


class HotlineListSchema(Schema):
    items = fields.List(fields.Nested(HotlineSchema))


class CallInSchema(Schema):
    category = fields.String(
        required=True,
        validate=validate.OneOf(domain.CATEGORIES),
        metadata={"description": ", ".join(domain.CATEGORIES)},
    )
    community_org_id = fields.UUID(
        load_default=None,
        allow_none=True,
        metadata={"description": "The caller's community (a community committee)"},
    )
    region = fields.String(
        load_default=None,
        allow_none=True,
        validate=RegionCode(),
        metadata={"description": "The caller's region, if no community (GB/T 2260)"},
    )
    minutes = fields.Integer(required=True, validate=validate.Range(min=0, max=domain.MAX_MINUTES))
    at = fields.AwareDateTime(
        load_default=None,
        allow_none=True,
        metadata={"description": "When the call came in (now if left out; not in the future)"},
    )


class CallSchema(Schema):
    id = fields.UUID()
    hotline_id = fields.UUID()
    org_id = fields.UUID()
    category = fields.String()
    community_org_id = fields.UUID(allow_none=True)
    region = fields.String(allow_none=True)
    minutes = fields.Integer()
    at = fields.AwareDateTime()
    day = fields.Date(metadata={"description": "The Beijing day it counts for"})
    logged_by = fields.UUID(allow_none=True, metadata={"description": "The operator"})
    became = fields.String(
        allow_none=True, metadata={"description": "delivery, case or booking, once taken further"}
    )
    delivery_id = fields.UUID(allow_none=True)
    case_id = fields.UUID(allow_none=True)
    help_request_id = fields.UUID(allow_none=True)
    became_at = fields.AwareDateTime(allow_none=True)
    version = fields.Integer(metadata={"description": "Also the ETag"})
    created_at = fields.AwareDateTime()


class CallPageSchema(Schema):
    items = fields.List(fields.Nested(CallSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class CallListArgs(ListArgsSchema):
    day = fields.Date(
        load_default=None, metadata={"description": "A Beijing day, YYYY-MM-DD: its calls only"}
    )


class DoorSchema(Schema):
    building_id = fields.UUID(load_default=None, allow_none=True)
    building = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=1, max=64),
        metadata={"description": "The building's name, as the caller says it"},
    )
    unit = fields.String(load_default="", validate=validate.Length(max=16))
    room = fields.String(required=True, validate=validate.Length(min=1, max=16))
    people = fields.Integer(load_default=1, validate=validate.Range(min=1, max=50))
    flags = fields.List(
        fields.String(validate=validate.OneOf(FLAGS)),
        load_default=None,
        allow_none=True,
        metadata={"description": "elderly_alone if left out"},
    )
    note = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=500),
        metadata={"description": "For whoever brings the goods (the person's name...): personal"},
    )
    phone = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=32),
        metadata={"description": "The person's phone: kept with the household only"},
    )


class EmergencyInSchema(Schema):
    as_ = fields.String(
        data_key="as",
        required=True,
        validate=validate.OneOf(domain.EMERGENCY_AS),
        metadata={"description": "delivery or case"},
    )
    community_org_id = fields.UUID(
        load_default=None,
        allow_none=True,
        metadata={"description": "The caller's community, if the call was logged without it"},
    )
    household_id = fields.UUID(
        load_default=None,
        allow_none=True,
        metadata={"description": "A household the community already has"},
    )
    household = fields.Nested(
        DoorSchema,
        load_default=None,
        allow_none=True,
        metadata={"description": "As a delivery: the door, if no household_id (found or made)"},
    )
    items = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=64)),
        values=fields.Integer(validate=validate.Range(min=1, max=1000)),
        load_default=dict,
        metadata={
            "description": "As a delivery: community catalogue item -> ordered units "
            "(vegetables in jin, rice in kg...), from the community's stock"
        },
    )
    kind = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.OneOf(case_rules.KINDS),
        metadata={"description": "As a case: its kind (medicine_pickup if left out)"},
    )
    urgency = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.OneOf(case_rules.URGENCIES),
        metadata={"description": "As a case: urgent if left out"},
    )
    summary = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=4000),
        metadata={
            "description": "As a case: what the caller needs and how to reach them "
            "(personal: kept in the case only)"
        },
    )


class EmergencyAnswerSchema(CallSchema):
    household_id = fields.UUID(
        allow_none=True, metadata={"description": "As a case: the household it names"}
    )
    building_id = fields.UUID(allow_none=True)
    delivery_items = fields.Dict(
        metadata={"description": "What the delivery brings: relief item -> base units"}
    )
    case_number = fields.String()


class BookingAnswerSchema(CallSchema):
    urgency = fields.String()
    crisis = fields.Boolean()
    crisis_line = fields.String(allow_none=True)


class ReportArgs(Schema):
    day = fields.Date(
        load_default=None, metadata={"description": "A Beijing day, YYYY-MM-DD (today if left out)"}
    )


class OrgReportArgs(ReportArgs):
    org_id = fields.UUID(
        load_default=None,
        metadata={"description": "Coordinators name it; members get their own organisation's"},
    )


class EmergencyFiguresSchema(Schema):
    requests = fields.Integer(metadata={"description": "Emergency calls"})
    deliveries = fields.Integer(metadata={"description": "Made household deliveries"})
    cases = fields.Integer(metadata={"description": "Made cases"})
    fulfilled = fields.Integer(
        metadata={"description": "Of those, the delivery delivered or the case closed"}
    )


class FiguresSchema(Schema):
    calls = fields.Integer(metadata={"description": "Callers served"})
    by_category = fields.Dict(metadata={"description": ", ".join(domain.CATEGORIES)})
    minutes = fields.Integer()
    emergency = fields.Nested(EmergencyFiguresSchema)
    bookings = fields.Integer(metadata={"description": "Counselling calls booked"})


class HotlineReportSchema(FiguresSchema):
    hotline_id = fields.UUID()
    org_id = fields.UUID()
    day = fields.Date()


class HotlineFiguresSchema(FiguresSchema):
    hotline_id = fields.UUID()
    name = fields.String()


class OrgReportSchema(FiguresSchema):
    org_id = fields.UUID()
    day = fields.Date()
    hotlines = fields.List(fields.Nested(HotlineFiguresSchema))


# Endpoints -----------------------------------------------------------------------------


@blp.route("")
class Hotlines(MethodView):
    @blp.response(200, HotlineListSchema)
    @require_login
    def get(self) -> Any:
        """Hotlines: every one for coordinators, their organisation's for its members."""
        found = service.list_hotlines(db_session(), current_identity())
        return {"items": [service.dump_hotline(h) for h in found]}

    @blp.arguments(HotlineInSchema)
    @blp.response(201, HotlineSchema)
    @require_login
    def post(self, data: dict[str, Any]) -> Any:
        """Set up a hotline: an organisation's admins for their own verified
        organisation, or a coordinator naming the organisation."""
        with runtime().unit_of_work() as session:
            hotline = service.create_hotline(session, current_identity(), data)
            return service.dump_hotline(hotline), 201, {"ETag": etag(hotline.version)}


@blp.route("/report")
class OrganisationReport(MethodView):
    @blp.arguments(OrgReportArgs, location="query")
    @blp.response(200, OrgReportSchema)
    @require_login
    def get(self, args: dict[str, Any]) -> Any:
        """An organisation's figures of a Beijing day, all its hotlines together and
        each on its own (its members; coordinators for any)."""
        return service.organisation_report(
            db_session(), current_identity(), args["org_id"], args["day"] or _today()
        )


@blp.route("/<uuid:hotline_id>")
class HotlineById(MethodView):
    @blp.response(200, HotlineSchema)
    @require_login
    def get(self, hotline_id: uuid.UUID) -> Any:
        """A hotline: its organisation's members and coordinators."""
        hotline = service.get_hotline(db_session(), current_identity(), hotline_id)
        return service.dump_hotline(hotline), 200, {"ETag": etag(hotline.version)}


@blp.route("/<uuid:hotline_id>/report")
class HotlineReport(MethodView):
    @blp.arguments(ReportArgs, location="query")
    @blp.response(200, HotlineReportSchema)
    @require_login
    def get(self, args: dict[str, Any], hotline_id: uuid.UUID) -> Any:
        """A hotline's figures of a Beijing day: callers served, by category, minutes,
        emergency requests and how many were fulfilled, bookings made."""
        return service.hotline_report(
            db_session(), current_identity(), hotline_id, args["day"] or _today()
        )


@blp.route("/<uuid:hotline_id>/calls")
class Calls(MethodView):
    @blp.arguments(CallListArgs, location="query")
    @blp.response(200, CallPageSchema)
    @require_login
    def get(self, args: dict[str, Any], hotline_id: uuid.UUID) -> Any:
        """The call log, newest first, of one Beijing day if ``day`` is given."""
        return service.list_calls(
            db_session(),
            current_identity(),
            hotline_id,
            day=args["day"],
            cursor=args["cursor"],
            limit=args["limit"],
        )

    @blp.arguments(CallInSchema)
    @blp.response(201, CallSchema)
    @require_login
    def post(self, data: dict[str, Any], hotline_id: uuid.UUID) -> Any:
        """Log a call (the hotline's operators): category, the caller's community or
        region, minutes; no caller's name or number."""
        with runtime().unit_of_work() as session:
            call = service.log_call(session, current_identity(), hotline_id, data)
            return service.dump_call(call), 201, {"ETag": etag(call.version)}


@blp.route("/<uuid:hotline_id>/calls/<uuid:call_id>")
class CallById(MethodView):
    @blp.response(200, CallSchema)
    @require_login
    def get(self, hotline_id: uuid.UUID, call_id: uuid.UUID) -> Any:
        """One call; its version is the ETag."""
        call = service.get_call(db_session(), current_identity(), hotline_id, call_id)
        return service.dump_call(call), 200, {"ETag": etag(call.version)}


@blp.route("/<uuid:hotline_id>/calls/<uuid:call_id>/emergency", methods=["POST"])
class Emergency(MethodView):
    @blp.arguments(EmergencyInSchema)
    @blp.response(201, EmergencyAnswerSchema)
    @require_login
    def post(self, data: dict[str, Any], hotline_id: uuid.UUID, call_id: uuid.UUID) -> Any:
        """Take an emergency call further in one step, all or nothing: as a household
        delivery from the caller's community's stock (409 naming an item it lacks), or
        as an urgent case in that community. A second step on the call is a 409."""
        identity = current_identity()
        with runtime().unit_of_work() as session:
            before = service.get_call(session, identity, hotline_id, call_id).version
            command = {**data, "as": data.pop("as_")}
            made = service.emergency(session, identity, hotline_id, call_id, command)
            _if_match(before)
            return made, 201, {"ETag": etag(made["version"])}


@blp.route("/<uuid:hotline_id>/calls/<uuid:call_id>/booking", methods=["POST"])
class Booking(MethodView):
    @blp.arguments(RequestInSchema)
    @blp.response(201, BookingAnswerSchema)
    @require_login
    def post(self, data: dict[str, Any], hotline_id: uuid.UUID, call_id: uuid.UUID) -> Any:
        """Book a counselling call into the queue for a session: a request for help
        (the caller's contact and words kept there only). The answer carries the crisis
        line when the words speak of self-harm."""
        identity = current_identity()
        with runtime().unit_of_work() as session:
            before = service.get_call(session, identity, hotline_id, call_id).version
            call, asked = service.book(session, identity, hotline_id, call_id, data)
            _if_match(before)
            answer = {
                **service.dump_call(call),
                "urgency": asked.urgency,
                "crisis": asked.crisis,
                "crisis_line": runtime().settings.crisis_line if asked.crisis else None,
            }
            return answer, 201, {"ETag": etag(call.version)}
