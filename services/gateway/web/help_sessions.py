"""The pages of help from people's time: anyone asks for help (signed in or not) and is
shown the crisis line at once when what they wrote speaks of self-harm; a helper's
sessions today and next, confirmed or declined on a phone, the seeker's contact shown
within the session's window only; a coordinator's queue (without what people wrote or
how to reach them: the API does not give those to coordinators), the helpers waiting
for verification, and a schedule previewed with each session's reason and each request
left out with its own, then approved.

Each page reads the help API as its reader (``/api/v1/community/help``), so it holds
no more than they may see there. Plain forms: nothing needs JavaScript.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import date, datetime, timedelta
from typing import Any

from flask import (
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext, lazy_gettext

from services.gateway.web import api
from services.gateway.web.api import ApiResponse, SignInRequired
from services.gateway.web.base import bp, is_coordinator, me, problem_page, require_me
from services.gateway.web.forms import FormState
from services.gateway.web.i18n import N_, api_message, current_language
from services.gateway.web.times import LOCAL, clock_time, local_day, local_time

HELP = "/community/help"

TOPIC_WORDS = {
    "anxiety": lazy_gettext("worry and anxiety"),
    "grief": lazy_gettext("grief and loss"),
    "patient_family": lazy_gettext("a patient's family"),
    "medical_worker": lazy_gettext("a medical worker under strain"),
    "child_care": lazy_gettext("a child's care"),
    "other": lazy_gettext("something else"),
}
URGENCY_WORDS = {
    "crisis": lazy_gettext("crisis"),
    "urgent": lazy_gettext("urgent"),
    "soon": lazy_gettext("soon"),
    "routine": lazy_gettext("routine"),
}
# What the person asking chooses (a crisis is recognised by what they write).
URGENCY_CHOICES = {
    "urgent": lazy_gettext("As soon as possible"),
    "soon": lazy_gettext("In the next few days"),
    "routine": lazy_gettext("Whenever a helper is free"),
}
GROUP_WORDS = {
    "medical_staff": lazy_gettext("medical staff"),
    "patient": lazy_gettext("a patient"),
    "patient_family": lazy_gettext("a patient's family"),
}
LANGUAGE_WORDS = {
    "zh": lazy_gettext("Chinese (Mandarin)"),
    "yue": lazy_gettext("Cantonese"),
    "en": lazy_gettext("English"),
}
KIND_WORDS = {
    "counsellor": lazy_gettext("counsellor"),
    "social_worker": lazy_gettext("social worker"),
    "doctor": lazy_gettext("doctor"),
}
HELPER_STATUSES = {
    "pending": lazy_gettext("waiting for verification"),
    "verified": lazy_gettext("verified"),
    "rejected": lazy_gettext("rejected"),
    "withdrawn": lazy_gettext("withdrawn"),
}
REQUEST_STATUSES = {
    "open": lazy_gettext("waiting in line"),
    "scheduled": lazy_gettext("a session is booked"),
    "closed": lazy_gettext("closed"),
}
SESSION_STATUSES = {
    "booked": lazy_gettext("waiting for your answer"),
    "confirmed": lazy_gettext("confirmed"),
    "declined": lazy_gettext("declined"),
    "missed": lazy_gettext("missed"),
    "held": lazy_gettext("held"),
    "cancelled": lazy_gettext("cancelled"),
}
# A session as the person who asked reads it.
SEEKER_SESSION_STATUSES = {
    "booked": lazy_gettext("booked, waiting for the helper to confirm"),
    "confirmed": lazy_gettext("confirmed by the helper"),
    "declined": lazy_gettext("the helper could not take it: you are back at the front of the line"),
    "held": lazy_gettext("held"),
    "missed": lazy_gettext("did not take place: you are back at the front of the line"),
    "cancelled": lazy_gettext("cancelled"),
}
RUN_STATUSES = {"preview": lazy_gettext("preview"), "approved": lazy_gettext("approved")}
LEFT_OUT = {
    "no-helper-for-topic": lazy_gettext("no helper is qualified for the topic"),
    "no-helper-in-language": lazy_gettext(
        "no helper qualified for the topic speaks one of its languages"
    ),
    "no-free-slot-in-times": lazy_gettext(
        "no qualified helper speaking its language has a free slot in its times"
    ),
    "left-out-by-coordinator": lazy_gettext("a coordinator left it out of the schedule"),
    "slots-taken": lazy_gettext(
        "every slot that fits went to a more urgent request or one waiting longer, or its "
        "helper reached the daily limit"
    ),
}
FIELD_WORDS = {
    "topic": lazy_gettext("What you would like to talk about"),
    "urgency": lazy_gettext("How soon"),
    "priority_group": lazy_gettext("Are you one of these?"),
    "languages": lazy_gettext("Languages you speak"),
    "preferred_times": lazy_gettext("Times that suit you"),
    "preferred_times.0": lazy_gettext("Times that suit you"),
    "preferred_times.1": lazy_gettext("Another time"),
    "text": lazy_gettext("In a few words, what is happening"),
    "contact": lazy_gettext("How a helper can reach you"),
    "reason": lazy_gettext("Reason"),
    "decision": lazy_gettext("Decision"),
}
# The help API's fixed messages these pages may meet, marked for extraction.
KNOWN_MESSAGES = (
    lazy_gettext("The contact is shown once the session is confirmed."),
    lazy_gettext("A rejection says why."),
    lazy_gettext("Say why the qualifications are rejected."),
    lazy_gettext("This run is already approved."),
    lazy_gettext("A slot of this run was booked by another approval; preview again."),
    lazy_gettext("The session is already declined."),
    lazy_gettext("Only coordinators verify helpers."),
    lazy_gettext("Only coordinators schedule sessions."),
    lazy_gettext("A preferred time ends after it starts."),
    lazy_gettext("Each time's end must be after its start."),
    lazy_gettext("Sign in to see requests."),
)
_MESSAGES: list[tuple[re.Pattern[str], Any]] = [
    (
        re.compile(r"^Request \S+ is no longer in the queue; preview again\.$"),
        lazy_gettext("A request of this preview has left the queue; preview again."),
    ),
    (re.compile(r"^The session is (\w+)\.$"), None),
    (re.compile(r"^The contact is shown from \S+ to \S+ only\.$"), None),
    (re.compile(r"^No session \S+\.$"), lazy_gettext("No such session.")),
    (re.compile(r"^No request \S+\.$"), lazy_gettext("No such request.")),
    (re.compile(r"^No helper \S+\.$"), lazy_gettext("No such helper.")),
    (re.compile(r"^No scheduling run \S+\.$"), lazy_gettext("No such schedule.")),
]
_NOT_STARTED = re.compile(r"^The session starts at (\S+); (close it|it can be missed).*$")
_WINDOW = re.compile(r"^The contact is shown from (\S+) to (\S+) only\.$")
_SESSION_IS = re.compile(r"^The session is (\w+)\.$")
SESSIONS_AHEAD = timedelta(days=14)
HELPER_CHECK_SECONDS = 300


def message(text: str) -> str:
    """A help API message in the page's language."""
    if found := _WINDOW.match(text):
        return gettext(
            "The contact is shown from %(start)s to %(end)s only.",
            start=local_time(found.group(1)),
            end=local_time(found.group(2)),
        )
    if found := _NOT_STARTED.match(text):
        return gettext(
            "The session starts at %(time)s; this is done once it has started.",
            time=local_time(found.group(1)),
        )
    if found := _SESSION_IS.match(text):
        return gettext("The session is %(status)s.", status=said(SESSION_STATUSES, found.group(1)))
    for pattern, translated in _MESSAGES:
        if translated is not None and pattern.match(text):
            return str(translated)
    return api_message(text)


