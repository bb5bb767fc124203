"""The community committee's pages, beside the building leaders' and volunteers' ones
(services/gateway/web/community.py): its buildings, who holds which role, the
households of each building, order rounds, the community's stock (split over the
households by a rule, written off with a reason, every unit accounted for), and
residents' cases: intake, assignment, reopening, the committee's counts and the social
workers' hours.

Households are the most sensitive data aidlink holds: these pages show them only as
the community API answers them to the signed-in user (the committee all of them, a
building leader their buildings'), and never to anyone else. Plain forms throughout;
an error is shown at the input it concerns and in a summary naming it.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext, lazy_gettext

from services.gateway.web import api
from services.gateway.web.api import ApiResponse
from services.gateway.web.base import bp, problem_page, quantity_text
from services.gateway.web.community import (
    _BY_RELIEF,
    CASE_KINDS,
    CASE_STATUSES,
    CASE_URGENCIES,
    ROLE_WORDS,
    ROUND_WORDS,
    Place,
    _case_place,
    _place,
    _refuse,
    _typed,
    act_on_case,
    field_texts,
    household_label,
    item_text,
    message,
    ordered_text,
    unit_text,
)
from services.gateway.web.forms import FormState
from services.gateway.web.i18n import base_unit, current_language, item_name
from services.gateway.web.times import local_time
from shared.catalog.community import COMMUNITY_ITEMS, community_item

FLAG_WORDS = {
    "elderly_alone": lazy_gettext("elderly, living alone"),
    "chronic_medicine": lazy_gettext("chronic illness, regular medicine"),
    "disability": lazy_gettext("disability"),
    "pregnancy": lazy_gettext("pregnancy"),
    "infants": lazy_gettext("infants"),
    "medical_family": lazy_gettext("family of medical staff"),
    "quarantine": lazy_gettext("in quarantine"),
}
RULE_WORDS = {
    "vulnerable_first": lazy_gettext("Vulnerable households first"),
    "as_ordered": lazy_gettext("As ordered"),
    "per_person": lazy_gettext("Per person"),
    "by_hand": lazy_gettext("By hand"),
}
RULE_HINTS = {
    "vulnerable_first": lazy_gettext(
        "Households with a flag get what they ordered in full first; the others share "
        "what is left, as ordered."
    ),
    "as_ordered": lazy_gettext("What each household ordered, in proportion when it is short."),
    "per_person": lazy_gettext("In proportion to the people of each household, ordered or not."),
    "by_hand": lazy_gettext("The figures typed in the table below, in the unit shown."),
}
# Roles the committee appoints (a member without any is on the committee).
APPOINTED_ROLES = (
    "building_leader",
    "area_leader",
    "volunteer",
    "social_worker",
    "case_supervisor",
    "committee",
)
ACCOUNT_WORDS = {
    "received": lazy_gettext("Received"),
    "delivered": lazy_gettext("Delivered to households"),
    "pending": lazy_gettext("Out for delivery"),
    "in_stock": lazy_gettext("In stock"),
    "written_off": lazy_gettext("Written off"),
}
# The inputs of these pages, by the API's field names.
FIELD_WORDS = {
    "name": lazy_gettext("Name"),
    "area": lazy_gettext("Area (片区)"),
    "user_id": lazy_gettext("Member of the community"),
    "role": lazy_gettext("Role"),
    "building_id": lazy_gettext("Building"),
    "hours_per_day": lazy_gettext("Hours a day"),
    "unit": lazy_gettext("Unit (单元)"),
    "room": lazy_gettext("Room"),
    "people": lazy_gettext("People"),
    "flags": lazy_gettext("Flags"),
    "note": lazy_gettext("Note for whoever brings the goods"),
    "phone": lazy_gettext("Phone"),
    "confirm": lazy_gettext("Confirmation"),
    "title": lazy_gettext("Title"),
    "limits": lazy_gettext("Limits per household"),
    "rule": lazy_gettext("Rule"),
    "round_id": lazy_gettext("Whose orders count"),
    "items": lazy_gettext("Items"),
    "allocations": lazy_gettext("By hand"),
    "item": lazy_gettext("Item"),
    "quantity": lazy_gettext("Quantity"),
    "reason": lazy_gettext("Reason"),
    "kind": lazy_gettext("What the resident asks for"),
    "urgency": lazy_gettext("Urgency"),
    "summary": lazy_gettext("What the resident needs"),
    "household_id": lazy_gettext("Household"),
    "social_worker_id": lazy_gettext("Social worker"),
}
MANAGE_REFUSED = lazy_gettext("Only the community's committee may do this.")
HOUSEHOLDS_REFUSED = lazy_gettext("Households are kept by the committee and the building leaders.")
INTAKE_REFUSED = lazy_gettext(
    "Cases are taken in by social workers, building leaders, case supervisors and the committee."
)
HOURS_REFUSED = lazy_gettext(
    "Social workers' hours are for the committee, case supervisors and the workers themselves."
)
MANAGE_MESSAGES = (
    lazy_gettext("Households are kept by the committee and the building's leader."),
    lazy_gettext("Another building's households are its leader's."),
    lazy_gettext("That building's households are its leader's."),
    lazy_gettext("The building already has a household at that unit and room."),
    lazy_gettext("Name the area."),
    lazy_gettext("An area leader is appointed for an area."),
    lazy_gettext("Leave it out for this role."),
    lazy_gettext("Give the hours a day (0 to 24)."),
    lazy_gettext("A social worker states the hours a day they can give."),
    lazy_gettext("Limits are set per item of the community catalogue."),
    lazy_gettext("Allocate to the community's households."),
    lazy_gettext("the figures add up to more than the stock"),
    lazy_gettext("The rule gives nobody anything from this stock."),
    lazy_gettext("The case names a household the caller cannot take a case in for."),
    lazy_gettext("No such household in this community."),
    lazy_gettext("No such household in this community among the buildings you lead."),
    lazy_gettext("Name a social worker, or ask for auto assignment; not both."),
    lazy_gettext("Cases are assigned to the community's social workers."),
    lazy_gettext("This social worker has stated no hours to give."),
    lazy_gettext("This social worker gives 0 hours a day."),
    lazy_gettext("This case is closed; a case supervisor may reopen it."),
    lazy_gettext("This case's household was erased; the case is kept for the counts only."),
    lazy_gettext("Counts of cases are for the committee, case supervisors and coordinators."),
    lazy_gettext(
        "A social worker's hours are set by the worker, the committee or a case supervisor."
    ),
    lazy_gettext("Someone changed this household meanwhile: here it is as it is now."),
)


def field_word(name: str) -> str:
    """An input's label by its name (``limits.rice`` by its item)."""
    head, _, rest = name.partition(".")
    if head == "limits" and rest and (item := community_item(rest)) is not None:
        return item_text(item)
    found = FIELD_WORDS.get(name) or FIELD_WORDS.get(head)
    return str(found) if found is not None else name


