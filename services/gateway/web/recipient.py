"""Recipients' pages: a new need, the needs with their status, and reconfirming one
so it stays in matching."""

from __future__ import annotations

import uuid
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext

from services.gateway.web import api
from services.gateway.web.base import bp, list_page, problem_page, require_me
from services.gateway.web.donor import line_form
from services.gateway.web.forms import FormState, nest, with_region_codes
from services.gateway.web.i18n import current_language, line_options
from services.gateway.web.places import only_the_place

NEED_LINE_INPUTS = (
    "item",
    "standards",
    "quantity",
    "unit",
    "pack_size",
    "bottle_volume_ml",
    "density_g_per_l",
    "urgency",
    "needed_by",
    "stock_on_hand",
    "daily_consumption",
)
NEED_INPUTS = (
    "location.place_id",
    "location.region",
    "location.address",
    "people_served",
    "beds",
    "notes",
)


def _render(form: FormState, lines: list[dict[str, Any]], status: int = 200) -> Any:
    return render_template(
        "needs/new.html", form=form, lines=lines or [{}], **line_options()
    ), status


@bp.route("/needs/new", methods=["GET", "POST"])
def new_need() -> Any:
    require_me()
    if request.method == "GET":
        return _render(FormState(), [{}])
    pairs = list(request.form.items(multi=True))
    kept, values, lines = line_form(pairs, NEED_LINE_INPUTS, NEED_INPUTS)
    if request.form.get("add_line") is not None or request.form.get("remove_line") is not None:
        return _render(FormState(values), lines)
    body = with_region_codes(
        only_the_place(nest(kept, lists=("lines.N.standards",)), "location"), current_language()
    )
    body.setdefault("lines", [])
    answer = api.post(
        "/needs", json=body, idempotency_key=request.form.get("idempotency_key") or None
    )
    if answer.status in (403, 404) or answer.status >= 500:
        return problem_page(answer)
    if not answer.ok:
        return _render(FormState.from_problem(values, answer), lines, answer.status)
    flash(gettext("Your need is posted."), "success")
    return redirect(url_for("web.needs", created=answer.body.get("id")))


@bp.get("/needs")
def needs() -> Any:
    return list_page("/needs", "needs/list.html", "needs")


@bp.post("/needs/<uuid:need_id>/reconfirm")
def reconfirm_need(need_id: uuid.UUID) -> Any:
    require_me()
    answer = api.post(f"/needs/{need_id}/reconfirm")
    if not answer.ok:
        return problem_page(answer)
    flash(gettext("The need is reconfirmed: it stays in matching."), "success")
    return redirect(url_for("web.needs"))
