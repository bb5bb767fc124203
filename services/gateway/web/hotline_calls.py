"""The hotline operator's call log, as fast as a spreadsheet: one row to type a call
in (category, the caller's community, minutes; Enter logs it and the cursor is back in
the first input for the next call), today's calls below it, newest first, and the
day's figures as the hotline reports them.

A call holds nothing of the caller; the page reads the hotlines API
(``/api/v1/community/hotlines``) as the signed-in operator, so it shows only their
organisation's hotlines (every one to coordinators).
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import date, datetime
from typing import Any

from flask import flash, redirect, render_template, request, session, url_for
from flask_babel import gettext, lazy_gettext

from services.gateway.web import api
from services.gateway.web.api import ApiResponse
from services.gateway.web.base import bp, me, problem_page, require_me
from services.gateway.web.community import CASE_KINDS as CASE_KIND_WORDS
from services.gateway.web.community import _typed, item_text, unit_text
from services.gateway.web.forms import FormState
from services.gateway.web.help_sessions import LANGUAGE_WORDS, TOPIC_WORDS, message, said
from services.gateway.web.i18n import org_name
from services.gateway.web.times import LOCAL, clock_time
from shared.catalog.community import COMMUNITY_ITEMS, community_item

HOTLINES = "/community/hotlines"
CATEGORY_WORDS = {
    "information": lazy_gettext("information"),
    "counselling": lazy_gettext("counselling"),
    "emergency": lazy_gettext("emergency help"),
    "other": lazy_gettext("other"),
}
BECAME_WORDS = {
    "delivery": lazy_gettext("became a household delivery"),
    "case": lazy_gettext("became a case"),
    "booking": lazy_gettext("booked for a session"),
}
FIELD_WORDS = {
    "category": lazy_gettext("Category"),
    "community_org_id": lazy_gettext("Caller's community"),
    "region": lazy_gettext("Caller's community"),
    "minutes": lazy_gettext("Minutes"),
    "at": lazy_gettext("When"),
}
CASE_KINDS = ("medicine_pickup", "clinic_access", "counselling", "child_care", "other")
KNOWN_MESSAGES = (
    lazy_gettext("Say what to bring."),
    lazy_gettext("At least one item and quantity."),
    lazy_gettext("No such building in the caller's community."),
    lazy_gettext("Name a building of this community (by name or id)."),
    lazy_gettext("Name the household, or give its door."),
    lazy_gettext("Give household_id, or the building, unit and room."),
    lazy_gettext("Not an item of the community catalogue."),
    lazy_gettext("Say which community the caller lives in."),
    lazy_gettext("The caller's community is needed for this."),
    lazy_gettext("Not a community committee known to the community service."),
    lazy_gettext("A call is logged once it happened."),
    lazy_gettext("A call cannot be dated in the future."),
    lazy_gettext("Say what the caller needs."),
    lazy_gettext("What the caller needs, and how to reach them."),
)
COMMUNITY_KIND = "community_committee"
OPERATOR_CHECK_SECONDS = 300


_LACKS = re.compile(
    r"^The community's stock lacks .* \((\w+)\): (\d+) \S+ asked for, (\d+) in stock\.$"
)


def step_message(text: str) -> str:
    """A refusal of a step on a call, in the page's language (an item the stock lacks
    by its name and unit)."""
    found = _LACKS.match(text)
    item = community_item(found.group(1)) if found else None
    if found and item is not None:
        return gettext(
            "The community's stock lacks %(item)s: %(asked)s %(unit)s asked for, "
            "%(stock)s in stock.",
            item=item_text(item),
            asked=found.group(2),
            stock=found.group(3),
            unit=unit_text(item),
        )
    return message(text)


def field_word(name: str) -> str:
    found = FIELD_WORDS.get(name)
    return str(found) if found is not None else name


def operates_hotlines() -> bool:
    """Whether the signed-in user's organisation runs a hotline (asked of the API at
    most every few minutes, and kept in the cookie session meanwhile)."""
    found = me()
    if not found:
        return False
    user = str(found["user"]["id"])
    kept: list[Any] = session.get("web_hotlines") or []
    now = int(time.time())
    if len(kept) == 3 and kept[0] == user and now - int(kept[1]) < OPERATOR_CHECK_SECONDS:
        return bool(kept[2])
    answer = api.get(HOTLINES)
    runs = answer.ok and bool(answer.body["items"])
    session["web_hotlines"] = [user, now, runs]
    return runs


@bp.app_context_processor
def _hotline_globals() -> dict[str, Any]:
    ours = request.blueprint == "web"
    return {"operates_hotlines": operates_hotlines if ours else (lambda: False)}


def _communities(region: str) -> list[dict[str, Any]]:
    """The verified communities in the hotline's region, by name."""
    answer = api.get(
        "/orgs",
        query={"kind": COMMUNITY_KIND, "status": "verified", "region": region, "limit": 200},
    )
    found = list(answer.body["items"]) if answer.ok else []
    return sorted(found, key=org_name)