def _form_errors(answer: ApiResponse, fields: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """The API's errors by input, translated: ``flags.0`` is ``flags``, ``limits.rice.value``
    is ``limits.rice``; errors of inputs the form does not have go to its first one."""
    errors: dict[str, list[str]] = {}
    for key, texts in answer.errors.items():
        parts = key.split(".")
        name = ".".join(parts[:2]) if parts[0] in ("limits", "allocations") else parts[0]
        if fields and name not in fields and parts[0] not in fields:
            name = fields[0]
        errors.setdefault(name, []).extend(message(text)[1] for text in texts)
    return errors


def _problem(
    values: dict[str, Any], answer: ApiResponse, fields: tuple[str, ...] = ()
) -> FormState:
    detail = message(answer.detail)[1] if answer.detail else None
    return FormState(values, _form_errors(answer, fields), detail)


def _whole_page_problem(answer: ApiResponse) -> bool:
    return answer.status in (403, 404) or answer.status >= 500


def _committee() -> Place:
    place = _place()
    if not place.committee:
        _refuse(ApiResponse(403, {"detail": str(MANAGE_REFUSED)}))
    return place


def _values() -> dict[str, str]:
    return {k: v.strip() for k, v in request.form.items() if k not in ("csrf_token",)}


def _page(template: str, place: Place, status: int = 200, **context: Any) -> Any:
    return render_template(
        template,
        place=place,
        field_word=field_word,
        role_word=lambda role: str(ROLE_WORDS.get(role, role)),
        flag_word=lambda flag: str(FLAG_WORDS.get(flag, flag)),
        round_word=lambda s: str(ROUND_WORDS.get(s, s)),
        household_label=household_label,
        local_time=local_time,
        **context,
    ), status


# Buildings ------------------------------------------------------------------------------


@bp.route("/community/buildings", methods=["GET", "POST"])
def community_buildings() -> Any:
    """The community's buildings by name and area; the committee adds one."""
    place = _committee()
    form = FormState()
    status = 200
    if request.method == "POST":
        values = _values()
        answer = api.post(
            f"/community/{place.org_id}/buildings",
            json={"name": values.get("name", ""), "area": values.get("area") or None},
            idempotency_key=values.get("idempotency_key") or None,
        )
        if _whole_page_problem(answer):
            return problem_page(answer)
        if answer.ok:
            flash(gettext("%(name)s is added.", name=answer.body["name"]), "success")
            return redirect(url_for("web.community_buildings"))
        form, status = _problem(values, answer, ("name", "area")), answer.status
        if answer.status == 409:
            form.errors.setdefault("name", []).append(form.detail or "")
            form.detail = None
    households = api.get(f"/community/{place.org_id}/households")
    counts: dict[str, int] = {}
    if households.ok:
        for household in households.body["items"]:
            key = str(household["building_id"])
            counts[key] = counts.get(key, 0) + 1
    buildings = sorted(place.buildings.values(), key=lambda b: (b.get("area") or "", b["name"]))
    return _page(
        "community/buildings.html", place, status, form=form, buildings=buildings, counts=counts
    )


# Appointments ---------------------------------------------------------------------------


def _members(place: Place) -> list[dict[str, Any]]:
    """The organisation's users to choose from, where the gateway lists them to the
    reader (its admins and coordinators); else none, and the member is named by id."""
    answer = api.get(f"/orgs/{place.org_id}/members")
    if not answer.ok or not isinstance(answer.body, dict):
        return []
    return [m for m in answer.body.get("items", []) if m.get("active", True)]


@bp.route("/community/people", methods=["GET", "POST"])
def community_people() -> Any:
    """Who holds which role in the community; the committee appoints a member of the
    organisation to a role (for a building, an area, or with hours a day) and ends an
    appointment."""
    place = _committee()
    members = _members(place)
    form = FormState()
    status = 200
    if request.method == "POST":
        values = _values()
        body: dict[str, Any] = {
            "user_id": values.get("user_id", ""),
            "role": values.get("role", ""),
        }
        for name in ("building_id", "area"):
            if values.get(name):
                body[name] = values[name]
        if values.get("hours_per_day"):
            body["hours_per_day"] = _number(values["hours_per_day"])
        named = {str(m["user_id"]): m["name"] for m in members}.get(body["user_id"])
        if named:
            body["name"] = named
        if not body["user_id"]:
            body.pop("user_id")
        if not body["role"]:
            body.pop("role")
        answer = api.post(
            f"/community/{place.org_id}/appointments",
            json=body,
            idempotency_key=values.get("idempotency_key") or None,
        )
        if answer.status == 403 or answer.status >= 500:
            return problem_page(answer)
        if answer.ok:
            flash(
                gettext(
                    "%(name)s is appointed %(role)s.",
                    name=named or "",
                    role=ROLE_WORDS.get(answer.body["role"], answer.body["role"]),
                ),
                "success",
            )
            return redirect(url_for("web.community_people"))
        fields = ("user_id", "role", "building_id", "area", "hours_per_day")
        form, status = _problem(values, answer, fields), answer.status
        if answer.status == 404:  # a building that is not the community's
            form.errors.setdefault("building_id", []).append(form.detail or "")
            form.detail = None
    appointments = api.get(f"/community/{place.org_id}/appointments")
    if not appointments.ok:
        return problem_page(appointments)
    names = {str(m["user_id"]): m for m in members}
    return _page(
        "community/people.html",
        place,
        status,
        form=form,
        members=members,
        names=names,
        appointments=appointments.body["items"],
        roles=[(r, str(ROLE_WORDS.get(r, r))) for r in APPOINTED_ROLES],
        member_options=[(str(m["user_id"]), f"{m['name']} · {m['email']}") for m in members],
        building_options=_building_options(place),
    )


def _building_options(place: Place) -> list[tuple[str, str]]:
    return sorted(((b, place.building_name(b)) for b in place.buildings), key=lambda p: p[1])


def _number(text: str) -> Any:
    try:
        return float(text.replace(",", "."))
    except ValueError:
        return text


@bp.post("/community/people/<uuid:appointment_id>/end")
def community_people_end(appointment_id: uuid.UUID) -> Any:
    """End an appointment: the member is back on the committee unless they hold another."""
    place = _committee()
    answer = api.call("DELETE", f"/community/{place.org_id}/appointments/{appointment_id}")
    if not answer.ok:
        return problem_page(answer)
    flash(gettext("The appointment has ended."), "success")
    return redirect(url_for("web.community_people"))


# Households -----------------------------------------------------------------------------


def _keeper() -> Place:
    """The committee or a building leader: those who keep households."""
    place = _place()
    if not (place.committee or place.leads):
        _refuse(ApiResponse(403, {"detail": str(HOUSEHOLDS_REFUSED)}))
    return place


def _kept_buildings(place: Place) -> list[tuple[str, str]]:
    return sorted(
        ((b, place.building_name(b)) for b in place.buildings if place.keeps(b)),
        key=lambda pair: pair[1],
    )


@bp.get("/community/households")
def community_households() -> Any:
    """The households the reader keeps, building by building, with their flags: every
    building's for the committee, their own buildings' for a building leader."""
    place = _keeper()
    chosen = request.args.get("building") or ""
    query = {"building_id": chosen} if chosen else {}
    answer = api.get(f"/community/{place.org_id}/households", query=query)
    if not answer.ok:
        return problem_page(answer)
    by_building: dict[str, list[dict[str, Any]]] = {}
    for household in answer.body["items"]:
        by_building.setdefault(str(household["building_id"]), []).append(household)
    shown = [b for b, _name in _kept_buildings(place) if not chosen or b == chosen]
    return _page(
        "community/households.html",
        place,
        chosen=chosen,
        buildings=[(b, by_building.get(b, [])) for b in shown],
    )


def _household_body(values: dict[str, Any], flags: list[str], *, new: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "building_id": values.get("building_id", ""),
        "unit": values.get("unit", ""),
        "room": values.get("room", ""),
        "people": _typed(values.get("people", "")),
        "flags": flags,
        "note": values.get("note") or None,
        "phone": values.get("phone") or None,
    }
    if new:
        for name in ("building_id", "room", "people"):
            if body[name] == "":
                body.pop(name)
    return body


HOUSEHOLD_FIELDS = ("building_id", "unit", "room", "people", "flags", "note", "phone")


def _household_page(
    place: Place, form: FormState, household: dict[str, Any] | None = None, status: int = 200
) -> Any:
    return _page(
        "community/household.html",
        place,
        status,
        form=form,
        household=household,
        buildings=_kept_buildings(place),
        flags=list(FLAG_WORDS.items()),
    )


def _with_flags(values: dict[str, Any], flags: list[str]) -> dict[str, Any]:
    return {**values, **{f"flag.{f}": "1" for f in flags}}


@bp.route("/community/households/new", methods=["GET", "POST"])
def community_household_new() -> Any:
    """Record a household of a building the reader keeps."""
    place = _keeper()
    if request.method == "GET":
        building = request.args.get("building") or ""
        return _household_page(place, FormState({"building_id": building}))
    values = _values()
    flags = [f for f in request.form.getlist("flags") if f]
    answer = api.post(
        f"/community/{place.org_id}/households",
        json=_household_body(values, flags, new=True),
        idempotency_key=values.get("idempotency_key") or None,
    )
    if answer.status >= 500:
        return problem_page(answer)
    if answer.ok:
        made = answer.body
        flash(
            gettext(
                "Household %(door)s is recorded.",
                door=household_label(made["unit"], made["room"]),
            ),
            "success",
        )
        return redirect(url_for("web.community_households", building=made["building_id"]))
    form = _problem(_with_flags(values, flags), answer, HOUSEHOLD_FIELDS)
    if answer.status in (403, 404, 409):
        form.errors.setdefault("building_id" if answer.status != 409 else "room", []).append(
            form.detail or ""
        )
        form.detail = None
    return _household_page(place, form, status=answer.status)


def _household(place: Place, household_id: uuid.UUID) -> ApiResponse:
    answer = api.get(f"/community/{place.org_id}/households/{household_id}")
    if not answer.ok:
        _refuse(answer)
    return answer


def _household_values(found: dict[str, Any]) -> dict[str, Any]:
    values = {name: found.get(name) or "" for name in HOUSEHOLD_FIELDS if name != "flags"}
    return _with_flags(values, list(found.get("flags") or []))


@bp.route("/community/households/<uuid:household_id>", methods=["GET", "POST"])
def community_household(household_id: uuid.UUID) -> Any:
    """Change a household (based on the version shown: a change made meanwhile by
    someone else is shown rather than overwritten)."""
    place = _keeper()
    found = _household(place, household_id)
    household = dict(found.body)
    if request.method == "GET":
        return _household_page(place, FormState(_household_values(household)), household)
    values = _values()
    flags = [f for f in request.form.getlist("flags") if f]
    answer = api.patch(
        f"/community/{place.org_id}/households/{household_id}",
        json=_household_body(values, flags, new=False),
        if_match=f'"{values.get("version", "")}"' if values.get("version") else None,
    )
    if answer.status >= 500 or answer.status == 404:
        return problem_page(answer)
    if answer.ok:
        flash(
            gettext(
                "Household %(door)s is saved.",
                door=household_label(answer.body["unit"], answer.body["room"]),
            ),
            "success",
        )
        return redirect(url_for("web.community_households", building=answer.body["building_id"]))
    if answer.status == 412:
        form = FormState(
            _household_values(household),
            detail=gettext("Someone changed this household meanwhile: here it is as it is now."),
        )
        return _household_page(place, form, household, 409)
    form = _problem(_with_flags(values, flags), answer, HOUSEHOLD_FIELDS)
    if answer.status in (403, 409):
        form.errors.setdefault("building_id" if answer.status == 403 else "room", []).append(
            form.detail or ""
        )
        form.detail = None
    return _household_page(place, form, household, answer.status)


@bp.post("/community/households/<uuid:household_id>/remove")
def community_household_remove(household_id: uuid.UUID) -> Any:
    """A household that moved away: its details are erased, its counts stay. The box
    saying so must be ticked."""
    place = _keeper()
    found = _household(place, household_id)
    household = dict(found.body)
    if not request.form.get("confirm"):
        form = FormState(
            _household_values(household),
            {"confirm": [gettext("Tick the box to erase this household's details.")]},
        )
        return _household_page(place, form, household, 422)
    answer = api.call("DELETE", f"/community/{place.org_id}/households/{household_id}")
    if not answer.ok:
        return problem_page(answer)
    flash(
        gettext(
            "Household %(door)s is removed; only its counts are kept.",
            door=household_label(household["unit"], household["room"]),
        ),
        "success",
    )
    return redirect(url_for("web.community_households", building=household["building_id"]))


# Order rounds ---------------------------------------------------------------------------


@bp.route("/community/rounds", methods=["GET", "POST"])
def community_rounds() -> Any:
    """The community's order rounds, newest first; the committee opens one with the
    most a household may order of each item."""
    place = _place()
    if not (place.committee or place.leads):
        _refuse(ApiResponse(403, {"detail": str(MANAGE_REFUSED)}))
    form = FormState()
    status = 200
    if request.method == "POST":
        if not place.committee:
            _refuse(ApiResponse(403, {"detail": str(MANAGE_REFUSED)}))
        values = _values()
        limits = {
            item.code: _typed(values[f"limits.{item.code}"])
            for item in COMMUNITY_ITEMS
            if values.get(f"limits.{item.code}")
        }
        body: dict[str, Any] = {"limits": limits}
        if values.get("title"):
            body["title"] = values["title"]
        answer = api.post(
            f"/community/{place.org_id}/rounds",
            json=body,
            idempotency_key=values.get("idempotency_key") or None,
        )
        if _whole_page_problem(answer):
            return problem_page(answer)
        if answer.ok:
            flash(gettext("%(title)s is open for orders.", title=answer.body["title"]), "success")
            return redirect(url_for("web.community_rounds"))
        form, status = _problem(values, answer, ("title", "limits")), answer.status
    rounds = api.get(f"/community/{place.org_id}/rounds")
    if not rounds.ok:
        return problem_page(rounds)
    return _page(
        "community/rounds.html",
        place,
        status,
        form=form,
        rounds=rounds.body["items"],
        items=COMMUNITY_ITEMS,
        item_text=item_text,
        unit_text=unit_text,
        limits_text=limits_text,
    )


def limits_text(limits: dict[str, int]) -> str:
    """A round's limits in the catalogue's order: "Vegetables 10 jin, Rice 5 kg"."""
    parts = [
        f"{item_text(item)} {ordered_text(item, limits[item.code])}"
        for item in COMMUNITY_ITEMS
        if item.code in limits
    ]
    return ("、" if current_language() == "zh" else ", ").join(parts)


# Stock, distribution and write-offs -------------------------------------------------------


def relief_text(relief: str, amount: int) -> str:
    """Base units of a relief item as people read them: as ordered where the community
    orders it ("48 jin (24 kg)"), else in its unit."""
    if not amount:
        return "0"
    item = _BY_RELIEF.get(relief)
    weighed = quantity_text(amount, base_unit(relief))
    if item is None or item.base_per_unit == 1:
        return weighed
    steps, rest = divmod(int(amount), item.base_per_unit)
    if rest:
        return weighed
    ordered = ordered_text(item, steps)
    # "30 kg" ordered reads as "30 kg" weighed (公斤 and 千克 alike): said once.
    if ordered == weighed or ordered.split()[0] == weighed.split()[0]:
        return ordered
    return f"{ordered} ({weighed})"


def relief_label(relief: str) -> str:
    item = _BY_RELIEF.get(relief)
    return item_text(item) if item is not None else item_name(relief)


def _stock_page(place: Place, forms: dict[str, FormState] | None = None, status: int = 200) -> Any:
    stock = api.get(f"/community/{place.org_id}/stock")
    if not stock.ok:
        return problem_page(stock)
    rounds = api.get(f"/community/{place.org_id}/rounds")
    if not rounds.ok:
        return problem_page(rounds)
    households = api.get(f"/community/{place.org_id}/households")
    if not households.ok:
        return problem_page(households)
    in_stock = {k: int(v) for k, v in stock.body["stock"].items() if int(v) > 0}
    splittable = [
        (relief, _BY_RELIEF[relief]) for relief in sorted(in_stock) if relief in _BY_RELIEF
    ]
    forms = forms or {}
    return _page(
        "community/stock.html",
        place,
        status,
        accounts=sorted(stock.body["accounts"].items(), key=lambda pair: relief_label(pair[0])),
        account_words=ACCOUNT_WORDS,
        in_stock=in_stock,
        splittable=splittable,
        confirmed=[r for r in rounds.body["items"] if r["status"] == "confirmed"],
        households=households.body["items"],
        rules=[(r, str(RULE_WORDS[r]), str(RULE_HINTS[r])) for r in RULE_WORDS],
        relief_text=relief_text,
        relief_label=relief_label,
        item_text=item_text,
        unit_text=unit_text,
        split=forms.get("split") or FormState({"rule": "vulnerable_first"}),
        write_off=forms.get("write_off") or FormState(),
    )


@bp.get("/community/stock")
def community_stock() -> Any:
    """What the community holds and where every unit it received went; the split of the
    stock over households and write-offs (the committee)."""
    return _stock_page(_committee())


@bp.post("/community/stock/split")
def community_stock_split() -> Any:
    """Split the stock over the households by the chosen rule into delivery lists."""
    place = _committee()
    values = _values()
    rule = values.get("rule", "")
    body: dict[str, Any] = {"rule": rule}
    if values.get("round_id"):
        body["round_id"] = values["round_id"]
    chosen = [code for code in request.form.getlist("items") if code]
    if chosen:
        body["items"] = chosen
    if rule == "by_hand":
        allocations: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            parts = name.split(".")
            if len(parts) == 3 and parts[0] == "allocations" and value:
                allocations.setdefault(parts[1], {})[parts[2]] = _typed(value)
        body["allocations"] = allocations
    answer = api.post(
        f"/community/{place.org_id}/distributions",
        json=body,
        idempotency_key=values.get("idempotency_key") or None,
    )
    if _whole_page_problem(answer):
        return problem_page(answer)
    if not answer.ok:
        values.update({f"item.{code}": "1" for code in chosen})
        form = _problem(values, answer, ("rule", "round_id", "items", "allocations"))
        if answer.status == 409:
            form.errors.setdefault("rule", []).append(form.detail or "")
            form.detail = None
        for key in list(form.errors):
            if key.startswith("allocations."):  # household.item -> all figures at once
                form.errors.setdefault("allocations", []).extend(form.errors.pop(key))
        return _stock_page(place, {"split": form}, answer.status)
    flash(
        gettext(
            "Delivery lists: %(n)s household(s) to visit (%(rule)s).",
            n=answer.body["deliveries"],
            rule=RULE_WORDS.get(rule, rule),
        ),
        "success",
    )
    return redirect(url_for("web.community_deliveries"))


@bp.post("/community/stock/write-off")
def community_stock_write_off() -> Any:
    """Write off stock that cannot be handed out, in the unit it is ordered in, with
    the reason."""
    place = _committee()
    values = _values()
    relief = values.get("item", "")
    item = _BY_RELIEF.get(relief)
    quantity = _typed(values.get("quantity", ""))
    if isinstance(quantity, int) and item is not None:
        quantity *= item.base_per_unit
    body: dict[str, Any] = {"item": relief, "reason": values.get("reason", "")}
    if quantity != "":
        body["quantity"] = quantity
    if not body["item"]:
        body.pop("item")
    answer = api.post(
        f"/community/{place.org_id}/write-offs",
        json=body,
        idempotency_key=values.get("idempotency_key") or None,
    )
    if _whole_page_problem(answer):
        return problem_page(answer)
    if not answer.ok:
        form = _problem(values, answer, ("item", "quantity", "reason"))
        if "quantity" in form.errors and relief and answer.status == 422:
            have = api.get(f"/community/{place.org_id}/stock")
            held = int(have.body["stock"].get(relief, 0)) if have.ok else 0
            if any(t.startswith(("At most", "最多")) for t in form.errors["quantity"]):
                form.errors["quantity"] = [
                    gettext("At most %(amount)s is in stock.", amount=relief_text(relief, held))
                ]
        return _stock_page(place, {"write_off": form}, answer.status)
    flash(
        gettext(
            "Written off: %(amount)s of %(item)s.",
            amount=relief_text(relief, int(answer.body["quantity"])),
            item=relief_label(relief),
        ),
        "success",
    )
    return redirect(url_for("web.community_stock"))


# Cases ----------------------------------------------------------------------------------


def _taker() -> Place:
    place = _place()
    roles = set(place.roles)
    if not (place.committee or place.leads or roles & {"social_worker", "case_supervisor"}):
        _refuse(ApiResponse(403, {"detail": str(INTAKE_REFUSED)}))
    return place


def _intake_page(place: Place, form: FormState, status: int = 200) -> Any:
    households = api.get(f"/community/{place.org_id}/households")
    return _page(
        "community/case_new.html",
        place,
        status,
        form=form,
        household_options=[
            (
                str(h["id"]),
                f"{place.building_name(str(h['building_id']))} "
                + household_label(h["unit"], h["room"]),
            )
            for h in (households.body["items"] if households.ok else [])
        ],
        kinds=[(k, str(v)) for k, v in CASE_KINDS.items()],
        urgencies=[(u, str(CASE_URGENCIES[u])) for u in ("routine", "soon", "urgent")],
    )


def sees_cases(place: Place) -> bool:
    return place.committee or bool({"social_worker", "case_supervisor"} & set(place.roles))


@bp.route("/community/cases/new", methods=["GET", "POST"])
def community_case_new() -> Any:
    """Take a resident's request in as a case: what they ask for, how urgent, what they
    need in the words of whoever takes it, and their household if any."""
    place = _taker()
    if request.method == "GET":
        return _intake_page(place, FormState({"urgency": "routine"}))
    values = _values()
    body: dict[str, Any] = {
        name: values[name] for name in ("kind", "urgency", "summary") if values.get(name)
    }
    if values.get("household_id"):
        body["household_id"] = values["household_id"]
    answer = api.post(
        f"/community/{place.org_id}/cases",
        json=body,
        idempotency_key=values.get("idempotency_key") or None,
    )
    if _whole_page_problem(answer):
        return problem_page(answer)
    if not answer.ok:
        fields = ("kind", "urgency", "summary", "household_id")
        return _intake_page(place, _problem(values, answer, fields), answer.status)
    flash(gettext("Case %(number)s is taken in.", number=answer.body["number"]), "success")
    if sees_cases(place):
        return redirect(url_for("web.community_cases") + f"#case-{answer.body['id']}")
    return redirect(url_for("web.community"))


@bp.post("/community/cases/<uuid:case_id>/assign")
def community_case_assign(case_id: uuid.UUID) -> Any:
    """Hand a case to a named social worker, or to the one with most hours to spare."""
    chosen = request.form.get("social_worker_id", "").strip()
    body: dict[str, Any] = {"auto": True} if chosen == "auto" else {}
    if chosen and chosen != "auto":
        body["social_worker_id"] = chosen
    return act_on_case(
        _case_place(),
        case_id,
        "assign",
        body,
        "social_worker_id",
        lambda done: gettext("Case %(number)s is assigned.", number=done["number"]),
    )


@bp.post("/community/cases/<uuid:case_id>/reopen")
def community_case_reopen(case_id: uuid.UUID) -> Any:
    """Take a closed case up again, saying why (case supervisors)."""
    return act_on_case(
        _case_place(),
        case_id,
        "reopen",
        {"reason": request.form.get("reason", "").strip()},
        "reason",
        lambda done: gettext("Case %(number)s is reopened.", number=done["number"]),
    )


@bp.get("/community/cases/summary")
def community_cases_summary() -> Any:
    """Counts only: the community's cases not yet closed by kind and urgency, and by
    status (the committee and case supervisors)."""
    place = _place()
    answer = api.get(f"/community/{place.org_id}/cases/summary")
    if not answer.ok:
        return problem_page(answer)
    return _page(
        "community/cases_summary.html",
        place,
        figures=answer.body,
        kinds=list(CASE_KINDS.items()),
        urgencies=[(u, CASE_URGENCIES[u]) for u in ("urgent", "soon", "routine")],
        status_word=lambda s: str(CASE_STATUSES.get(s, s)),
    )


@bp.route("/community/hours", methods=["GET", "POST"])
def community_hours() -> Any:
    """The hours a day each social worker can give cases, their active cases and spare
    hours: a social worker sets their own; the committee and case supervisors anyone's."""
    place = _place()
    form = FormState()
    status = 200
    if request.method == "POST":
        user_id = request.form.get("user_id", "").strip()
        text = request.form.get("hours_per_day", "").strip()
        name = f"workers.{user_id}.hours_per_day"
        try:
            worker = uuid.UUID(user_id)
        except ValueError:
            return problem_page(
                ApiResponse(404, {"detail": "No such social worker in this community."})
            )
        answer = api.call(
            "PUT",
            f"/community/{place.org_id}/case-workers/{worker}/hours",
            json={"hours_per_day": _number(text) if text else None},
        )
        if _whole_page_problem(answer):
            return problem_page(answer)
        if answer.ok:
            flash(
                gettext(
                    "%(hours)s hours a day are noted.",
                    hours=f"{answer.body['hours_per_day']:g}",
                ),
                "success",
            )
            return redirect(url_for("web.community_hours"))
        form = FormState({name: text}, {name: field_texts(answer)})
        status = answer.status
    answer = api.get(f"/community/{place.org_id}/case-workers")
    if answer.status == 403:
        _refuse(ApiResponse(403, {"detail": str(HOURS_REFUSED)}))
    if not answer.ok:
        return problem_page(answer)
    return _page("community/hours.html", place, status, form=form, workers=answer.body["items"])
