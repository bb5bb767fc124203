"""The pages of the people who work inside a residential community, on a phone as much
as at a desk: the building leader's order entry for a round (one row a household, a
column an item of the community catalogue, typed or pasted from a spreadsheet), the
committee's totals and their confirmation as the community's need, and the
volunteer's delivery list door to door.

Every figure and every household comes from the community service's API as the
signed-in user sees it there: a building leader is given only their buildings'
households, a volunteer only their buildings' deliveries, so a page never holds more
than its reader may see. Plain forms throughout: nothing needs JavaScript, and a
delivery list is a few kilobytes on a slow connection.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from flask import abort, flash, make_response, redirect, render_template, request, url_for
from flask_babel import gettext, lazy_gettext

from services.gateway.web import api
from services.gateway.web.api import ApiResponse
from services.gateway.web.base import bp, problem_page, quantity_text, require_me
from services.gateway.web.forms import FormState
from services.gateway.web.i18n import N_, api_message, base_unit, current_language, item_name
from services.gateway.web.labels import input_id
from services.gateway.web.times import local_time
from shared.catalog.community import COMMUNITY_ITEMS, CommunityItem, community_item

COMMUNITY_KIND = "community_committee"
# Relief items as the community orders them (a delivery names relief items).
_BY_RELIEF = {item.relief_item: item for item in COMMUNITY_ITEMS if item.relief_item}

OUTCOME_WORDS = {
    "pending": lazy_gettext("to deliver"),
    "delivered": lazy_gettext("delivered"),
    "not_home": lazy_gettext("not home"),
    "refused": lazy_gettext("refused by the household"),
    "returned": lazy_gettext("returned"),
}
# The buttons at the door.
OUTCOME_BUTTONS = {
    "delivered": lazy_gettext("Delivered"),
    "not_home": lazy_gettext("Not home"),
    "refused": lazy_gettext("Refused"),
    "returned": lazy_gettext("Returned"),
}
ROUND_WORDS = {"open": lazy_gettext("open for orders"), "confirmed": lazy_gettext("confirmed")}
ROLE_WORDS = {
    "committee": lazy_gettext("committee"),
    "coordinator": lazy_gettext("coordinator"),
    "building_leader": lazy_gettext("building leader"),
    "area_leader": lazy_gettext("area leader"),
    "volunteer": lazy_gettext("volunteer"),
    "social_worker": lazy_gettext("social worker"),
    "case_supervisor": lazy_gettext("case supervisor"),
}


# Who is asking ------------------------------------------------------------------------


@dataclass
class Place:
    """The signed-in user's community, their standing in it and its buildings."""

    org_id: str
    org: dict[str, Any]
    roles: list[str]
    leads: list[str]
    delivers: list[str]
    buildings: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def committee(self) -> bool:
        return "committee" in self.roles

    def building_name(self, building_id: str) -> str:
        found = self.buildings.get(building_id)
        return str(found["name"]) if found else ""

    def names(self, building_ids: Iterable[str]) -> str:
        return ", ".join(sorted(self.building_name(b) for b in building_ids))

    def keeps(self, building_id: str) -> bool:
        """Whether the user enters orders for the building's households."""
        return self.committee or building_id in self.leads


def _refuse(answer: ApiResponse) -> NoReturn:
    abort(make_response(problem_page(answer)))


def _place() -> Place:
    """The signed-in user's community, or a page saying these pages are not theirs."""
    found = require_me()
    org = found["organisation"]
    if org.get("kind") != COMMUNITY_KIND:
        abort(
            make_response(
                render_template(
                    "error.html",
                    status=403,
                    message=gettext("These pages are for the people of a residential community."),
                ),
                403,
            )
        )
    org_id = str(org["id"])
    standing = api.get(f"/community/{org_id}/me")
    if not standing.ok:
        _refuse(standing)
    buildings = api.get(f"/community/{org_id}/buildings")
    if not buildings.ok:
        _refuse(buildings)
    return Place(
        org_id=org_id,
        org=org,
        roles=list(standing.body["roles"]),
        leads=[str(b) for b in standing.body["leads"]],
        delivers=[str(b) for b in standing.body["delivers"]],
        buildings={str(b["id"]): b for b in buildings.body["items"]},
    )