def said(words: dict[str, Any], code: Any) -> str:
    """A code from the API as its word in the page's language."""
    found = words.get(str(code))
    return str(found) if found is not None else str(code or "")


def listed(words: dict[str, Any], codes: list[str]) -> str:
    """Codes as words, listed as the page's language lists them ("中文、粤语")."""
    comma = "、" if current_language() == "zh" else ", "
    return comma.join(said(words, c) for c in codes)


def languages_said(codes: list[str]) -> str:
    return listed(LANGUAGE_WORDS, codes)


# The scheduler's reasons ("crisis, priority group; 2.5 h after the request; the
# helper's 1 of 4 that day, 3 in this schedule"), part by part.
_WAITED = re.compile(r"^(\S+) h after the request$")
_LOAD = re.compile(r"^the helper's (\d+) of (\d+) that day, (\d+) in this schedule$")
_FITTING = re.compile(r"\((\d+) slots fit\)")


def reason_said(reason: str | None) -> str:
    """Why the scheduler chose a session, in the page's language."""
    parts = []
    for part in (reason or "").split("; "):
        urgency, _, group = part.partition(", ")
        if urgency in URGENCY_WORDS and group in ("", "priority group"):
            text = said(URGENCY_WORDS, urgency)
            parts.append(gettext("%(urgency)s, priority group", urgency=text) if group else text)
        elif found := _WAITED.match(part):
            parts.append(gettext("%(hours)s h after the request", hours=found.group(1)))
        elif found := _LOAD.match(part):
            parts.append(
                gettext(
                    "the helper's %(n)s of %(limit)s that day, %(total)s in this schedule",
                    n=found.group(1),
                    limit=found.group(2),
                    total=found.group(3),
                )
            )
        elif part == "a coordinator's choice":
            parts.append(gettext("a coordinator's choice"))
        elif part == "a follow-up with the same helper":
            parts.append(gettext("a follow-up with the same helper"))
        elif part.startswith("a follow-up with another helper"):
            parts.append(gettext("a follow-up with another helper"))
        elif part:
            parts.append(api_message(part))
    return gettext("; ").join(parts)


