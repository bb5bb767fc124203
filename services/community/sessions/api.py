"""The help API: helpers registered through their organisation and verified by a
coordinator; requests for help (signed in or through the public form); a
coordinator's scheduling runs, previewed then approved into sessions; the helper's
sessions, confirmed or declined, and the seeker's contact within the session's window.

What a seeker wrote and how to reach them are answered to the session's helper alone,
within the session's window (each reveal recorded); coordinators see the queue without
them; a helper of another organisation sees nothing of these."""

from __future__ import annotations

import uuid
from typing import Any

from flask import current_app, request
from flask.blueprints import BlueprintSetupState
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from services.community.sessions import domain, service
from services.community.sessions.contact import ContactProvider, provider_of
from shared.http import etag, require_if_match
from shared.identity import current_identity, require_login
from shared.problems import Problem
from shared.web import db_session, runtime

blp = Blueprint(
    "community_help",
    __name__,
    url_prefix="/api/v1/community/help",
    description="Help from people's time: helpers, requests for help, scheduling, sessions",
)

# Where the app keeps the contact provider it resolved when it was made.
PROVIDER = "aidlink.help_contact_provider"


@blp.record_once
def _resolve_provider(state: BlueprintSetupState) -> None:
    """The contact provider, resolved once as the app is made: a setting that names
    none that works stops the service from starting (a ConfigError naming it), rather
    than failing every Join."""
    state.app.extensions[PROVIDER] = provider_of(state.app.extensions["aidlink"].settings)


def _provider() -> ContactProvider | None:
    provider: ContactProvider | None = current_app.extensions[PROVIDER]
    return provider


def _rule() -> tuple[str, ...]:
    """The coordinators' rule of who is served first within an urgency."""
    return service.priority_rule(db_session(), runtime().settings.help_priority_groups)


def _if_match_revision() -> int | None:
    """The revision an If-Match names (none sent, or "*": None); anything else that
    is not an ETag of ours is stale (412)."""
    header = (request.headers.get("If-Match") or "").strip()
    if not header or header == "*":
        return None
    tag = header.split(",")[0].strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise Problem(412, "If-Match names no revision of ours.", slug="stale-version")
    return int(tag)


# Schemas -------------------------------------------------------------------------------


class AvailabilitySchema(Schema):
    weekday = fields.Integer(
        required=True,
        validate=validate.Range(min=0, max=6),
        metadata={"description": "0 is Monday"},
    )
    start = fields.Time(required=True, metadata={"description": "Local time, HH:MM"})
    end = fields.Time(required=True, metadata={"description": "Local time, HH:MM"})

    @validates_schema
    def _ordered(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if data["end"] <= data["start"]:
            raise ValidationError("The end must be after the start.", "end")


class QualificationSchema(Schema):
    kind = fields.String(
        required=True,
        validate=validate.Length(min=1, max=100),
        metadata={"description": "E.g. national counsellor certificate, level 2"},
    )
    evidence = fields.String(
        required=True,
        validate=validate.Length(min=1, max=2000),
        metadata={"description": "A certificate's number or a reference a coordinator checks"},
    )


class HelperInSchema(Schema):
    user_id = fields.UUID(
        load_default=None,
        allow_none=True,
        metadata={
            "description": "A member of the caller's organisation (its admins); yourself "
            "if left out"
        },
    )
    name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=100))
    kinds = fields.List(
        fields.String(validate=validate.OneOf(domain.HELPER_KINDS)),
        required=True,
        validate=validate.Length(min=1),
        metadata={"description": ", ".join(domain.HELPER_KINDS)},
    )
    topics = fields.List(
        fields.String(validate=validate.Length(min=1, max=32)),
        required=True,
        validate=validate.Length(min=1, max=20),
        metadata={"description": "The form's topics: " + ", ".join(domain.TOPICS)},
    )
    languages = fields.List(
        fields.String(validate=validate.Length(min=2, max=16)),
        required=True,
        validate=validate.Length(min=1, max=10),
        metadata={"description": "Languages and dialects, e.g. zh, en, yue"},
    )
    daily_limit = fields.Integer(
        required=True,
        validate=validate.Range(min=0, max=24),
        metadata={"description": "The most sessions a day (the helper's own day)"},
    )
    timezone = fields.String(
        load_default="Asia/Shanghai",
        validate=validate.Length(min=1, max=64),
        metadata={"description": "IANA time zone of the availability"},
    )
    availability = fields.List(
        fields.Nested(AvailabilitySchema),
        load_default=list,
        validate=validate.Length(max=70),
        metadata={"description": "Weekly free time: sessions of 50 minutes on the hour"},
    )
    qualifications = fields.List(
        fields.Nested(QualificationSchema),
        required=True,
        validate=validate.Length(min=1, max=10),
    )


