"""An organisation's named places: its warehouses, loading bays and collection points,
listed and added from the UI, and offered in the pledge and need forms."""

from __future__ import annotations

from typing import Any

from flask import flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext

from services.gateway.web import api
from services.gateway.web.base import bp, problem_page, require_me
from services.gateway.web.forms import FormState, nest, with_region_codes
from services.gateway.web.i18n import current_language, word
from shared.catalog import regions
from shared.events.supply import PLACE_KINDS

PLACE_INPUTS = (
    "name",
    "kind",
    "address",
    "region",
    "lat",
    "lon",
    "contact.name",
    "contact.phone",
    "opening_hours",
    "access_notes",
)


def own_places() -> list[dict[str, Any]]:
    """The signed-in organisation's places (none when it cannot be read)."""
    found = require_me()
    answer = api.get(f"/orgs/{found['organisation']['id']}/places")
    return list(answer.body["items"]) if answer.ok else []


def place_options() -> list[tuple[str, str]]:
    """The organisation's places for a form's select: (id, "name · address")."""
    return [(str(p["id"]), f"{p['name']} · {p['address']}") for p in own_places()]


@bp.app_context_processor
def _place_options() -> dict[str, Any]:
    return {"place_options": place_options}


def only_the_place(body: dict[str, Any], key: str) -> dict[str, Any]:
    """A form that chose one of the organisation's places sends the place alone: the
    address inputs beside it are for another address."""
    where = body.get(key)
    if isinstance(where, dict) and where.get("place_id"):
        body[key] = {"place_id": where["place_id"]}
    return body


def _page(form: FormState, status: int = 200) -> Any:
    return render_template(
        "places/list.html",
        places=own_places(),
        form=form,
        kinds=[(k, word(f"place_{k}")) for k in PLACE_KINDS],
    ), status


@bp.get("/regions")
def region_suggestions() -> Any:
    """Regions whose name or code holds ``q``, for a region input's suggestions:
    ``[{"code", "name"}]`` in the page's language (public reference data)."""
    text = (request.args.get("q") or "").strip()[:40]
    found = regions.search(text, current_language(), limit=15) if text else []
    return jsonify([{"code": code, "name": name} for code, name in found])


@bp.route("/places", methods=["GET", "POST"])
def places() -> Any:
    found = require_me()
    if request.method == "GET":
        return _page(FormState({"kind": "warehouse"}))
    values = {k: v.strip() for k, v in request.form.items() if k in PLACE_INPUTS and v.strip()}
    body = with_region_codes(nest(list(values.items())), current_language())
    answer = api.post(
        f"/orgs/{found['organisation']['id']}/places",
        json=body,
        idempotency_key=request.form.get("idempotency_key") or None,
    )
    if answer.status in (403, 404) or answer.status >= 500:
        return problem_page(answer)
    if not answer.ok:
        return _page(FormState.from_problem(values, answer), answer.status)
    flash(gettext("The place %(name)s is saved.", name=answer.body["name"]), "success")
    return redirect(url_for("web.places"))