def _round(place: Place, round_id: uuid.UUID) -> dict[str, Any]:
    rounds = api.get(f"/community/{place.org_id}/rounds")
    if not rounds.ok:
        _refuse(rounds)
    for found in rounds.body["items"]:
        if found["id"] == str(round_id):
            return dict(found)
    _refuse(ApiResponse(404, {"detail": "No such order round."}))


# How things read ----------------------------------------------------------------------


def household_label(unit: str | None, room: str) -> str:
    """A household as its building writes it: ``1-101``, or the room alone."""
    return f"{unit}-{room}" if unit else room


def item_text(item: CommunityItem) -> str:
    language = current_language()
    name = item.names.zh if language == "zh" else item.names.en
    return f"{name} ({item.dose})" if item.dose else name


def unit_text(item: CommunityItem) -> str:
    return item.unit.zh if current_language() == "zh" else item.unit.en


def ordered_text(item: CommunityItem, count: int) -> str:
    """``count`` of ``item`` in the unit it is ordered in ("4 斤", "2 boxes")."""
    return gettext("%(count)s %(unit)s", count=f"{count:,}", unit=unit_text(item))


def bring_lines(items: dict[str, int]) -> list[tuple[str, str]]:
    """What a delivery brings, each item by name with its amount as it was ordered and,
    where that differs, as people weigh it ("Vegetables", "4 jin (2 kg)")."""
    lines = []
    for relief, amount in sorted(items.items()):
        item = _BY_RELIEF.get(relief)
        if item is None:
            lines.append((item_name(relief), quantity_text(amount, base_unit(relief))))
            continue
        steps, rest = divmod(int(amount), item.base_per_unit)
        weighed = quantity_text(amount, base_unit(relief))
        ordered = ordered_text(item, steps)
        if rest or item.base_per_unit == 1 or ordered == weighed:
            lines.append((item_text(item), weighed if rest else ordered))
        else:
            lines.append((item_text(item), f"{ordered} ({weighed})"))
    return lines