class HelperSchema(Schema):
    id = fields.UUID()
    org_id = fields.UUID()
    user_id = fields.UUID()
    name = fields.String(allow_none=True)
    kinds = fields.List(fields.String())
    topics = fields.List(fields.String())
    languages = fields.List(fields.String())
    daily_limit = fields.Integer()
    timezone = fields.String()
    availability = fields.List(fields.Dict())
    qualifications = fields.List(fields.Dict())
    status = fields.String(
        metadata={"description": "pending, verified, rejected or withdrawn (left, or erased)"}
    )
    decision_reason = fields.String(allow_none=True)
    decided_at = fields.AwareDateTime(allow_none=True)
    version = fields.Integer()
    created_at = fields.AwareDateTime()


class HelperListSchema(Schema):
    items = fields.List(fields.Nested(HelperSchema))


class DecisionSchema(Schema):
    decision = fields.String(required=True, validate=validate.OneOf(("verified", "rejected")))
    reason = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=500),
        metadata={"description": "Required for a rejection"},
    )


class TimeSchema(Schema):
    start = fields.AwareDateTime(required=True)
    end = fields.AwareDateTime(required=True)


class RequestInSchema(Schema):
    topic = fields.String(
        required=True,
        validate=validate.OneOf(domain.TOPICS),
        metadata={"description": ", ".join(domain.TOPICS)},
    )
    urgency = fields.String(
        load_default="routine",
        validate=validate.OneOf(domain.URGENCIES),
        metadata={"description": "crisis, urgent, soon or routine"},
    )
    priority_group = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.OneOf(domain.PRIORITY_GROUPS),
        metadata={"description": ", ".join(domain.PRIORITY_GROUPS)},
    )
    languages = fields.List(
        fields.String(validate=validate.Length(min=2, max=16)),
        required=True,
        validate=validate.Length(min=1, max=5),
    )
    preferred_times = fields.List(
        fields.Nested(TimeSchema), load_default=list, validate=validate.Length(max=20)
    )
    text = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=4000),
        metadata={"description": "What the person wants to talk about (personal)"},
    )
    contact = fields.String(
        required=True,
        validate=validate.Length(min=3, max=200),
        metadata={
            "description": "A phone number or contact (personal): shown to the "
            "assigned helper only within the session's window"
        },
    )


class RequestAnswerSchema(Schema):
    id = fields.UUID()
    status = fields.String()
    urgency = fields.String()
    crisis = fields.Boolean(
        metadata={"description": "The text speaks of self-harm: handled as a crisis"}
    )
    crisis_line = fields.String(
        allow_none=True,
        metadata={"description": "For a crisis: the number to call now (AIDLINK_CRISIS_LINE)"},
    )
    follow_token = fields.String(
        allow_none=True,
        metadata={
            "description": "Asked without signing in: the token to follow the request "
            "with (GET .../requests/{id}/status?token=...), answered this once"
        },
    )


class RequestSchema(Schema):
    id = fields.UUID()
    topic = fields.String()
    urgency = fields.String()
    priority_group = fields.String(allow_none=True)
    priority = fields.Boolean(metadata={"description": "Served first by the coordinators' rule"})
    languages = fields.List(fields.String())
    preferred_times = fields.List(fields.Dict())
    crisis = fields.Boolean()
    status = fields.String(metadata={"description": "open, scheduled or closed"})
    queued_at = fields.AwareDateTime(metadata={"description": "Its place in line"})
    created_at = fields.AwareDateTime()


class QueueArgs(Schema):
    status = fields.String(load_default="open", validate=validate.OneOf(domain.REQUEST_STATUSES))


class RequestListSchema(Schema):
    items = fields.List(fields.Nested(RequestSchema))


