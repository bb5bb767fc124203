"""Donors' pages: a new pledge, a spreadsheet upload with its live progress, and
the pledges with their status."""

from __future__ import annotations

import uuid
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext

from services.gateway.web import api
from services.gateway.web.base import bp, list_page, problem_page, require_me
from services.gateway.web.forms import (
    FormState,
    nest,
    region_code,
    renumber,
    rows,
    with_region_codes,
)
from services.gateway.web.i18n import current_language, line_options
from services.gateway.web.places import only_the_place

PLEDGE_LINE_INPUTS = (
    "item",
    "standard",
    "quantity",
    "unit",
    "pack_size",
    "bottle_volume_ml",
    "density_g_per_l",
    "best_before",
)
PLEDGE_INPUTS = ("origin.place_id", "origin.region", "origin.address", "available_from", "notes")
IMPORT_FINAL = frozenset({"succeeded", "failed"})
MAX_FORM_LINES = 200


def line_form(
    pairs: list[tuple[str, str]], inputs: tuple[str, ...], top: tuple[str, ...]
) -> tuple[list[tuple[str, str]], dict[str, Any], list[dict[str, Any]]]:
    """The page's own inputs, rows renumbered, with the row actions applied: "add a
    line" and "remove line N" work without JavaScript by sending the form back."""
    kept = [
        (k, v)
        for k, v in pairs
        if k in top
        or (k.startswith("lines.") and k.count(".") == 2 and k.rsplit(".", 1)[1] in inputs)
    ]
    removed = request.form.get("remove_line")
    if removed is not None and removed.isdigit():
        kept = [(k, v) for k, v in kept if not k.startswith(f"lines.{removed}.")]
    kept = renumber(kept, "lines")
    values = dict(kept)
    lines = rows(values, "lines")
    if request.form.get("add_line") is not None and len(lines) < MAX_FORM_LINES:
        lines.append({})
    return kept, values, lines


@bp.route("/pledges/new", methods=["GET", "POST"])
def new_pledge() -> Any:
    require_me()
    if request.method == "GET":
        return render_template("pledges/new.html", form=FormState(), lines=[{}], **line_options())
    pairs = list(request.form.items(multi=True))
    kept, values, lines = line_form(pairs, PLEDGE_LINE_INPUTS, PLEDGE_INPUTS)
    if request.form.get("add_line") is not None or request.form.get("remove_line") is not None:
        form = FormState(values)
        return render_template("pledges/new.html", form=form, lines=lines or [{}], **line_options())
    body = with_region_codes(only_the_place(nest(kept), "origin"), current_language())
    body.setdefault("lines", [])
    answer = api.post(
        "/pledges", json=body, idempotency_key=request.form.get("idempotency_key") or None
    )
    if answer.status in (403, 404) or answer.status >= 500:
        return problem_page(answer)
    if not answer.ok:
        return render_template(
            "pledges/new.html",
            form=FormState.from_problem(values, answer),
            lines=lines or [{}],
            **line_options(),
        ), answer.status
    flash(gettext("Your pledge is recorded."), "success")
    return redirect(url_for("web.pledges", created=answer.body.get("id")))


@bp.get("/pledges")
def pledges() -> Any:
    return list_page("/pledges", "pledges/list.html", "pledges")


IMPORT_INPUTS = ("mode", "language", "origin_region", "origin_address")


@bp.route("/pledges/import", methods=["GET", "POST"])
def import_pledges() -> Any:
    require_me()
    if request.method == "GET":
        return render_template("pledges/import.html", form=FormState())
    values = {k: v.strip() for k, v in request.form.items() if k in IMPORT_INPUTS and v.strip()}
    upload = request.files.get("file")
    data: dict[str, Any] = dict(values)
    if data.get("origin_region"):
        data["origin_region"] = region_code(data["origin_region"], current_language())
    if upload is not None and upload.filename:
        data["file"] = (upload.stream, upload.filename, upload.mimetype)
    answer = api.post(
        "/pledges/imports",
        data=data,
        idempotency_key=request.form.get("idempotency_key") or None,
    )
    if answer.status == 409 and isinstance(answer.body, dict) and answer.body.get("job_id"):
        flash(gettext("This file was uploaded before; here is its import."), "info")
        return redirect(url_for("web.import_job", job_id=answer.body["job_id"]))
    if answer.status in (403, 404) or answer.status >= 500:
        return problem_page(answer)
    if not answer.ok:
        return render_template(
            "pledges/import.html", form=FormState.from_problem(values, answer)
        ), answer.status
    return redirect(url_for("web.import_job", job_id=answer.body["id"]))


def _job(job_id: uuid.UUID) -> Any:
    answer = api.get(f"/pledges/imports/{job_id}")
    if not answer.ok:
        return None, answer
    return answer.body, answer


@bp.get("/pledges/imports/<uuid:job_id>")
def import_job(job_id: uuid.UUID) -> Any:
    require_me()
    job, answer = _job(job_id)
    if job is None:
        return problem_page(answer)
    return render_template("pledges/import_job.html", job=job, final=job["status"] in IMPORT_FINAL)


@bp.get("/pledges/imports/<uuid:job_id>/progress")
def import_progress(job_id: uuid.UUID) -> Any:
    """The progress fragment htmx polls; once the job is final it stops asking."""
    job, answer = _job(job_id)
    if job is None:
        abort(answer.status if 400 <= answer.status < 600 else 502)
    return render_template(
        "pledges/_import_progress.html", job=job, final=job["status"] in IMPORT_FINAL
    )