def left_out_said(entry: dict[str, Any]) -> str:
    """Why a request was left out of a schedule, in the page's language."""
    text = said(LEFT_OUT, entry.get("reason"))
    found = _FITTING.search(str(entry.get("why") or ""))
    if found:
        return gettext("%(why)s (%(n)s slots fit)", why=text, n=found.group(1))
    return text


def field_word(name: str) -> str:
    found = FIELD_WORDS.get(name) or FIELD_WORDS.get(name.split(".")[0])
    return str(found) if found is not None else name


def crisis_line() -> str:
    return str(current_app.extensions["aidlink"].settings.crisis_line)


def _form_errors(answer: ApiResponse) -> dict[str, list[str]]:
    """The API's errors at the form's inputs: ``preferred_times.1.end`` is the second
    time's row, ``languages.0`` the languages."""
    errors: dict[str, list[str]] = {}
    for key, texts in answer.errors.items():
        parts = key.split(".")
        name = ".".join(parts[:2]) if parts[0] == "preferred_times" and len(parts) > 1 else parts[0]
        errors.setdefault(name, []).extend(message(t) for t in texts)
    return errors


def _problem(values: dict[str, Any], answer: ApiResponse) -> FormState:
    detail = message(answer.detail) if answer.detail else None
    return FormState(values, _form_errors(answer), detail)


def _whole_page(answer: ApiResponse) -> bool:
    return answer.status in (401, 403, 404) or answer.status >= 500


# Who is a helper --------------------------------------------------------------------------


def my_helper() -> dict[str, Any] | None:
    """The signed-in user's own helper record, asked of the API now (and remembered
    for the navigation)."""
    found = me()
    if not found:
        return None
    user = str(found["user"]["id"])
    answer = api.get(f"{HELP}/helpers")
    items = answer.body["items"] if answer.ok else []
    mine = next((h for h in items if str(h["user_id"]) == user), None)
    session["web_helper"] = [user, int(time.time()), mine is not None]
    return mine


def is_helper() -> bool:
    """Whether the signed-in user is registered as a helper, for the navigation:
    asked of the API at most every few minutes, and kept in the cookie session
    meanwhile."""
    found = me()
    if not found:
        return False
    kept: list[Any] = session.get("web_helper") or []
    recent = len(kept) == 3 and int(time.time()) - int(kept[1]) < HELPER_CHECK_SECONDS
    if recent and kept[0] == str(found["user"]["id"]):
        return bool(kept[2])
    return my_helper() is not None


@bp.app_context_processor
def _help_globals() -> dict[str, Any]:
    ours = request.blueprint == "web"
    return {"is_helper": is_helper if ours else (lambda: False)}


# Asking for help ----------------------------------------------------------------------------

TIME_ROWS = 2


def _times(values: dict[str, str]) -> tuple[list[dict[str, str]], dict[str, list[str]]]:
    """The form's rows of times (a day, from, until, in Beijing time) as the API's
    ``preferred_times`` in UTC-aware ISO, and the rows that cannot be read."""
    times: list[dict[str, str]] = []
    errors: dict[str, list[str]] = {}
    for n in range(TIME_ROWS):
        row = f"preferred_times.{n}"
        day, start, end = (values.get(f"{row}.{part}", "") for part in ("day", "from", "to"))
        if not (day or start or end):
            continue
        try:
            on = date.fromisoformat(day)
            begins = datetime.combine(on, datetime.strptime(start, "%H:%M").time(), LOCAL)
            ends = datetime.combine(on, datetime.strptime(end, "%H:%M").time(), LOCAL)
        except ValueError:
            errors[f"preferred_times.{len(times)}"] = [
                gettext("Give the day and the hours from and until, e.g. 19:00 to 21:00.")
            ]
            continue
        times.append({"start": begins.isoformat(), "end": ends.isoformat()})
    return times, errors


