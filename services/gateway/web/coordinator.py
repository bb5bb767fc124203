"""Coordinators' pages: the verification queue (with each registration's duplicate
candidates side by side) and the matching preview with its approval."""

from __future__ import annotations

import uuid
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext

from services.gateway.web import api
from services.gateway.web.api import ApiResponse
from services.gateway.web.base import bp, is_coordinator, problem_page, require_me
from services.gateway.web.forms import FormState
from services.gateway.web.i18n import CATALOG

QUEUE_SIZE = 50


@bp.before_request
def _coordinators_only() -> Any:
    """Coordinator pages say so plainly to others; the API refuses them anyway."""
    if (
        request.endpoint
        and request.endpoint.startswith("web.")
        and request.path.startswith("/coordinator/")
    ):
        require_me()
        if not is_coordinator():
            return problem_page(ApiResponse(403, {"detail": "Only coordinators may do this."}))
    return None


def _queue(forms: dict[str, FormState] | None = None, status: int = 200) -> Any:
    answer = api.get("/orgs", query={"status": "pending", "limit": QUEUE_SIZE})
    if not answer.ok:
        return problem_page(answer)
    entries = []
    for org in answer.body["items"]:
        flags = api.get(f"/orgs/{org['id']}/duplicates", query={"status": "open"})
        entries.append(
            {
                "org": org,
                "flags": flags.body["items"] if flags.ok else [],
                "form": (forms or {}).get(org["id"]) or FormState(),
            }
        )
    return render_template("coordinator/verification.html", entries=entries), status


@bp.get("/coordinator/verification")
def verification_queue() -> Any:
    require_me()
    return _queue()


def _decide(org_id: uuid.UUID, action: str, field: str, done: str) -> Any:
    require_me()
    value = request.form.get(field, "").strip()
    answer = api.post(
        f"/orgs/{org_id}/{action}",
        json={field: value},
        idempotency_key=request.form.get("idempotency_key") or None,
    )
    if answer.status in (403, 404) or answer.status >= 500:
        return problem_page(answer)
    if not answer.ok:
        form = FormState.from_problem({field: value}, answer)
        return _queue({str(org_id): form}, answer.status)
    flash(done % {"name": answer.body.get("name", "")}, "success")
    return redirect(url_for("web.verification_queue"))


@bp.post("/coordinator/orgs/<uuid:org_id>/verify")
def verify_org(org_id: uuid.UUID) -> Any:
    return _decide(org_id, "verify", "evidence", gettext("%(name)s is verified."))


@bp.post("/coordinator/orgs/<uuid:org_id>/suspend")
def suspend_org(org_id: uuid.UUID) -> Any:
    return _decide(org_id, "suspend", "reason", gettext("%(name)s is suspended."))


# The matching page's runs: the latest twenty.
LATEST_RUNS = {"newest_first": "true", "limit": 20}


@bp.get("/coordinator/matching")
def matching() -> Any:
    require_me()
    answer = api.get("/matching/runs", query={"status": "preview", **LATEST_RUNS})
    if not answer.ok:
        return problem_page(answer)
    # What a coordinator can act on first; the latest runs that are done below, as history.
    recent = api.get("/matching/runs", query=LATEST_RUNS)
    history = [r for r in recent.body["items"] if r["status"] != "preview"] if recent.ok else []
    return render_template(
        "coordinator/matching.html",
        runs=answer.body["items"],
        history=history,
        items=list(CATALOG),
        form=FormState(),
    )


@bp.post("/coordinator/matching")
def run_matching() -> Any:
    require_me()
    chosen = [code for code in request.form.getlist("items") if code]
    answer = api.post(
        "/matching/runs",
        json={"dry_run": True, "items": chosen or None},
        idempotency_key=request.form.get("idempotency_key") or None,
    )
    if answer.status in (403, 404) or answer.status >= 500:
        return problem_page(answer)
    if not answer.ok:
        runs = api.get("/matching/runs", query={"status": "preview", **LATEST_RUNS})
        return render_template(
            "coordinator/matching.html",
            runs=runs.body["items"] if runs.ok else [],
            items=list(CATALOG),
            form=FormState.from_problem({}, answer),
        ), answer.status
    return redirect(url_for("web.matching_run", run_id=answer.body["id"]))


# Need lines asked for at once by the matching run's page (the needs list takes 50: a
# request line of 50 ids stays under the back ends' gunicorn limit of 4 KB).
LINES_PER_ASK = 50


def _need_lines(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The lines the run's allocations and unmet needs name, with their needs, by id,
    so the plan can say where each allocation goes (asked for by id, 50 at a
    time: not the oldest needs, which a run of this week does not name)."""
    wanted = sorted(
        {str(a["need_line_id"]) for a in run.get("allocations") or []}
        | {str(u["need_line_id"]) for u in run.get("unmet") or []}
    )
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(wanted), LINES_PER_ASK):
        query = {"line_id": wanted[start : start + LINES_PER_ASK], "limit": LINES_PER_ASK}
        answer = api.get("/needs", query=query)
        if not answer.ok:
            break
        for need in answer.body["items"]:
            for line in need["lines"]:
                found[str(line["id"])] = {"need": need, "line": line}
    return found


@bp.get("/coordinator/matching/<uuid:run_id>")
def matching_run(run_id: uuid.UUID) -> Any:
    require_me()
    answer = api.get(f"/matching/runs/{run_id}")
    if not answer.ok:
        return problem_page(answer)
    return render_template(
        "coordinator/matching_run.html",
        run=answer.body,
        need_lines=_need_lines(answer.body),
        base_units={code: item["base_unit"] for code, item in CATALOG.items()},
        form=FormState(),
    )


@bp.post("/coordinator/matching/<uuid:run_id>/approve")
def approve_matching(run_id: uuid.UUID) -> Any:
    require_me()
    answer = api.post(
        f"/matching/runs/{run_id}/approve",
        idempotency_key=request.form.get("idempotency_key") or None,
    )
    if answer.status in (403, 404) or answer.status >= 500:
        return problem_page(answer)
    if not answer.ok:
        flash(FormState.from_problem({}, answer).detail or gettext("Not approved."), "error")
        return redirect(url_for("web.matching_run", run_id=run_id))
    flash(gettext("The plan is approved: its allocations go to the donors' pledges."), "success")
    return redirect(url_for("web.matching_run", run_id=run_id))


@bp.post("/coordinator/matching/<uuid:run_id>/edit")
def edit_matching(run_id: uuid.UUID) -> Any:
    """One change to a preview: an allocation's new quantity (0 removes it), or a new
    allocation by hand."""
    require_me()
    quantity = request.form.get("quantity", "").strip()
    change = {
        "pledge_line_id": request.form.get("pledge_line_id", "").strip(),
        "need_line_id": request.form.get("need_line_id", "").strip(),
        "quantity": int(quantity) if quantity.isdigit() else quantity,
    }
    answer = api.post(
        f"/matching/runs/{run_id}/edits",
        json={"changes": [change]},
        idempotency_key=request.form.get("idempotency_key") or None,
    )
    if answer.status in (403, 404) or answer.status >= 500:
        return problem_page(answer)
    if not answer.ok:
        state = FormState.from_problem({}, answer)
        said = [m for messages in (answer.errors or {}).values() for m in messages]
        flash(" ".join([state.detail or gettext("Not changed."), *said]), "error")
        return redirect(url_for("web.matching_run", run_id=run_id))
    flash(gettext("The plan is changed."), "success")
    return redirect(url_for("web.matching_run", run_id=run_id))