# The community service's messages, by pattern, and the msgid each becomes.
_MESSAGES: list[tuple[re.Pattern[str], str, tuple[str, ...]]] = [
    (
        re.compile(r"^(\w+): (\d+) is more than the (\d+) a household may order\.$"),
        N_("%(quantity)s is more than the %(limit)s a household may order."),
        ("item", "quantity", "limit"),
    ),
    (
        re.compile(r"^'(.*)' is not an item to order\.$"),
        N_("%(name)s is not an item to order."),
        ("name",),
    ),
    (
        re.compile(r"^No household '(.*)' in this building\.$"),
        N_("No household %(name)s in this building."),
        ("name",),
    ),
    (
        re.compile(r"^'(.*)' is not a whole number \(column (\d+)\)\.$"),
        N_("%(value)s is not a whole number (column %(column)s)."),
        ("value", "column"),
    ),
    (
        re.compile(r"^This delivery is already (\w+)\.$"),
        N_("This delivery is already marked %(outcome)s."),
        ("outcome",),
    ),
    (
        re.compile(r"^At most (\d+) households at once\.$"),
        N_("At most %(max)s households at once."),
        ("max",),
    ),
]
# The committee's pages meet these (services/gateway/web/community_manage.py).
_MESSAGES += [
    (
        re.compile(r"^The community already has a building called '(.*)'\.$"),
        N_("The community already has a building called %(name)s."),
        ("name",),
    ),
    (
        re.compile(r"^Name the building of this \w+\.$"),
        N_("Choose the building for this role."),
        (),
    ),
    (
        re.compile(r"^An? \w+ is appointed for a building\.$"),
        N_("This role is held for a building."),
        (),
    ),
    (
        re.compile(r"^An? \w+ is not appointed for a building\.$"),
        N_("This role is not held for a building: leave the building out."),
        (),
    ),
    (
        re.compile(r"^No building \S+ in this community\.$"),
        N_("No such building in this community."),
        (),
    ),
    (re.compile(r"^No household \S+\.$"), N_("No such household in this community."), ()),
    (re.compile(r"^No appointment \S+\.$"), N_("No such appointment."), ()),
    (re.compile(r"^No order round \S+\.$"), N_("No such order round."), ()),
    (
        re.compile(r"^Nothing of '(.*)' in stock to distribute\.$"),
        N_("Nothing of %(item)s is in stock to split."),
        ("relief",),
    ),
    (re.compile(r"^'(.*)' is not in stock\.$"), N_("%(item)s is not in stock."), ("relief",)),
    (re.compile(r"^Only (\d+) of (\S+) is in stock\.$"), N_("Not that much is in stock."), ()),
    (re.compile(r"^At most (\d+)\.$"), N_("At most %(max)s."), ("max",)),
    (
        re.compile(r"^No social worker has (\S+) hours a day to spare for another (\w+) case.*$"),
        N_(
            "No social worker has %(hours)s hours a day to spare for another %(urgency)s case: "
            "choose one by name, or raise someone's hours."
        ),
        ("hours", "urgency"),
    ),
    (
        re.compile(r"^\S+ is not a social worker of this community\.$"),
        N_("Not a social worker of this community."),
        (),
    ),
    (
        re.compile(r"^This case is (\w+), not closed\.$"),
        N_("This case is not closed."),
        (),
    ),
    (
        re.compile(
            r"^(Assigning a case|Writing a follow-up|Closing a case|Reopening a case) is for .*$"
        ),
        N_("This is for the case's social worker and the case supervisors."),
        (),
    ),
    (
        re.compile(r"^No social worker \S+ in this community\.$"),
        N_("No such social worker in this community."),
        (),
    ),
]
TOTALS_REFUSED = N_("A round's totals are for the committee and the building leaders.")
CASES_REFUSED = N_("Cases are for the community's committee, social workers and case supervisors.")
KNOWN_MESSAGES = (
    lazy_gettext("Some rows cannot be taken; nothing was saved."),
    lazy_gettext("This household is in the batch twice."),
    lazy_gettext("No such household in this building."),
    lazy_gettext("Paste a header row of items, then one row a household."),
    lazy_gettext("Name the household first (e.g. 1-101)."),
    lazy_gettext("This round is confirmed; orders are closed."),
    lazy_gettext("This round is already confirmed."),
    lazy_gettext("Nothing was ordered in this round."),
    lazy_gettext("Nothing to confirm."),
    lazy_gettext("Only the community's committee may do this."),
    lazy_gettext("Orders are entered by the committee and the building's leader."),
    lazy_gettext("Another building's orders are its leader's."),
    lazy_gettext("Another building's deliveries are its own."),
    lazy_gettext("This community's data belongs to another organisation."),
    lazy_gettext("No such order round."),
)


def message(text: str) -> tuple[str | None, str]:
    """A community message in the page's language, with the item it names if any."""
    for pattern, msgid, names in _MESSAGES:
        found = pattern.match(text)
        if found:
            values = dict(zip(names, found.groups(), strict=False))
            item = values.pop("item", None)
            if "relief" in values:
                relief = values.pop("relief")
                known = _BY_RELIEF.get(relief)
                values["item"] = item_text(known) if known is not None else item_name(relief)
            if "urgency" in values:
                values["urgency"] = str(CASE_URGENCIES.get(values["urgency"], values["urgency"]))
            if "outcome" in values:
                values["outcome"] = str(OUTCOME_WORDS.get(values["outcome"], values["outcome"]))
            return item, gettext(msgid, **values)
    return None, api_message(text)


def _where(key: str) -> str:
    """``row 3`` or ``row 1, column 2`` of a pasted table in the page's language."""
    found = re.match(r"^row (\d+)(?:, column (\d+))?$", key)
    if not found:
        return key
    if found.group(2):
        return gettext("Row %(row)s, column %(column)s", row=found.group(1), column=found.group(2))
    return gettext("Row %(row)s", row=found.group(1))