def _ask_page(form: FormState, status: int = 200) -> Any:
    today = datetime.now(LOCAL).date()
    return render_template(
        "help/ask.html",
        form=form,
        topics=TOPIC_WORDS,
        urgencies=URGENCY_CHOICES,
        groups=GROUP_WORDS,
        languages=LANGUAGE_WORDS,
        rows=range(TIME_ROWS),
        today=today.isoformat(),
        crisis_line=crisis_line(),
        field_word=field_word,
    ), status


@bp.get("/help")
def ask_for_help() -> Any:
    """The public form: anyone asks for a session with a helper, signed in or not."""
    language = "zh" if current_language() == "zh" else "en"
    return _ask_page(FormState({"urgency": "soon", "languages": [language]}))


@bp.post("/help")
def ask_for_help_sent() -> Any:
    values: dict[str, Any] = {
        k: v.strip() for k, v in request.form.items() if k not in ("csrf_token", "languages")
    }
    values["languages"] = request.form.getlist("languages")
    times, errors = _times(values)
    if errors:
        return _ask_page(FormState(values, errors), 422)
    # Inputs left empty are left out, so the API names a required one as missing.
    body: dict[str, Any] = {
        "urgency": values.get("urgency") or "routine",
        "priority_group": values.get("priority_group") or None,
        "languages": values["languages"],
        "preferred_times": times,
        "text": values.get("text") or None,
    }
    for name in ("topic", "contact"):
        if values.get(name):
            body[name] = values[name]
    key = request.form.get("idempotency_key") or None
    path = f"{HELP}/requests"
    answer = None
    if api.signed_in():
        try:
            answer = api.post(path, json=body, idempotency_key=key)
        except SignInRequired:
            # A sign-in that ended must not lose what someone wrote asking for help:
            # the request goes in as the public form's.
            answer = None
    if answer is None:
        answer = api.raw_call("POST", path, json=body, idempotency_key=key)
    if answer.status >= 500 or answer.status in (401, 403):
        return problem_page(answer)
    if not answer.ok:
        return _ask_page(_problem(values, answer), answer.status)
    asked = answer.body
    follow = None
    if asked.get("follow_token"):
        follow = url_for(
            "web.help_request_status",
            request_id=asked["id"],
            token=asked["follow_token"],
            _external=True,
        )
    return render_template(
        "help/asked.html",
        asked=asked,
        follow=follow,
        # In the words the person chose from; a request recognised as a crisis is
        # answered "as soon as possible", not labelled to the person who wrote it.
        urgency=said(
            URGENCY_CHOICES,
            "urgent" if asked.get("urgency") == "crisis" else asked.get("urgency"),
        ).lower(),
    )


@bp.get("/help/requests/<uuid:request_id>")
def help_request_status(request_id: uuid.UUID) -> Any:
    """Where a request stands, for whoever holds its follow link (no sign-in)."""
    token = request.args.get("token", "")
    # Not found, whatever the reason, in the reader's words: the request's id means
    # nothing to them, and a wrong link and no request are answered alike.
    missing = ApiResponse(
        404, {"detail": gettext("This link leads to no request: check it was copied whole.")}
    )
    if not token:
        return problem_page(missing)
    answer = api.raw_call("GET", f"{HELP}/requests/{request_id}/status", query={"token": token})
    if answer.status == 404:
        return problem_page(missing)
    if not answer.ok:
        return problem_page(answer)
    found = answer.body
    return render_template(
        "help/status.html",
        found=found,
        token=token,
        status=said(REQUEST_STATUSES, found.get("status")),
        session_status=said(SEEKER_SESSION_STATUSES, found.get("session_status")),
        local_time=local_time,
        crisis_line=crisis_line(),
    )


# A helper's sessions ------------------------------------------------------------------------