class RunSchema(Schema):
    id = fields.UUID()
    status = fields.String(metadata={"description": "preview or approved"})
    run_at = fields.AwareDateTime()
    assignments = fields.List(
        fields.Dict(),
        metadata={"description": "request_id, helper_id, starts_at, ends_at, urgency, reason"},
    )
    unassigned = fields.List(fields.Dict(), metadata={"description": "request_id, reason, why"})
    created_at = fields.AwareDateTime()
    approved_at = fields.AwareDateTime(allow_none=True)
    edited_at = fields.AwareDateTime(
        allow_none=True, metadata={"description": "When a coordinator last changed the preview"}
    )
    revision = fields.Integer(
        metadata={"description": "Grows with each change of the preview (its ETag)"}
    )


class HelpRunAssignmentInSchema(Schema):
    request_id = fields.UUID(required=True)
    helper_id = fields.UUID(required=True)
    starts_at = fields.AwareDateTime(
        required=True, metadata={"description": "One of the helper's free slots, UTC"}
    )


class HelpRunEditSchema(Schema):
    assignments = fields.List(
        fields.Nested(HelpRunAssignmentInSchema),
        required=True,
        validate=validate.Length(max=5000),
        metadata={"description": "The whole new list of the preview's assignments"},
    )


class SessionSchema(Schema):
    id = fields.UUID()
    helper_id = fields.UUID()
    request_id = fields.UUID()
    run_id = fields.UUID(allow_none=True)
    starts_at = fields.AwareDateTime()
    ends_at = fields.AwareDateTime()
    status = fields.String(
        metadata={"description": "booked, confirmed, declined, held, missed or cancelled"}
    )
    reason = fields.String(allow_none=True, metadata={"description": "Why the scheduler chose it"})
    topic = fields.String()
    urgency = fields.String()
    crisis = fields.Boolean()
    languages = fields.List(fields.String())
    contact_visible_from = fields.AwareDateTime()
    contact_visible_until = fields.AwareDateTime()
    closed_at = fields.AwareDateTime(allow_none=True)
    minutes = fields.Integer(allow_none=True, metadata={"description": "Given, once held"})
    missed_by = fields.String(allow_none=True, metadata={"description": "seeker or helper"})
    version = fields.Integer()


class SessionListSchema(Schema):
    items = fields.List(fields.Nested(SessionSchema))


class SessionCloseSchema(Schema):
    note = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=2000),
        metadata={"description": "Seen by the helper and their supervisors only"},
    )
    follow_up = fields.Boolean(
        load_default=False,
        metadata={"description": "Ask for another session for the person, with this helper"},
    )
    minutes = fields.Integer(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=1, max=480),
        metadata={"description": "Minutes given (default: the session's length)"},
    )


class SessionClosedSchema(SessionSchema):
    follow_up_request_id = fields.UUID(
        allow_none=True, metadata={"description": "The follow-up request asked for, if any"}
    )


class SessionMissedSchema(Schema):
    who = fields.String(
        required=True,
        validate=validate.OneOf(("seeker", "helper")),
        metadata={"description": "Who did not come: seeker or helper"},
    )


class SessionNoteSchema(Schema):
    session_id = fields.UUID()
    helper_id = fields.UUID()
    note = fields.String()
    follow_up = fields.Boolean()
    written_at = fields.AwareDateTime()


class SessionNoteListSchema(Schema):
    items = fields.List(fields.Nested(SessionNoteSchema))


class SessionConnectInSchema(Schema):
    helper_contact = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=3, max=200),
        metadata={
            "description": "The number the provider calls the helper back on (a masked "
            "call-back); left out, a room. Passed to the provider, never kept"
        },
    )


class SessionConnectionSchema(Schema):
    session_id = fields.UUID()
    kind = fields.String(metadata={"description": "call_back or room"})
    room_url = fields.String(allow_none=True, metadata={"description": "For a room: its link"})


class RequestFollowArgs(Schema):
    token = fields.String(
        required=True,
        validate=validate.Length(min=1, max=200),
        metadata={"description": "The follow_token answered when the request was made"},
    )


class RequestFollowSchema(Schema):
    id = fields.UUID()
    status = fields.String(metadata={"description": "open, scheduled or closed"})
    session_status = fields.String(allow_none=True)
    starts_at = fields.AwareDateTime(allow_none=True)
    ends_at = fields.AwareDateTime(allow_none=True)
    follow_up_request_id = fields.UUID(
        allow_none=True, metadata={"description": "Its follow-up, followed with the same token"}
    )