@dataclass
class SheetErrors:
    """A batch's problems placed on the sheet: by input, and as the summary's lines
    (each naming the household and the item), with the anchor each links to."""

    cells: dict[str, list[str]] = field(default_factory=dict)
    summary: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, text: str, said: str, anchor: str | None = None) -> None:
        """``text`` at the input ``name``; ``said`` (naming where) in the summary."""
        self.cells.setdefault(name, []).append(text)
        self.summary.append((anchor or input_id(name), said))


def sheet_errors(errors: dict[str, list[str]], labels: list[str], *, pasted: bool) -> SheetErrors:
    """The API's errors for a batch of ``rows`` (one a household, in ``labels`` order)
    or of a ``pasted`` table, placed at the household and item they name."""
    placed = SheetErrors()
    row_of = {label: index for index, label in enumerate(labels)}
    for key, messages in errors.items():
        parts = key.split(".")
        for raw in messages:
            code, text = message(raw)
            if len(parts) >= 4 and parts[0] == "rows" and parts[1].isdigit():
                index, code = int(parts[1]), parts[3]
            elif key in row_of:
                index = row_of[key]
            elif (found := re.match(r"^row (\d+)$", key)) and not pasted:
                index = int(found.group(1)) - 1
            else:
                place = _where(key) if key != "text" else ""
                said = f"{place}: {text}" if place else text
                placed.add("text", said, said)
                continue
            label = labels[index] if 0 <= index < len(labels) else key
            item = community_item(code) if code else None
            if item is not None:
                name = f"rows.{index}.items.{item.code}"
                placed.add(name, text, f"{label} · {item_text(item)}: {text}")
            else:
                placed.add(
                    f"rows.{index}",
                    text,
                    f"{label}: {text}",
                    anchor=input_id(f"rows.{index}.household"),
                )
    return placed


# Pages ---------------------------------------------------------------------------------


@bp.get("/community")
def community() -> Any:
    """What the signed-in user does in the community: enter a building's orders, see a
    round's totals and confirm them, carry a building's deliveries."""
    place = _place()
    rounds = api.get(f"/community/{place.org_id}/rounds")
    if not rounds.ok:
        return problem_page(rounds)
    ordering = [b for b in place.buildings if place.keeps(b)]
    delivering = [
        b for b in place.buildings if place.committee or b in place.leads or b in place.delivers
    ]
    return render_template(
        "community/home.html",
        place=place,
        rounds=rounds.body["items"],
        ordering=sorted(ordering, key=place.building_name),
        delivering=sorted(delivering, key=place.building_name),
        round_word=lambda status: str(ROUND_WORDS.get(status, status)),
        role_word=lambda role: str(ROLE_WORDS.get(role, role)),
        local_time=local_time,
    )


def _sheet(place: Place, round_id: uuid.UUID, building_id: uuid.UUID) -> list[dict[str, Any]]:
    answer = api.get(
        f"/community/{place.org_id}/rounds/{round_id}/orders",
        query={"building_id": str(building_id)},
    )
    if not answer.ok:
        _refuse(answer)
    return list(answer.body["items"])


def _order_page(
    place: Place,
    order_round: dict[str, Any],
    building_id: uuid.UUID,
    sheet: list[dict[str, Any]],
    form: FormState,
    errors: SheetErrors,
    status: int = 200,
) -> Any:
    return render_template(
        "community/orders.html",
        place=place,
        order_round=order_round,
        building_id=str(building_id),
        building=place.building_name(str(building_id)),
        sheet=sheet,
        labels=[household_label(h["unit"], h["room"]) for h in sheet],
        items=COMMUNITY_ITEMS,
        item_text=item_text,
        unit_text=unit_text,
        form=form,
        errors=errors,
        round_word=lambda s: str(ROUND_WORDS.get(s, s)),
        example=_paste_example(sheet),
        paste_key=str(uuid.uuid4()),
    ), status


def _paste_example(sheet: list[dict[str, Any]]) -> str:
    """A table as a leader would paste it: a header of items, a row a household."""
    shown = COMMUNITY_ITEMS[:3]
    language = current_language()
    header = [
        gettext("Household"),
        *(i.names.zh if language == "zh" else i.names.en for i in shown),
    ]
    rows = [
        [household_label(h["unit"], h["room"]), *(str(n) for n in (4, 2, 1)[: len(shown)])]
        for h in sheet[:2]
    ]
    return "\n".join("\t".join(cells) for cells in [header, *rows])