def shown_days(
    items: list[dict[str, Any]], now: datetime
) -> list[tuple[date, list[dict[str, Any]]]]:
    """A helper's sessions by local day, from today to ``SESSIONS_AHEAD``, each marked
    with where ``now`` (local, aware) stands in it. A session that began before midnight
    and ends today (one running across it) is today's: its helper closes it today."""
    today = now.date()
    days: dict[date, list[dict[str, Any]]] = {}
    for found in items:
        day = local_day(found["starts_at"])
        ends = datetime.fromisoformat(found["ends_at"].replace("Z", "+00:00")).astimezone(LOCAL)
        if day is None or ends.date() < today or ends - now > SESSIONS_AHEAD:
            continue
        visible_from = datetime.fromisoformat(found["contact_visible_from"])
        visible_until = datetime.fromisoformat(found["contact_visible_until"])
        found["in_window"] = visible_from <= now <= visible_until
        found["before_window"] = now < visible_from
        found["started"] = datetime.fromisoformat(found["starts_at"]) <= now
        days.setdefault(max(day, today), []).append(found)
    return sorted(days.items())


def _sessions_page(
    shown: dict[str, dict[str, Any]] | None = None,
    joined: dict[str, dict[str, Any]] | None = None,
    form: FormState | None = None,
    status: int = 200,
) -> Any:
    require_me()
    now = datetime.now(LOCAL)
    # The window the page shows (see shown_days), asked of the service: not every
    # session the helper ever held.
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    answer = api.get(
        f"{HELP}/sessions",
        query={
            "ends_after": midnight.isoformat(),
            "starts_before": (now + SESSIONS_AHEAD).isoformat(),
        },
    )
    if not answer.ok:
        return problem_page(answer)
    helper = my_helper()
    today = now.date()
    return render_template(
        "help/sessions.html",
        days=shown_days(answer.body["items"], now),
        today=today,
        tomorrow=today + timedelta(days=1),
        helper=helper,
        helper_status=said(HELPER_STATUSES, helper["status"]) if helper else "",
        shown=shown or {},
        joined=joined or {},
        provider=contact_provider(),
        form=form or FormState(),
        topic_word=lambda t: said(TOPIC_WORDS, t),
        urgency_word=lambda u: said(URGENCY_WORDS, u),
        status_word=lambda s: said(SESSION_STATUSES, s),
        languages_said=languages_said,
        clock_time=clock_time,
        local_time=local_time,
        new_key=lambda: str(uuid.uuid4()),
    ), status


@bp.get("/help/sessions")
def help_sessions() -> Any:
    """A helper's sessions today and in the next two weeks, soonest first: confirm or
    decline each, and within its window reach the person."""
    return _sessions_page()


def _session_action(session_id: uuid.UUID, action: str, body: dict[str, Any], done: str) -> Any:
    answer = api.post(
        f"{HELP}/sessions/{session_id}/{action}",
        json=body,
        idempotency_key=request.form.get("idempotency_key") or None,
    )
    if answer.status == 404 or answer.status >= 500:
        return problem_page(answer)
    if not answer.ok:
        flash(message(answer.detail) or gettext("That did not work."), "error")
    else:
        flash(done, "success")
    return redirect(url_for("web.help_sessions") + f"#session-{session_id}")


@bp.post("/help/sessions/<uuid:session_id>/confirm")
def help_session_confirm(session_id: uuid.UUID) -> Any:
    require_me()
    return _session_action(session_id, "confirm", {}, gettext("Confirmed: the session is yours."))


@bp.post("/help/sessions/<uuid:session_id>/decline")
def help_session_decline(session_id: uuid.UUID) -> Any:
    require_me()
    return _session_action(
        session_id,
        "decline",
        {},
        gettext("Declined: the request goes back to the front of the line."),
    )


def _contact_shown(session_id: uuid.UUID) -> Any:
    answer = api.get(f"{HELP}/sessions/{session_id}/contact")
    if answer.status == 404 or answer.status >= 500:
        return problem_page(answer)
    if not answer.ok:
        flash(message(answer.detail), "error")
        return redirect(url_for("web.help_sessions") + f"#session-{session_id}")
    return _sessions_page(shown={str(session_id): answer.body})


def _problem_slug(answer: ApiResponse) -> str:
    kind = answer.body.get("type") if isinstance(answer.body, dict) else None
    return str(kind or "").rsplit("/", 1)[-1]


def contact_provider() -> bool:
    """Whether a contact provider connects helpers and seekers (else the helper is
    shown the seeker's contact within the window)."""
    settings = current_app.extensions["aidlink"].settings
    return bool(getattr(settings, "help_contact_provider", ""))