def _names(org_ids: set[str]) -> dict[str, str]:
    """Organisations' names by id, in the page's language."""
    ids = sorted(i for i in org_ids if i and i != "None")
    if not ids:
        return {}
    answer = api.get("/orgs/names", query={"id": ids})
    return {o["id"]: org_name(o) for o in answer.body["items"]} if answer.ok else {}


def _day() -> date:
    chosen = request.args.get("day", "")
    try:
        return date.fromisoformat(chosen)
    except ValueError:
        return datetime.now(LOCAL).date()


def _log_page(hotline_id: uuid.UUID, form: FormState, status: int = 200) -> Any:
    hotlines = api.get(HOTLINES)
    if not hotlines.ok:
        return problem_page(hotlines)
    hotline = next((h for h in hotlines.body["items"] if h["id"] == str(hotline_id)), None)
    if hotline is None:
        found = api.get(f"{HOTLINES}/{hotline_id}")
        if not found.ok:
            return problem_page(found)
        hotline = found.body
    day = _day()
    calls = api.get(f"{HOTLINES}/{hotline_id}/calls", query={"day": day.isoformat(), "limit": 200})
    if not calls.ok:
        return problem_page(calls)
    report = api.get(f"{HOTLINES}/{hotline_id}/report", query={"day": day.isoformat()})
    if not report.ok:
        return problem_page(report)
    # Coordinators read every hotline's log; its own organisation's members log calls.
    operator = str(hotline["org_id"]) == str(require_me()["organisation"]["id"])
    communities = _communities(hotline["region"]) if operator else []
    names = {c["id"]: org_name(c) for c in communities}
    if not operator:
        names = _names({str(c["community_org_id"]) for c in calls.body["items"]})
    return render_template(
        "help/calls.html",
        hotline=hotline,
        operator=operator,
        hotlines=hotlines.body["items"],
        calls=calls.body["items"],
        report=report.body,
        day=day,
        today=datetime.now(LOCAL).date(),
        communities=communities,
        names=names,
        categories=CATEGORY_WORDS,
        items=COMMUNITY_ITEMS,
        item_text=item_text,
        unit_text=unit_text,
        case_kinds=[(k, said(CASE_KIND_WORDS, k)) for k in CASE_KINDS],
        topics=TOPIC_WORDS,
        languages=LANGUAGE_WORDS,
        new_key=lambda: str(uuid.uuid4()),
        form=form,
        field_word=field_word,
        category_word=lambda c: said(CATEGORY_WORDS, c),
        became_word=lambda b: said(BECAME_WORDS, b),
        clock_time=clock_time,
        org_name=org_name,
    ), status


@bp.get("/hotlines")
def hotline_log_first() -> Any:
    """The first of the operator's hotlines (the page lets them pick another)."""
    require_me()
    answer = api.get(HOTLINES)
    if not answer.ok:
        return problem_page(answer)
    if not answer.body["items"]:
        return render_template("help/no_hotline.html")
    return redirect(url_for("web.hotline_log", hotline_id=answer.body["items"][0]["id"]))


@bp.get("/hotlines/<uuid:hotline_id>")
def hotline_log(hotline_id: uuid.UUID) -> Any:
    """A hotline's call log of a Beijing day (today unless ``day`` is given), with a
    row to log the next call and the day's figures."""
    require_me()
    return _log_page(hotline_id, FormState())


@bp.post("/hotlines/<uuid:hotline_id>")
def hotline_log_call(hotline_id: uuid.UUID) -> Any:
    require_me()
    values = {k: v.strip() for k, v in request.form.items() if k != "csrf_token"}
    body: dict[str, Any] = {}
    for name in ("category", "community_org_id", "minutes"):
        if values.get(name):
            body[name] = values[name]
    answer = api.post(
        f"{HOTLINES}/{hotline_id}/calls",
        json=body,
        idempotency_key=values.get("idempotency_key") or None,
    )
    if answer.status in (401, 403, 404) or answer.status >= 500:
        return problem_page(answer)
    if not answer.ok:
        errors: dict[str, list[str]] = {}
        for key, texts in answer.errors.items():
            name = "community_org_id" if key == "region" else key.split(".")[0]
            errors.setdefault(name, []).extend(message(t) for t in texts)
        detail = message(answer.detail) if answer.detail else None
        # Keep what was typed, so only the wrong input needs retyping.
        kept = {k: v for k, v in values.items() if k != "idempotency_key"}
        return _log_page(hotline_id, FormState(kept, errors, detail), answer.status)
    made = answer.body
    flash(
        gettext(
            "Logged: %(category)s, %(minutes)s min.",
            category=said(CATEGORY_WORDS, made["category"]),
            minutes=made["minutes"],
        ),
        "success",
    )
    return redirect(url_for("web.hotline_log", hotline_id=hotline_id))