def _typed(value: str) -> Any:
    """A whole number as a number; anything else as typed, for the API to name."""
    try:
        return int(value)
    except ValueError:
        return value


@bp.route("/community/rounds/<uuid:round_id>/orders/<uuid:building_id>", methods=["GET", "POST"])
def community_orders(round_id: uuid.UUID, building_id: uuid.UUID) -> Any:
    """A building's orders for a round: a row a household, a column an item; typed
    (tab from cell to cell, Enter saves) or pasted as a table. All rows or none."""
    place = _place()
    order_round = _round(place, round_id)
    sheet = _sheet(place, round_id, building_id)
    labels = [household_label(h["unit"], h["room"]) for h in sheet]
    if request.method == "GET":
        values = {
            f"rows.{index}.items.{code}": quantity
            for index, household in enumerate(sheet)
            for code, quantity in household["items"].items()
        }
        return _order_page(place, order_round, building_id, sheet, FormState(values), SheetErrors())
    values = {k: v.strip() for k, v in request.form.items() if k not in ("csrf_token",)}
    body: dict[str, Any] = {"building_id": str(building_id)}
    text = request.form.get("text")
    if text is not None:
        body["text"] = text
    else:
        body["rows"] = [
            {
                "household_id": household["household_id"],
                "items": {
                    item.code: _typed(typed)
                    for item in COMMUNITY_ITEMS
                    if (typed := values.get(f"rows.{index}.items.{item.code}", ""))
                },
            }
            for index, household in enumerate(sheet)
        ]
    answer = api.post(
        f"/community/{place.org_id}/rounds/{round_id}/orders",
        json=body,
        idempotency_key=request.form.get("idempotency_key") or None,
    )
    if answer.status in (403, 404) or answer.status >= 500:
        return problem_page(answer)
    if not answer.ok:
        errors = sheet_errors(answer.errors, labels, pasted=text is not None)
        detail = message(answer.detail)[1] if answer.detail else None
        if text is not None:
            # The sheet as saved, the pasted table as it was sent, to be corrected.
            values = {
                f"rows.{index}.items.{code}": quantity
                for index, household in enumerate(sheet)
                for code, quantity in household["items"].items()
            }
            values["text"] = text
        form = FormState(values, errors.cells, detail)
        return _order_page(place, order_round, building_id, sheet, form, errors, answer.status)
    flash(gettext("Orders saved for %(n)s household(s).", n=answer.body["households"]), "success")
    return redirect(url_for("web.community_orders", round_id=round_id, building_id=building_id))


@bp.route("/community/rounds/<uuid:round_id>/totals", methods=["GET", "POST"])
def community_totals(round_id: uuid.UUID) -> Any:
    """A round's totals per building and for the community; the committee edits the
    community's figures and confirms them, and what relief supplies carry becomes its
    need."""
    place = _place()
    if not (place.committee or place.leads):
        _refuse(ApiResponse(403, {"detail": TOTALS_REFUSED}))
    order_round = _round(place, round_id)
    totals = api.get(f"/community/{place.org_id}/rounds/{round_id}/totals")
    if not totals.ok:
        return problem_page(totals)
    figures = totals.body
    if request.method == "GET":
        values = {f"quantities.{code}": n for code, n in figures["community"].items()}
        return _totals_page(place, order_round, figures, FormState(values))
    values = {
        f"quantities.{item.code}": request.form.get(f"quantities.{item.code}", "").strip()
        for item in COMMUNITY_ITEMS
    }
    quantities = {
        item.code: _typed(values[f"quantities.{item.code}"] or "0") for item in COMMUNITY_ITEMS
    }
    answer = api.post(
        f"/community/{place.org_id}/rounds/{round_id}/confirm",
        json={"quantities": quantities},
        idempotency_key=request.form.get("idempotency_key") or None,
    )
    if answer.status in (403, 404) or answer.status >= 500:
        return problem_page(answer)
    if not answer.ok:
        errors: dict[str, list[str]] = {}
        for key, messages in answer.errors.items():
            parts = key.split(".")
            name = ".".join(parts[:2]) if len(parts) >= 2 else key
            errors.setdefault(name, []).extend(message(m)[1] for m in messages)
        detail = message(answer.detail)[1] if answer.detail else None
        form = FormState(values, errors, detail)
        return _totals_page(place, order_round, figures, form, answer.status)
    asked = [i for i in COMMUNITY_ITEMS if i.donated and answer.body["requested"].get(i.code)]
    flash(
        gettext(
            "The round is confirmed. %(n)s item(s) go to matching as the community's need.",
            n=len(asked),
        ),
        "success",
    )
    return redirect(url_for("web.community_totals", round_id=round_id))