@bp.post("/help/sessions/<uuid:session_id>/join")
def help_session_join(session_id: uuid.UUID) -> Any:
    """Connect the helper and the seeker through the contact provider: a call-back
    to the number the helper gives, or a room; where no provider is set up, the
    seeker's contact is shown instead, within the window."""
    require_me()
    number = request.form.get("helper_contact", "").strip()
    answer = api.post(
        f"{HELP}/sessions/{session_id}/connect",
        json={"helper_contact": number or None},
        idempotency_key=request.form.get("idempotency_key") or None,
    )
    if answer.status == 409 and _problem_slug(answer) == "no-contact-provider":
        return _contact_shown(session_id)
    if answer.status == 404 or answer.status >= 500:
        return problem_page(answer)
    if not answer.ok:
        texts = [message(m) for ms in answer.errors.values() for m in ms]
        flash(" ".join(texts) or message(answer.detail), "error")
        return redirect(url_for("web.help_sessions") + f"#session-{session_id}")
    if answer.body.get("kind") == "room" and answer.body.get("room_url"):
        return _sessions_page(joined={str(session_id): answer.body})
    flash(gettext("You are being called now: answer, and you are put through."), "success")
    return redirect(url_for("web.help_sessions") + f"#session-{session_id}")


@bp.post("/help/sessions/<uuid:session_id>/missed")
def help_session_missed(session_id: uuid.UUID) -> Any:
    require_me()
    who = request.form.get("who", "")
    return _session_action(
        session_id,
        "missed",
        {"who": who},
        gettext("Marked as missed: the request goes back to the front of the line."),
    )


@bp.post("/help/sessions/<uuid:session_id>/close")
def help_session_close(session_id: uuid.UUID) -> Any:
    """The session held, closed with a short note (for the helper and their
    supervisors only) and, if asked, a follow-up with the same helper."""
    require_me()
    note = request.form.get("note", "").strip()
    follow_up = request.form.get("follow_up") == "yes"
    answer = api.post(
        f"{HELP}/sessions/{session_id}/close",
        json={"note": note or None, "follow_up": follow_up},
        idempotency_key=request.form.get("idempotency_key") or None,
    )
    if answer.status == 404 or answer.status >= 500:
        return problem_page(answer)
    if not answer.ok:
        name = f"sessions.{session_id}.note"
        texts = [message(m) for ms in answer.errors.values() for m in ms]
        form = FormState({name: note}, {name: texts or [message(answer.detail)]})
        return _sessions_page(form=form, status=answer.status)
    if answer.body.get("follow_up_request_id"):
        flash(gettext("Closed. A follow-up session with you is asked for."), "success")
    else:
        flash(gettext("Closed. Thank you."), "success")
    return redirect(url_for("web.help_sessions") + f"#session-{session_id}")


# A coordinator's queue and schedule ---------------------------------------------------------


def _coordinator() -> None:
    require_me()
    if not is_coordinator():
        refused = ApiResponse(403, {"detail": "Only coordinators may do this."})
        abort(make_response(problem_page(refused)))


def _helpers() -> list[dict[str, Any]]:
    answer = api.get(f"{HELP}/helpers")
    return list(answer.body["items"]) if answer.ok else []


def _queue_page(forms: dict[str, FormState] | None = None, status: int = 200) -> Any:
    answer = api.get(f"{HELP}/requests", query={"status": "open"})
    if not answer.ok:
        return problem_page(answer)
    helpers = _helpers()
    rule = api.get(f"{HELP}/rule")
    return render_template(
        "help/queue.html",
        rule=rule.body if rule.ok else None,
        groups=GROUP_WORDS,
        requests=answer.body["items"],
        pending=[h for h in helpers if h["status"] == "pending"],
        verified=sum(1 for h in helpers if h["status"] == "verified"),
        forms=forms or {},
        blank=FormState(),
        topic_word=lambda t: said(TOPIC_WORDS, t),
        urgency_word=lambda u: said(URGENCY_WORDS, u),
        group_word=lambda g: said(GROUP_WORDS, g),
        kinds_said=lambda ks: listed(KIND_WORDS, ks),
        topics_said=lambda ts: listed(TOPIC_WORDS, ts),
        languages_said=languages_said,
        local_time=local_time,
    ), status


@bp.get("/help/queue")
def help_queue() -> Any:
    """The open requests, first in line first, and the helpers waiting for
    verification; a schedule previewed from here."""
    _coordinator()
    return _queue_page()


@bp.post("/help/rule")
def help_rule() -> Any:
    """The coordinators' rule of who is served first within an urgency, as ticked (the
    version the page was read at sent along, so another coordinator's change is not
    overwritten)."""
    _coordinator()
    chosen = [g for g in GROUP_WORDS if g in request.form.getlist("priority_groups")]
    version = request.form.get("version", "").strip()
    answer = api.call(
        "PUT",
        f"{HELP}/rule",
        json={"priority_groups": chosen},
        if_match=f'"{version}"' if version.isdigit() else None,
    )
    if _whole_page(answer):
        return problem_page(answer)
    if not answer.ok:
        return _queue_page({"rule": _problem({}, answer)}, answer.status)
    flash(gettext("Who is served first is changed, from the next preview on."), "success")
    return redirect(url_for("web.help_queue"))