class ContactSchema(Schema):
    session_id = fields.UUID()
    contact = fields.String(allow_none=True)
    text = fields.String(allow_none=True)
    contact_visible_from = fields.AwareDateTime()
    contact_visible_until = fields.AwareDateTime()


# Endpoints -----------------------------------------------------------------------------


@blp.route("/helpers")
class Helpers(MethodView):
    @blp.response(200, HelperListSchema)
    @require_login
    def get(self) -> Any:
        """Helpers: all for coordinators, an organisation's for its admins, yourself
        otherwise."""
        rows = service.list_helpers(db_session(), current_identity())
        return {"items": [service.dump_helper(h) for h in rows]}

    @blp.arguments(HelperInSchema)
    @blp.response(201, HelperSchema)
    @require_login
    def post(self, data: dict[str, Any]) -> Any:
        """Register a member of a verified organisation as a helper (themself, or its
        admins for any member): pending until a coordinator verifies the
        qualifications."""
        with runtime().unit_of_work() as session:
            return service.dump_helper(service.register_helper(session, current_identity(), data))


@blp.route("/helpers/<uuid:helper_id>")
class HelperById(MethodView):
    @blp.response(200, HelperSchema)
    @require_login
    def get(self, helper_id: uuid.UUID) -> Any:
        """A helper: themself, their organisation's admins and coordinators."""
        helper = service.get_helper(db_session(), current_identity(), helper_id)
        return service.dump_helper(helper)


@blp.route("/helpers/<uuid:helper_id>/verify", methods=["POST"])
class VerifyHelper(MethodView):
    @blp.arguments(DecisionSchema)
    @blp.response(200, HelperSchema)
    @require_login
    def post(self, data: dict[str, Any], helper_id: uuid.UUID) -> Any:
        """A coordinator's decision on a helper's qualifications: verified (scheduled
        from now on) or rejected, with a reason."""
        with runtime().unit_of_work() as session:
            helper = service.decide_helper(
                session, current_identity(), helper_id, data["decision"], data["reason"]
            )
            return service.dump_helper(helper)


@blp.route("/requests")
class Requests(MethodView):
    @blp.arguments(QueueArgs, location="query")
    @blp.response(200, RequestListSchema)
    @require_login
    def get(self, args: dict[str, Any]) -> Any:
        """The queue, first in line first, without what people wrote or how to reach
        them: every request for coordinators, a seeker's own otherwise."""
        rule = _rule()
        found = service.queue(db_session(), current_identity(), rule, args["status"])
        return {"items": [service.dump_request(r, rule) for r in found]}

    @blp.arguments(RequestInSchema)
    @blp.response(201, RequestAnswerSchema)
    def post(self, data: dict[str, Any]) -> Any:
        """Ask for a session, signed in or not (the gateway limits anonymous writes per
        address). Text that speaks of self-harm makes it a crisis: the answer carries
        the crisis line at once."""
        identity = current_identity()
        with runtime().unit_of_work() as session:
            asked = service.ask_for_help(session, identity, data)
            token = service.issue_follow_token(asked) if identity.user_id is None else None
            return {
                "id": asked.id,
                "status": asked.status,
                "urgency": asked.urgency,
                "crisis": asked.crisis,
                "crisis_line": runtime().settings.crisis_line if asked.crisis else None,
                "follow_token": token,
            }


@blp.route("/requests/<uuid:request_id>/status")
class RequestStatus(MethodView):
    @blp.arguments(RequestFollowArgs, location="query")
    @blp.response(200, RequestFollowSchema)
    def get(self, args: dict[str, Any], request_id: uuid.UUID) -> Any:
        """A request's status and, once scheduled, its session's time, to whoever holds
        its follow token (no sign-in); nothing of the helper. Another token: 404."""
        return service.follow(db_session(), request_id, args["token"])


@blp.route("/runs", methods=["POST"])
class Runs(MethodView):
    @blp.response(201, RunSchema)
    @require_login
    def post(self) -> Any:
        """Preview a schedule of the open requests over the verified helpers' free
        slots from now on (coordinators)."""
        with runtime().unit_of_work() as session:
            return service.dump_run(service.preview(session, current_identity(), _rule()))