def _totals_page(
    place: Place,
    order_round: dict[str, Any],
    figures: dict[str, Any],
    form: FormState,
    status: int = 200,
) -> Any:
    shown = [
        item
        for item in COMMUNITY_ITEMS
        if figures["community"].get(item.code) or (figures.get("requested") or {}).get(item.code)
    ]
    return render_template(
        "community/totals.html",
        place=place,
        order_round=order_round,
        figures=figures,
        shown=shown,
        items=COMMUNITY_ITEMS,
        item_text=item_text,
        unit_text=unit_text,
        ordered_text=ordered_text,
        item_of=community_item,
        form=form,
        round_word=lambda s: str(ROUND_WORDS.get(s, s)),
        local_time=local_time,
    ), status


@bp.get("/community/deliveries")
def community_deliveries() -> Any:
    """The delivery lists the user carries, a building at a time: each household's door,
    what to bring and the note, and a button for each way it can go at the door."""
    place = _place()
    query: dict[str, Any] = {}
    chosen = request.args.get("building") or ""
    if chosen:
        query["building_id"] = chosen
    answer = api.get(f"/community/{place.org_id}/deliveries", query=query)
    if not answer.ok:
        return problem_page(answer)
    by_building: dict[str, list[dict[str, Any]]] = {}
    for delivery in answer.body["items"]:
        by_building.setdefault(str(delivery["building_id"]), []).append(delivery)
    order = sorted(by_building, key=place.building_name)
    return render_template(
        "community/deliveries.html",
        place=place,
        chosen=chosen,
        buildings=[(b, _pending_first(by_building[b])) for b in order],
        household_label=household_label,
        bring_lines=bring_lines,
        outcome_word=lambda s: str(OUTCOME_WORDS.get(s, s)),
        outcome_buttons=OUTCOME_BUTTONS,
        local_time=local_time,
        new_key=lambda: str(uuid.uuid4()),
    )