@bp.post("/help/helpers/<uuid:helper_id>/verify")
def help_helper_verify(helper_id: uuid.UUID) -> Any:
    _coordinator()
    decision = request.form.get("decision", "")
    reason = request.form.get("reason", "").strip()
    answer = api.post(
        f"{HELP}/helpers/{helper_id}/verify",
        json={"decision": decision, "reason": reason or None},
        idempotency_key=request.form.get("idempotency_key") or None,
    )
    if _whole_page(answer):
        return problem_page(answer)
    if not answer.ok:
        form = _problem({"reason": reason}, answer)
        return _queue_page({str(helper_id): form}, answer.status)
    name = answer.body.get("name") or gettext("The helper")
    if answer.body["status"] == "verified":
        flash(gettext("%(name)s is verified and will be scheduled.", name=name), "success")
    else:
        flash(gettext("%(name)s is rejected.", name=name), "success")
    return redirect(url_for("web.help_queue"))


@bp.post("/help/runs")
def help_preview() -> Any:
    _coordinator()
    answer = api.post(f"{HELP}/runs", idempotency_key=request.form.get("idempotency_key") or None)
    if not answer.ok:
        return problem_page(answer)
    return redirect(url_for("web.help_run", run_id=answer.body["id"]))


def _run_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    """A preview as the rows of its edit form: each assignment (kept), then each
    request left out (to add)."""
    rows = [
        {
            "request_id": a["request_id"],
            "keep": "yes",
            "helper_id": a["helper_id"],
            "starts_at": clock_time(a["starts_at"]).replace(" ", "T"),
        }
        for a in run["assignments"]
    ]
    rows += [
        {"request_id": u["request_id"], "keep": "", "helper_id": "", "starts_at": ""}
        for u in run["unassigned"]
    ]
    return rows


def _run_page(
    run: dict[str, Any],
    form: FormState | None = None,
    status: int = 200,
    revision: str | None = None,
) -> Any:
    helpers = {h["id"]: h for h in _helpers()}
    asked: dict[str, dict[str, Any]] = {}
    for state in ("open", "scheduled"):
        listed = api.get(f"{HELP}/requests", query={"status": state})
        if listed.ok:
            asked.update({r["id"]: r for r in listed.body["items"]})
    if form is None:
        values = {
            f"rows.{n}.{key}": value
            for n, row in enumerate(_run_rows(run))
            for key, value in row.items()
        }
        form = FormState(values)
    left_out = {u["request_id"]: u for u in run["unassigned"]}
    return render_template(
        "help/run.html",
        run=run,
        helpers=helpers,
        verified=[h for h in helpers.values() if h["status"] == "verified"],
        asked=asked,
        form=form,
        revision=revision or "",
        rows=len(run["assignments"]) + len(run["unassigned"]),
        left_out=left_out,
        by_request={a["request_id"]: a for a in run["assignments"]},
        run_word=lambda s: said(RUN_STATUSES, s),
        topic_word=lambda t: said(TOPIC_WORDS, t),
        urgency_word=lambda u: said(URGENCY_WORDS, u),
        reason_said=reason_said,
        left_out_said=left_out_said,
        local_time=local_time,
        languages_said=languages_said,
    ), status


# A rule an edited preview breaks, as the API names it (ids and times in it), and
# the sentence the page shows at the row.
_RULES: list[tuple[re.Pattern[str], Any]] = [
    (
        re.compile(r"^\S+: \S+ is not qualified for (\S+)$"),
        N_("The helper is not qualified for %(topic)s."),
    ),
    (
        re.compile(r"^\S+: \S+ speaks none of its languages$"),
        N_("The helper speaks none of its languages."),
    ),
    (
        re.compile(r"^\S+: .+ is not a free slot of \S+$"),
        N_("The time is not one of the helper's free slots."),
    ),
    (re.compile(r"^\S+: .* is in the past$"), N_("The time is in the past.")),
    (
        re.compile(r"^\S+: .* is outside its times$"),
        N_("The time is outside the times that suit them."),
    ),
    (re.compile(r"^\S+'s slot at .* is used \d+ times$"), N_("The helper's slot is given twice.")),
    (
        re.compile(r"^\S+ has \d+ sessions on \S+, more than the \d+ left$"),
        N_("The helper would have more sessions that day than they take."),
    ),
    (re.compile(r"^request \S+ appears \d+ times$"), N_("The request is in the schedule twice.")),
    (
        re.compile(r"^Request \S+ is not in the queue\.$"),
        N_("This request is no longer in the queue."),
    ),
    (re.compile(r"^Helper \S+ is not a verified helper\.$"), N_("This helper is not verified.")),
]