@blp.route("/runs/<uuid:run_id>")
class RunById(MethodView):
    @blp.response(200, RunSchema)
    @require_login
    def get(self, run_id: uuid.UUID) -> Any:
        """A scheduling run (coordinators); its ETag is the preview's revision."""
        run = service.get_run(db_session(), current_identity(), run_id)
        return service.dump_run(run), 200, {"ETag": etag(run.revision)}

    @blp.arguments(HelpRunEditSchema)
    @blp.response(200, RunSchema)
    @require_login
    def patch(self, data: dict[str, Any], run_id: uuid.UUID) -> Any:
        """A coordinator's changes to a preview: the whole new list of assignments,
        each checked against the hard rules (422 naming the assignment and the rule).
        An optional If-Match with the run's ETag: 412 when another edit came first."""
        based_on = _if_match_revision()
        try:
            with runtime().unit_of_work() as session:
                run = service.edit_run(
                    session,
                    current_identity(),
                    run_id,
                    data["assignments"],
                    _rule(),
                    based_on=based_on,
                )
                return service.dump_run(run), 200, {"ETag": etag(run.revision)}
        except service.Stale as stale:
            require_if_match(stale.revision)
            raise


@blp.route("/runs/<uuid:run_id>/approve", methods=["POST"])
class ApproveRun(MethodView):
    @blp.response(200, SessionListSchema)
    @require_login
    def post(self, run_id: uuid.UUID) -> Any:
        """Approve a preview: its assignments become sessions the helpers confirm or
        decline; 409 when a request left the queue or a slot was booked meanwhile."""
        with runtime().unit_of_work() as session:
            made = service.approve(session, current_identity(), run_id)
            return {
                "items": [
                    service.dump_session(*service.get_session(session, current_identity(), s.id))
                    for s in made
                ]
            }


class SessionListArgsSchema(Schema):
    ends_after = fields.AwareDateTime(
        metadata={"description": "Only sessions that end at or after this moment"}
    )
    starts_before = fields.AwareDateTime(
        metadata={"description": "Only sessions that start before this moment"}
    )


@blp.route("/sessions")
class Sessions(MethodView):
    @blp.arguments(SessionListArgsSchema, location="query")
    @blp.response(200, SessionListSchema)
    @require_login
    def get(self, args: dict[str, Any]) -> Any:
        """A helper's own sessions, soonest first (every session for coordinators),
        without the seeker's contact; ``ends_after`` and ``starts_before`` bound them to
        a window."""
        found = service.list_sessions(
            db_session(),
            current_identity(),
            ends_after=args.get("ends_after"),
            starts_before=args.get("starts_before"),
        )
        return {"items": [service.dump_session(s, r) for s, r in found]}


@blp.route("/sessions/<uuid:session_id>")
class SessionById(MethodView):
    @blp.response(200, SessionSchema)
    @require_login
    def get(self, session_id: uuid.UUID) -> Any:
        """A session: its helper and coordinators."""
        return service.dump_session(
            *service.get_session(db_session(), current_identity(), session_id)
        )


@blp.route("/sessions/<uuid:session_id>/confirm", methods=["POST"])
class ConfirmSession(MethodView):
    @blp.response(200, SessionSchema)
    @require_login
    def post(self, session_id: uuid.UUID) -> Any:
        """The helper takes the session."""
        with runtime().unit_of_work() as session:
            return service.dump_session(*service.confirm(session, current_identity(), session_id))


@blp.route("/sessions/<uuid:session_id>/decline", methods=["POST"])
class DeclineSession(MethodView):
    @blp.response(200, SessionSchema)
    @require_login
    def post(self, session_id: uuid.UUID) -> Any:
        """The helper gives the session up: its request goes back first in line."""
        with runtime().unit_of_work() as session:
            return service.dump_session(*service.decline(session, current_identity(), session_id))


@blp.route("/sessions/<uuid:session_id>/contact")
class SessionContact(MethodView):
    @blp.response(200, ContactSchema)
    @require_login
    def get(self, session_id: uuid.UUID) -> Any:
        """The seeker's contact and text, to the session's helper once confirmed and
        only within its window (contact_visible_from to contact_visible_until), each
        reveal recorded; 403 outside it."""
        with runtime().unit_of_work() as session:
            return service.reveal_contact(session, current_identity(), session_id)