def _back(hotline_id: uuid.UUID, call_id: uuid.UUID) -> Any:
    return redirect(url_for("web.hotline_log", hotline_id=hotline_id) + f"#call-{call_id}")


def _step(hotline_id: uuid.UUID, call_id: uuid.UUID, step: str, body: dict[str, Any]) -> Any:
    """Take a call further (``emergency`` or ``booking``); a refusal is flashed back
    at the call, as the log is where the operator works."""
    answer = api.post(
        f"{HOTLINES}/{hotline_id}/calls/{call_id}/{step}",
        json=body,
        idempotency_key=request.form.get("idempotency_key") or None,
    )
    if answer.status in (401, 404) or answer.status >= 500:
        return problem_page(answer)
    if not answer.ok:
        texts = [step_message(t) for ts in answer.errors.values() for t in ts]
        if _LACKS.match(answer.detail):
            texts = []  # the item's own line says again what the sentence says
        flash(" ".join([step_message(answer.detail), *texts]), "error")
        return _back(hotline_id, call_id)
    return answer


@bp.post("/hotlines/<uuid:hotline_id>/calls/<uuid:call_id>/case")
def hotline_call_case(hotline_id: uuid.UUID, call_id: uuid.UUID) -> Any:
    """An emergency call made an urgent case in the caller's community, in one step."""
    require_me()
    body = {
        "as": "case",
        "kind": request.form.get("kind") or None,
        "summary": request.form.get("summary", "").strip() or None,
    }
    if request.form.get("community_org_id"):
        body["community_org_id"] = request.form["community_org_id"]
    answer = _step(hotline_id, call_id, "emergency", body)
    if not isinstance(answer, ApiResponse):
        return answer
    flash(
        gettext(
            "Case %(number)s opened in the caller's community.",
            number=answer.body.get("case_number", ""),
        ),
        "success",
    )
    return _back(hotline_id, call_id)


@bp.post("/hotlines/<uuid:hotline_id>/calls/<uuid:call_id>/booking")
def hotline_call_booking(hotline_id: uuid.UUID, call_id: uuid.UUID) -> Any:
    """A counselling call booked into the queue for a session with a helper."""
    require_me()
    body = {
        "topic": request.form.get("topic", ""),
        "languages": request.form.getlist("languages") or ["zh"],
        "contact": request.form.get("contact", "").strip(),
        "text": request.form.get("text", "").strip() or None,
    }
    answer = _step(hotline_id, call_id, "booking", body)
    if not isinstance(answer, ApiResponse):
        return answer
    if answer.body.get("crisis_line"):
        flash(
            gettext(
                "The caller spoke of harming themselves: give them the crisis line %(line)s "
                "now. The request is first in line.",
                line=answer.body["crisis_line"],
            ),
            "error",
        )
    else:
        flash(gettext("Booked: the caller's request is in line for a session."), "success")
    return _back(hotline_id, call_id)


@bp.post("/hotlines/<uuid:hotline_id>/calls/<uuid:call_id>/delivery")
def hotline_call_delivery(hotline_id: uuid.UUID, call_id: uuid.UUID) -> Any:
    """An emergency call for goods made, in one step, a delivery from the caller's
    community's stock to their door, on their building's list for its volunteers."""
    require_me()
    door = {
        part: value
        for part in ("building", "unit", "room", "phone", "note")
        if (value := request.form.get(f"household.{part}", "").strip())
    }
    items = {
        item.code: _typed(typed)
        for item in COMMUNITY_ITEMS
        if (typed := request.form.get(f"items.{item.code}", "").strip())
    }
    body: dict[str, Any] = {"as": "delivery", "household": door, "items": items}
    if request.form.get("community_org_id"):
        body["community_org_id"] = request.form["community_org_id"]
    answer = _step(hotline_id, call_id, "emergency", body)
    if not isinstance(answer, ApiResponse):
        return answer
    flash(
        gettext("The delivery is on the building's list for its volunteers to bring."),
        "success",
    )
    return _back(hotline_id, call_id)