def rule_said(text: str) -> str:
    for pattern, msgid in _RULES:
        if found := pattern.match(text):
            if found.groups():
                return gettext(msgid, topic=said(TOPIC_WORDS, found.group(1)))
            return gettext(msgid)
    return message(text)


@bp.post("/help/runs/<uuid:run_id>/edit")
def help_run_edit(run_id: uuid.UUID) -> Any:
    """A coordinator's changes to a preview: sessions kept, moved to another helper
    or time (Beijing time), dropped, or requests left out added."""
    _coordinator()
    values = {k: v.strip() for k, v in request.form.items() if k != "csrf_token"}
    assignments: list[dict[str, str]] = []
    rows: list[int] = []
    errors: dict[str, list[str]] = {}
    n = 0
    while f"rows.{n}.request_id" in values:
        if values.get(f"rows.{n}.keep") == "yes":
            try:
                moment = datetime.fromisoformat(values.get(f"rows.{n}.starts_at", ""))
            except ValueError:
                errors[f"rows.{n}"] = [gettext("Give the day and the hour it starts.")]
                moment = None
            if not values.get(f"rows.{n}.helper_id"):
                errors.setdefault(f"rows.{n}", []).append(gettext("Choose a helper."))
            if moment is not None:
                assignments.append(
                    {
                        "request_id": values[f"rows.{n}.request_id"],
                        "helper_id": values.get(f"rows.{n}.helper_id", ""),
                        "starts_at": moment.replace(tzinfo=LOCAL).isoformat(),
                    }
                )
                rows.append(n)
        n += 1
    answer = api.get(f"{HELP}/runs/{run_id}")
    if not answer.ok:
        return problem_page(answer)
    revision = answer.headers.get("ETag")
    if errors:
        return _run_page(answer.body, FormState(values, errors), 422, revision)
    # Based on the preview as the coordinator saw it: another coordinator's change
    # meanwhile is shown, not overwritten.
    edited = api.patch(
        f"{HELP}/runs/{run_id}",
        json={"assignments": assignments},
        if_match=values.get("revision") or None,
    )
    if edited.status == 412:
        flash(gettext("Someone changed this preview meanwhile: here it is as it is now."), "error")
        return redirect(url_for("web.help_run", run_id=run_id))
    if _whole_page(edited):
        return problem_page(edited)
    if not edited.ok:
        for key, texts in edited.errors.items():
            parts = key.split(".")
            index = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            row = rows[index] if index < len(rows) else 0
            errors.setdefault(f"rows.{row}", []).extend(rule_said(t) for t in texts)
        detail = gettext("The schedule breaks a rule: see the rows marked.") if errors else None
        form = FormState(values, errors, detail or message(edited.detail))
        return _run_page(answer.body, form, edited.status, revision)
    flash(gettext("The preview is changed. Approve it to book the sessions."), "success")
    return redirect(url_for("web.help_run", run_id=run_id))


@bp.get("/help/runs/<uuid:run_id>")
def help_run(run_id: uuid.UUID) -> Any:
    """A previewed schedule: each session with its reason, each request left out with
    its own; approved from here."""
    _coordinator()
    answer = api.get(f"{HELP}/runs/{run_id}")
    if not answer.ok:
        return problem_page(answer)
    return _run_page(answer.body, revision=answer.headers.get("ETag"))


@bp.post("/help/runs/<uuid:run_id>/approve")
def help_run_approve(run_id: uuid.UUID) -> Any:
    _coordinator()
    answer = api.post(
        f"{HELP}/runs/{run_id}/approve",
        idempotency_key=request.form.get("idempotency_key") or None,
    )
    if _whole_page(answer):
        return problem_page(answer)
    if not answer.ok:
        flash(message(answer.detail), "error")
    else:
        flash(
            gettext(
                "%(n)s session(s) booked; each helper is asked to confirm.",
                n=len(answer.body["items"]),
            ),
            "success",
        )
    return redirect(url_for("web.help_run", run_id=run_id))