@blp.route("/sessions/<uuid:session_id>/close", methods=["POST"])
class CloseSession(MethodView):
    @blp.arguments(SessionCloseSchema)
    @blp.response(200, SessionClosedSchema)
    @require_login
    def post(self, data: dict[str, Any], session_id: uuid.UUID) -> Any:
        """The helper closes a confirmed session as held, from its start on: a short
        note for them and their supervisors, a follow-up with the same helper if asked,
        and the minutes given (the session's length by default). Once only (409)."""
        rt = runtime()
        with rt.unit_of_work() as session:
            found, asked, next_request = service.close(
                session, rt.outbox, current_identity(), session_id, data
            )
            return {
                **service.dump_session(found, asked),
                "follow_up_request_id": next_request.id if next_request else None,
            }


@blp.route("/sessions/<uuid:session_id>/missed", methods=["POST"])
class MissedSession(MethodView):
    @blp.arguments(SessionMissedSchema)
    @blp.response(200, SessionSchema)
    @require_login
    def post(self, data: dict[str, Any], session_id: uuid.UUID) -> Any:
        """A session that did not take place (its helper or a coordinator, once its
        start has passed): the slot is freed and the request goes back first in line."""
        with runtime().unit_of_work() as session:
            return service.dump_session(
                *service.mark_missed(session, current_identity(), session_id, data["who"])
            )


@blp.route("/sessions/<uuid:session_id>/notes")
class SessionNotes(MethodView):
    @blp.response(200, SessionNoteListSchema)
    @require_login
    def get(self, session_id: uuid.UUID) -> Any:
        """The helper's note on the session: to the helper and their organisation's
        admins only (anyone else: 404)."""
        found = service.notes(db_session(), current_identity(), session_id)
        return {"items": [service.dump_note(n) for n in found]}


@blp.route("/sessions/<uuid:session_id>/connect", methods=["POST"])
class ConnectSession(MethodView):
    @blp.arguments(SessionConnectInSchema)
    @blp.response(200, SessionConnectionSchema)
    @require_login
    def post(self, data: dict[str, Any], session_id: uuid.UUID) -> Any:
        """Connect the helper and the seeker through the contact provider (a masked
        call-back, or a room), to the session's helper within its window; never either
        number. 409 no-contact-provider without one (GET .../contact instead)."""
        with runtime().unit_of_work() as session:
            return service.connect(
                session,
                _provider(),
                current_identity(),
                session_id,
                data["helper_contact"],
            )


class RuleSchema(Schema):
    priority_groups = fields.List(
        fields.String(validate=validate.OneOf(domain.PRIORITY_GROUPS)),
        required=True,
        metadata={
            "description": "Served first within an urgency, in this order (empty: no "
            "group); each one of " + ", ".join(domain.PRIORITY_GROUPS)
        },
    )


class RuleAnswerSchema(RuleSchema):
    set_by = fields.String(
        metadata={"description": "coordinators, or setting (AIDLINK_HELP_PRIORITY_GROUPS)"}
    )
    version = fields.Integer(metadata={"description": "0 until the coordinators set one"})
    updated_at = fields.AwareDateTime(allow_none=True)


@blp.route("/rule")
class Rule(MethodView):
    @blp.response(200, RuleAnswerSchema)
    @require_login
    def get(self) -> Any:
        """Who is served first within an urgency: the coordinators' rule (until they set
        one, AIDLINK_HELP_PRIORITY_GROUPS). Its ETag is its version."""
        answer = service.dump_rule(db_session(), runtime().settings.help_priority_groups)
        return answer, 200, {"ETag": etag(answer["version"])}

    @blp.arguments(RuleSchema)
    @blp.response(200, RuleAnswerSchema)
    @require_login
    def put(self, data: dict[str, Any]) -> Any:
        """The coordinators name the groups served first within an urgency, from the
        next queue and preview on. An optional If-Match with the rule's ETag: 412 when
        another coordinator changed it first."""
        based_on = _if_match_revision()
        try:
            with runtime().unit_of_work() as session:
                answer = service.set_priority_rule(
                    session,
                    current_identity(),
                    data["priority_groups"],
                    runtime().settings.help_priority_groups,
                    based_on=based_on,
                )
                return answer, 200, {"ETag": etag(answer["version"])}
        except service.Stale as stale:
            require_if_match(stale.revision)
            raise