def _pending_first(deliveries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(deliveries, key=lambda d: d["status"] != "pending")


@bp.post("/community/deliveries/<uuid:delivery_id>/outcome")
def community_delivery_outcome(delivery_id: uuid.UUID) -> Any:
    """How it went at one door; back to the list, at the next door."""
    place = _place()
    status = request.form.get("status", "")
    note = request.form.get("note", "").strip()
    answer = api.post(
        f"/community/{place.org_id}/deliveries/{delivery_id}/outcome",
        json={"status": status, "note": note or None},
        idempotency_key=request.form.get("idempotency_key") or None,
    )
    back = url_for("web.community_deliveries", building=request.form.get("building") or None)
    if answer.status == 404 or answer.status == 403 or answer.status >= 500:
        return problem_page(answer)
    if not answer.ok:
        problems = [m for messages in answer.errors.values() for m in messages]
        flash(" ".join(message(m)[1] for m in problems) or message(answer.detail)[1], "error")
        return redirect(back)
    done = answer.body
    flash(
        gettext(
            "%(household)s: %(outcome)s.",
            household=household_label(done["unit"], done["room"]),
            outcome=OUTCOME_WORDS[done["status"]],
        ),
        "success",
    )
    return redirect(back)


# Cases ----------------------------------------------------------------------------------

CASE_KINDS = {
    "counselling": lazy_gettext("counselling"),
    "clinic_access": lazy_gettext("help to reach a clinic"),
    "medicine_pickup": lazy_gettext("medicine pickup"),
    "child_care": lazy_gettext("child care"),
    "other": lazy_gettext("other request"),
}
CASE_URGENCIES = {
    "urgent": lazy_gettext("urgent"),
    "soon": lazy_gettext("soon"),
    "routine": lazy_gettext("routine"),
}
CASE_STATUSES = {
    "open": lazy_gettext("waiting for a social worker"),
    "assigned": lazy_gettext("assigned"),
    "in_progress": lazy_gettext("in progress"),
    "closed": lazy_gettext("closed"),
}
CASE_ROLES = ("social_worker", "case_supervisor")
# Case forms: a follow-up's note, a closing note.
CASE_INPUTS = {"follow-up": "note", "close": "closing_note"}


def _cases_page(place: Place, form: FormState, status: int = 200) -> Any:
    answer = api.get(f"/community/{place.org_id}/cases", query={"limit": 100})
    if not answer.ok:
        return problem_page(answer)
    assigns = place.committee or "case_supervisor" in place.roles
    workers: list[dict[str, Any]] = []
    if assigns:
        found = api.get(f"/community/{place.org_id}/case-workers")
        workers = list(found.body["items"]) if found.ok else []
    order = list(CASE_URGENCIES)
    cases = sorted(
        answer.body["items"],
        key=lambda c: (c["status"] == "closed", order.index(c["urgency"]), c["created_at"]),
    )
    return render_template(
        "community/cases.html",
        place=place,
        cases=cases,
        form=form,
        assigns=assigns,
        reopens="case_supervisor" in place.roles,
        workers=workers,
        worker_names={w["user_id"]: w["name"] for w in workers},
        kind_word=lambda k: str(CASE_KINDS.get(k, k)),
        urgency_word=lambda u: str(CASE_URGENCIES.get(u, u)),
        status_word=lambda s: str(CASE_STATUSES.get(s, s)),
        local_time=local_time,
    ), status


def _case_place() -> Place:
    place = _place()
    if not (place.committee or any(role in place.roles for role in CASE_ROLES)):
        _refuse(ApiResponse(403, {"detail": CASES_REFUSED}))
    return place


@bp.get("/community/cases")
def community_cases() -> Any:
    """The social worker's cases (every case for a case supervisor): the most urgent
    first, each with what the resident needs; a follow-up or the closing note on each
    open case the reader works on."""
    return _cases_page(_case_place(), FormState())


def field_texts(answer: ApiResponse) -> list[str]:
    """An answer's messages, translated, for the one field a form posted."""
    return [message(m)[1] for ms in answer.errors.values() for m in ms] or [
        message(answer.detail)[1]
    ]


def act_on_case(
    place: Place,
    case_id: uuid.UUID,
    action: str,
    body: dict[str, Any],
    field: str,
    done: Callable[[dict[str, Any]], str],
) -> Any:
    """Post ``action`` on a case with ``body`` (the form's ``field`` holding what was
    typed); back to the case on the list with ``done(answer)`` flashed, or the list
    again with the refusal at that field."""
    answer = api.post(
        f"/community/{place.org_id}/cases/{case_id}/{action}",
        json=body,
        idempotency_key=request.form.get("idempotency_key") or None,
    )
    if answer.status in (403, 404) or answer.status >= 500:
        return problem_page(answer)
    name = f"cases.{case_id}.{field}"
    if not answer.ok:
        form = FormState({name: request.form.get(field, "").strip()}, {name: field_texts(answer)})
        return _cases_page(place, form, answer.status)
    flash(done(answer.body), "success")
    return redirect(url_for("web.community_cases") + f"#case-{case_id}")


@bp.post("/community/cases/<uuid:case_id>/<any('follow-up', 'close'):action>")
def community_case_action(case_id: uuid.UUID, action: str) -> Any:
    """A follow-up on a case, or its closing note."""
    field_name = CASE_INPUTS[action]
    return act_on_case(
        _case_place(),
        case_id,
        "follow-ups" if action == "follow-up" else "close",
        {field_name: request.form.get(field_name, "").strip()},
        field_name,
        lambda _: (
            gettext("The follow-up is recorded.")
            if action == "follow-up"
            else gettext("The case is closed.")
        ),
    )
