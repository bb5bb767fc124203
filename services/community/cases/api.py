"""The cases API: a resident's request for a service taken in as a case, handed to a
social worker with hours to spare, followed up and closed; the social workers' hours;
and the committee's counts.

A case's notes (summary, follow-ups, closing note) are answered only to its social
worker, the case supervisors and a coordinator giving a reason (X-Access-Reason,
recorded); whoever took the case in reads its status; the committee reads counts."""

from __future__ import annotations

import uuid
from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from services.community.cases import domain, service
from services.community.cases.domain import View
from services.community.residents.api import standing
from shared.http import etag, require_if_match
from shared.identity import require_login
from shared.pagination import ListArgsSchema
from shared.web import db_session, runtime

blp = Blueprint(
    "community_cases",
    __name__,
    url_prefix="/api/v1/community",
    description="Residents' cases: intake, assignment to social workers, follow-ups, closing",
)

NOTE = validate.Length(min=1, max=4000)


def _if_match(version: int) -> None:
    """Commands on a case may name the version they were based on (its ETag): checked
    once the caller is known to be allowed, and before the change commits."""
    if request.headers.get("If-Match"):
        require_if_match(version)


# Schemas -------------------------------------------------------------------------------


class CaseInSchema(Schema):
    kind = fields.String(
        required=True,
        validate=validate.OneOf(domain.KINDS),
        metadata={"description": "What the resident asks for: " + ", ".join(domain.KINDS)},
    )
    urgency = fields.String(
        load_default="routine",
        validate=validate.OneOf(domain.URGENCIES),
        metadata={"description": "routine, soon or urgent (routine if left out)"},
    )
    household_id = fields.UUID(
        load_default=None,
        allow_none=True,
        metadata={
            "description": "The resident's household, if any: a household of the community "
            "(for a building leader, of a building they lead)"
        },
    )
    summary = fields.String(
        required=True,
        validate=NOTE,
        metadata={"description": "What the resident needs, in the words of whoever took it in"},
    )


class FollowUpSchema(Schema):
    id = fields.UUID()
    kind = fields.String(
        metadata={
            "description": "note (a follow-up), closing (the closing note of an earlier "
            "closing) or reopened (why it was reopened)"
        }
    )
    at = fields.AwareDateTime(metadata={"description": "When it happened"})
    note = fields.String(allow_none=True, metadata={"description": "Empty once erased"})
    by = fields.UUID(allow_none=True, metadata={"description": "The user who wrote it"})
    recorded_at = fields.AwareDateTime()


class CaseSchema(Schema):
    id = fields.UUID()
    number = fields.String(metadata={"description": "The number people use: C-2026-0001"})
    kind = fields.String()
    urgency = fields.String()
    status = fields.String(metadata={"description": "open, assigned, in_progress or closed"})
    household_id = fields.UUID(allow_none=True)
    building_id = fields.UUID(allow_none=True, metadata={"description": "The household's"})
    taken_by = fields.UUID(allow_none=True, metadata={"description": "Who took it in"})
    assigned_to = fields.UUID(allow_none=True, metadata={"description": "Its social worker"})
    assigned_at = fields.AwareDateTime(allow_none=True)
    closed_at = fields.AwareDateTime(allow_none=True)
    erased = fields.Boolean(
        metadata={"description": "The household or organisation was erased: no text is kept"}
    )
    version = fields.Integer(metadata={"description": "Also the ETag"})
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    notes_visible = fields.Boolean(
        metadata={"description": "Whether the caller reads the case's notes"}
    )
    summary = fields.String(
        allow_none=True,
        metadata={
            "description": "The assigned worker, case supervisors and a coordinator with a "
            "reason; whoever took the case in until it is assigned. Left out otherwise"
        },
    )
    closing_note = fields.String(
        allow_none=True,
        metadata={"description": "How it ended: for those who read the notes"},
    )
    follow_ups = fields.List(
        fields.Nested(FollowUpSchema),
        metadata={"description": "Dated notes, oldest first: for those who read the notes"},
    )


class CaseListArgs(ListArgsSchema):
    status = fields.String(validate=validate.OneOf(domain.STATUSES), load_default=None)
    kind = fields.String(validate=validate.OneOf(domain.KINDS), load_default=None)
    urgency = fields.String(validate=validate.OneOf(domain.URGENCIES), load_default=None)
    assigned_to = fields.UUID(load_default=None, metadata={"description": "A social worker"})
    household_id = fields.UUID(load_default=None)
    number = fields.String(load_default=None, validate=validate.Length(max=20))


class CasePageSchema(Schema):
    items = fields.List(fields.Nested(CaseSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class AssignSchema(Schema):
    social_worker_id = fields.UUID(
        load_default=None,
        allow_none=True,
        metadata={"description": "The user id of a social worker of this community"},
    )
    auto = fields.Boolean(
        load_default=False,
        metadata={
            "description": "Assign to the social worker with most hours a day to spare, "
            "their active cases reckoned by urgency (routine 0.5 h, soon 1 h, urgent 2 h)"
        },
    )

    @validates_schema
    def _one_of(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if (data.get("social_worker_id") is None) == (not data.get("auto")):
            raise ValidationError(
                "Name a social worker, or ask for auto assignment; not both.",
                "social_worker_id",
            )


class FollowUpInSchema(Schema):
    note = fields.String(required=True, validate=NOTE, metadata={"description": "What happened"})
    at = fields.AwareDateTime(
        load_default=None,
        allow_none=True,
        metadata={"description": "When it happened (now if left out); not in the future"},
    )


class CloseSchema(Schema):
    closing_note = fields.String(
        required=True, validate=NOTE, metadata={"description": "How the case ended"}
    )


class ReopenSchema(Schema):
    reason = fields.String(
        required=True,
        validate=validate.Length(min=3, max=4000),
        metadata={"description": "Why the case is taken up again"},
    )


class SummarySchema(Schema):
    org_id = fields.UUID()
    open = fields.Integer(metadata={"description": "Cases not yet closed"})
    closed = fields.Integer()
    by_status = fields.Dict(metadata={"description": "open, assigned, in_progress, closed"})
    by_urgency = fields.Dict(metadata={"description": "Cases not yet closed, per urgency"})
    by_kind = fields.Dict(
        metadata={"description": "Cases not yet closed, per kind, then per urgency"}
    )


class WorkerSchema(Schema):
    user_id = fields.UUID()
    name = fields.String(allow_none=True)
    hours_per_day = fields.Float(metadata={"description": "What the worker can give"})
    active_cases = fields.Integer(metadata={"description": "Assigned or in progress"})
    by_urgency = fields.Dict()
    load_hours = fields.Float(metadata={"description": "Active cases reckoned by urgency"})
    spare_hours = fields.Float(metadata={"description": "hours_per_day - load_hours"})


class WorkerListSchema(Schema):
    items = fields.List(fields.Nested(WorkerSchema))


class HoursSchema(Schema):
    hours_per_day = fields.Float(
        required=True,
        validate=validate.Range(min=0, max=24),
        metadata={"description": "Hours a day the social worker can give cases (0 to 24)"},
    )


# Endpoints -----------------------------------------------------------------------------


def _answer(case: Any, view: View) -> Any:
    return service.dump(db_session(), case, view), 200, {"ETag": etag(case.version)}


@blp.route("/<uuid:org_id>/cases")
class Cases(MethodView):
    @blp.arguments(CaseListArgs, location="query")
    @blp.response(200, CasePageSchema)
    @require_login
    def get(self, args: dict[str, Any], org_id: uuid.UUID) -> Any:
        """Cases the caller may see, oldest first: all of them, with their notes, for
        case supervisors (and a coordinator giving a reason); those assigned to a social
        worker; those a caller took in (their status)."""
        found = standing(org_id, "cases")
        return service.list_cases(db_session(), found, args)

    @blp.arguments(CaseInSchema)
    @blp.response(201, CaseSchema)
    @require_login
    def post(self, data: dict[str, Any], org_id: uuid.UUID) -> Any:
        """Take a resident's request in as a case (social workers, building leaders for
        their buildings' households, case supervisors, the committee): open, with a
        number people can read."""
        found = standing(org_id, "case intake")
        with runtime().unit_of_work() as session:
            case = service.take_in(session, found, data)
            view = domain.view_of(found, service.facts(case))
            return service.dump(session, case, view), 201, {"ETag": etag(case.version)}


@blp.route("/<uuid:org_id>/cases/summary")
class CaseSummary(MethodView):
    @blp.response(200, SummarySchema)
    @require_login
    def get(self, org_id: uuid.UUID) -> Any:
        """Counts only: cases not yet closed by kind and urgency, and by status (the
        committee, case supervisors and coordinators)."""
        found = standing(org_id, "case counts", residents=False)
        service.require_counts(found)
        return service.summary(db_session(), org_id)


@blp.route("/<uuid:org_id>/cases/<uuid:case_id>")
class CaseById(MethodView):
    @blp.response(200, CaseSchema)
    @require_login
    def get(self, org_id: uuid.UUID, case_id: uuid.UUID) -> Any:
        """One case, as much of it as the caller reads; its version is the ETag."""
        found = standing(org_id, "case")
        case, view = service.get_case(db_session(), found, case_id)
        return _answer(case, view)


@blp.route("/<uuid:org_id>/cases/<uuid:case_id>/assign", methods=["POST"])
class Assign(MethodView):
    @blp.arguments(AssignSchema)
    @blp.response(200, CaseSchema)
    @require_login
    def post(self, data: dict[str, Any], org_id: uuid.UUID, case_id: uuid.UUID) -> Any:
        """Hand the case to a social worker of the community (the committee and case
        supervisors): the one named in social_worker_id (422 if they are not one), or,
        with auto, the one with most spare hours (409 if no one has room)."""
        found = standing(org_id, "case assignment")
        with runtime().unit_of_work() as session:
            before = service.case_in(session, org_id, case_id).version
            case = service.assign(
                session,
                found,
                case_id,
                social_worker_id=data["social_worker_id"],
                auto=data["auto"],
            )
            _if_match(before)
            view = domain.view_of(found, service.facts(case))
            return service.dump(session, case, view), 200, {"ETag": etag(case.version)}


@blp.route("/<uuid:org_id>/cases/<uuid:case_id>/follow-ups", methods=["POST"])
class FollowUps(MethodView):
    @blp.arguments(FollowUpInSchema)
    @blp.response(201, FollowUpSchema)
    @require_login
    def post(self, data: dict[str, Any], org_id: uuid.UUID, case_id: uuid.UUID) -> Any:
        """A dated follow-up (the case's social worker or a case supervisor); the
        worker's first one puts an assigned case in progress."""
        found = standing(org_id, "case follow-up")
        with runtime().unit_of_work() as session:
            before = service.case_in(session, org_id, case_id).version
            entry = service.follow_up(session, found, case_id, note=data["note"], at=data["at"])
            _if_match(before)
            return entry


@blp.route("/<uuid:org_id>/cases/<uuid:case_id>/close", methods=["POST"])
class Close(MethodView):
    @blp.arguments(CloseSchema)
    @blp.response(200, CaseSchema)
    @require_login
    def post(self, data: dict[str, Any], org_id: uuid.UUID, case_id: uuid.UUID) -> Any:
        """Close the case with a note on how it ended (its social worker or a case
        supervisor)."""
        found = standing(org_id, "case closing")
        with runtime().unit_of_work() as session:
            before = service.case_in(session, org_id, case_id).version
            case = service.close(session, found, case_id, data["closing_note"])
            _if_match(before)
            view = domain.view_of(found, service.facts(case))
            return service.dump(session, case, view), 200, {"ETag": etag(case.version)}


@blp.route("/<uuid:org_id>/cases/<uuid:case_id>/reopen", methods=["POST"])
class Reopen(MethodView):
    @blp.arguments(ReopenSchema)
    @blp.response(200, CaseSchema)
    @require_login
    def post(self, data: dict[str, Any], org_id: uuid.UUID, case_id: uuid.UUID) -> Any:
        """Take a closed case up again (case supervisors): back to its social worker,
        or open if they no longer are one; the closing note stays in its history."""
        found = standing(org_id, "case reopening")
        with runtime().unit_of_work() as session:
            before = service.case_in(session, org_id, case_id).version
            case = service.reopen(session, found, case_id, data["reason"])
            _if_match(before)
            view = domain.view_of(found, service.facts(case))
            return service.dump(session, case, view), 200, {"ETag": etag(case.version)}


@blp.route("/<uuid:org_id>/case-workers")
class CaseWorkers(MethodView):
    @blp.response(200, WorkerListSchema)
    @require_login
    def get(self, org_id: uuid.UUID) -> Any:
        """Social workers' hours a day, active cases and spare hours: all of them for
        the committee and case supervisors, their own for a social worker."""
        found = standing(org_id, "social workers", residents=False)
        return {"items": service.list_workers(db_session(), found)}


@blp.route("/<uuid:org_id>/case-workers/<uuid:user_id>/hours")
class CaseWorkerHours(MethodView):
    @blp.arguments(HoursSchema)
    @blp.response(200, WorkerSchema)
    @require_login
    def put(self, data: dict[str, Any], org_id: uuid.UUID, user_id: uuid.UUID) -> Any:
        """State the hours a day a social worker can give: the worker themself, the
        committee or a case supervisor."""
        found = standing(org_id, "social worker hours", residents=False)
        with runtime().unit_of_work() as session:
            return service.set_hours(session, found, user_id, data["hours_per_day"])
