"""Shipment pages: the board by status (the logistics company's shipments, a
recipient's incoming ones, a donor's outgoing ones, all of them for coordinators), a
shipment with its history and the forms its viewer may use (update the status, assign
the logistics company, confirm the receipt), a scanner's batch, and coordinators'
overdue list."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from flask import Response, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l

from services.gateway.web import api, documents
from services.gateway.web.api import ApiResponse
from services.gateway.web.base import bp, is_coordinator, problem_page, require_me
from services.gateway.web.forms import FormState
from services.gateway.web.i18n import api_message, field_errors, org_name, word
from services.gateway.web.times import LOCAL, clock_time, local_date, local_day, local_time
from shared.events.supply import SHIPMENT_FINAL_STATUSES, SHIPMENT_STATUSES

# The shipment statuses in lifecycle order, exceptions last: the board's columns.
STATUSES = SHIPMENT_STATUSES
# What logistics staff may set; ``planned`` comes from consolidation and ``received``
# from the recipient's receipt alone.
SETTABLE = tuple(s for s in STATUSES if s not in ("planned", "received"))
FINAL = SHIPMENT_FINAL_STATUSES
LIFECYCLE = STATUSES[: STATUSES.index("received") + 1]
BOARD_SIZE = 200

# Times are entered and shown in Beijing time unless the form says otherwise: the
# people using the UI are in China, and a scanner's clock is set to local time.
ZONES = (("+08:00", _l("Beijing time (UTC+8)")), ("Z", _l("UTC")))
UPDATE_INPUTS = ("status", "occurred_at", "zone", "location", "note")


def aware_time(value: str, zone: str) -> str:
    """A ``datetime-local`` input and the zone chosen, as the API's ISO 8601. Text that
    is not a local time goes through as typed, for the API to name the field."""
    zone = zone if zone in dict(ZONES) else "+08:00"
    try:
        datetime.strptime(value, "%Y-%m-%dT%H:%M")
        return f"{value}:00{zone}"
    except ValueError:
        pass
    try:
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%S")
        return f"{value}{zone}"
    except ValueError:
        return value


def now_local() -> str:
    return datetime.now(LOCAL).strftime("%Y-%m-%dT%H:%M")


def org_names(ids: Any) -> dict[str, str]:
    """Organisation names by id, as the directory shows them to the signed-in user
    (one look-up per organisation and page)."""
    cache: dict[str, str] = g.setdefault("web_org_names", {})
    for org_id in {str(i) for i in ids if i}:
        if org_id in cache:
            continue
        answer = api.get(f"/orgs/{org_id}")
        cache[org_id] = org_name(answer.body) if answer.ok else ""
    return cache


def _my_org() -> str | None:
    found = require_me()
    return str(found["organisation"]["id"])


def may_update(shipment: dict[str, Any]) -> bool:
    """As the API decides: coordinators, and the active logistics company assigned."""
    if is_coordinator():
        return True
    found = require_me()
    return (
        "logistics" in found["roles"]
        and found["organisation"]["status"] == "verified"
        and shipment.get("logistics_org_id") == str(found["organisation"]["id"])
    )


def may_confirm(shipment: dict[str, Any]) -> bool:
    if is_coordinator():
        return True
    found = require_me()
    return "recipient" in found["roles"] and shipment.get("recipient_org_id") == _my_org()


# Printed documents ------------------------------------------------------------------------


def _pdf(render: Any, filename: str) -> Any:
    """A PDF from ``render()``, or the page saying why it cannot be printed."""
    try:
        body = render()
    except documents.FontMissing as exc:
        return render_template("error.html", status=503, message=str(exc)), 503
    response = Response(body, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'inline; filename="{filename}"'
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _printable(shipment_id: uuid.UUID) -> tuple[dict[str, Any] | None, Any, dict[str, str], str]:
    require_me()
    shipment, answer = _shipment(shipment_id)
    if shipment is None:
        return None, problem_page(answer), {}, ""
    names = org_names(
        [shipment["donor_org_id"], shipment["recipient_org_id"], shipment["logistics_org_id"]]
    )
    url = url_for("web.confirm_receipt", shipment_id=shipment_id, _external=True)
    return shipment, None, names, url


@bp.get("/shipments/<uuid:shipment_id>/waybill.pdf")
def shipment_waybill(shipment_id: uuid.UUID) -> Any:
    """The waybill, A4 (``?size=a4``, the default) or a 100 x 150 mm label."""
    size = request.args.get("size", "a4")
    if size not in documents.SIZES:
        return render_template(
            "error.html",
            status=400,
            message=gettext("size: one of %(sizes)s", sizes=", ".join(documents.SIZES)),
        ), 400
    shipment, failed, names, url = _printable(shipment_id)
    if shipment is None:
        return failed
    number = shipment.get("tracking_number") or str(shipment_id)
    return _pdf(
        lambda: documents.waybill(shipment, names, url, size), f"waybill-{number}-{size}.pdf"
    )


@bp.get("/shipments/<uuid:shipment_id>/delivery-note.pdf")
def shipment_delivery_note(shipment_id: uuid.UUID) -> Any:
    shipment, failed, names, url = _printable(shipment_id)
    if shipment is None:
        return failed
    number = shipment.get("tracking_number") or str(shipment_id)
    return _pdf(lambda: documents.delivery_note(shipment, names, url), f"delivery-{number}.pdf")


@bp.get("/shipments/run-sheet.pdf")
def run_sheet() -> Any:
    """A logistics company's run sheet for a day (``?day=YYYY-MM-DD``, Beijing time;
    today by default): its open shipments expected that day, and those with no date or
    a date gone by. Coordinators name the company with ``?logistics_org_id=``."""
    found = require_me()
    day_text = request.args.get("day") or datetime.now(LOCAL).date().isoformat()
    try:
        day = date.fromisoformat(day_text)
    except ValueError:
        return render_template(
            "error.html", status=400, message=gettext("day: a date as YYYY-MM-DD")
        ), 400
    company = str(found["organisation"]["id"])
    if is_coordinator() and request.args.get("logistics_org_id"):
        company = request.args["logistics_org_id"]
    chosen: list[dict[str, Any]] = []
    # Its shipments still in progress (the API leaves out those delivered or closed),
    # not every shipment it ever carried.
    query: dict[str, Any] = {
        "logistics_org_id": company,
        "in_progress": "true",
        "limit": BOARD_SIZE,
    }
    while True:
        answer = api.get("/shipments", query=query)
        if not answer.ok:
            return problem_page(answer)
        for s in answer.body["items"]:
            eta = local_day(s.get("eta"))
            if eta is None or eta <= day:
                chosen.append(s)
        if not answer.body.get("next_cursor"):
            break
        query["cursor"] = answer.body["next_cursor"]
    chosen.sort(key=lambda s: (s.get("eta") or "", s.get("tracking_number") or ""))
    names = org_names(
        [company] + [s["donor_org_id"] for s in chosen] + [s["recipient_org_id"] for s in chosen]
    )
    return _pdf(
        lambda: documents.run_sheet(chosen, names.get(company) or company, day.isoformat(), names),
        f"run-sheet-{day.isoformat()}.pdf",
    )


# The board --------------------------------------------------------------------------------


@bp.get("/shipments")
def shipment_board() -> Any:
    require_me()
    query: dict[str, Any] = {"limit": BOARD_SIZE}
    chosen = request.args.get("status", "")
    if chosen in STATUSES:
        query["status"] = chosen
    if request.args.get("cursor"):
        query["cursor"] = request.args["cursor"]
    answer = api.get("/shipments", query=query)
    if not answer.ok:
        return problem_page(answer)
    items = answer.body["items"]
    # Every status of the way from planned to received is a column, empty or not, so
    # the board reads the same every day; exceptions only when something is in them.
    columns = [
        (status, [s for s in items if s["status"] == status])
        for status in STATUSES
        if status in LIFECYCLE or any(s["status"] == status for s in items)
    ]
    if chosen:
        columns = [c for c in columns if c[0] == chosen]
    names = org_names(
        [s["recipient_org_id"] for s in items]
        + [s["logistics_org_id"] for s in items]
        + [s["donor_org_id"] for s in items]
    )
    return render_template(
        "shipments/board.html",
        columns=columns,
        count=len(items),
        chosen=chosen,
        statuses=STATUSES,
        names=names,
        next_cursor=answer.body.get("next_cursor"),
    )


# One shipment -----------------------------------------------------------------------------


def _shipment(shipment_id: uuid.UUID) -> tuple[dict[str, Any] | None, ApiResponse]:
    answer = api.get(f"/shipments/{shipment_id}")
    return (answer.body if answer.ok else None), answer


def _logistics_companies() -> list[tuple[str, str]]:
    answer = api.get(
        "/orgs", query={"kind": "logistics_company", "status": "verified", "limit": 200}
    )
    if not answer.ok:
        return []
    return [(str(o["id"]), org_name(o)) for o in answer.body["items"]]


def render_shipment(
    shipment: dict[str, Any],
    etag: str,
    *,
    update_form: FormState | None = None,
    assign_form: FormState | None = None,
    status: int = 200,
) -> Any:
    receipts = api.get(f"/shipments/{shipment['id']}/receipts")
    names = org_names(
        [shipment["donor_org_id"], shipment["recipient_org_id"], shipment["logistics_org_id"]]
        + [e.get("actor_org_id") for e in shipment["history"]]
    )
    coordinating = is_coordinator()
    return render_template(
        "shipments/show.html",
        shipment=shipment,
        etag=etag,
        names=names,
        receipts=receipts.body if receipts.ok else None,
        can_update=may_update(shipment) and shipment["status"] not in FINAL,
        can_confirm=may_confirm(shipment) and shipment["status"] == "delivered",
        can_correct=may_confirm(shipment) and shipment["status"] == "received",
        can_assign=coordinating and shipment["status"] not in FINAL,
        companies=_logistics_companies() if coordinating else [],
        update_form=update_form or FormState({"occurred_at": now_local(), "zone": "+08:00"}),
        assign_form=assign_form
        or FormState({"logistics_org_id": shipment.get("logistics_org_id") or ""}),
        settable=[(s, word(s)) for s in SETTABLE],
        zones=ZONES,
    ), status


@bp.get("/shipments/<uuid:shipment_id>")
def shipment_page(shipment_id: uuid.UUID) -> Any:
    require_me()
    shipment, answer = _shipment(shipment_id)
    if shipment is None:
        return problem_page(answer)
    return render_shipment(shipment, answer.headers.get("ETag", ""))


@bp.post("/shipments/<uuid:shipment_id>/status")
def update_shipment(shipment_id: uuid.UUID) -> Any:
    """One status update: status, when (local time and its zone), where, note."""
    require_me()
    values = {k: request.form.get(k, "").strip() for k in UPDATE_INPUTS}
    body: dict[str, Any] = {}
    for name in ("status", "location", "note"):
        if values[name]:
            body[name] = values[name]
    if values["occurred_at"]:
        body["occurred_at"] = aware_time(values["occurred_at"], values["zone"])
    answer = api.post(
        f"/shipments/{shipment_id}/events",
        json=body,
        idempotency_key=request.form.get("idempotency_key") or None,
    )
    if answer.status in (403, 404) or answer.status >= 500:
        return problem_page(answer)
    if not answer.ok:
        shipment, current = _shipment(shipment_id)
        if shipment is None:
            return problem_page(current)
        form = FormState.from_problem(values, answer)
        return render_shipment(
            shipment, current.headers.get("ETag", ""), update_form=form, status=answer.status
        )
    outcome = answer.body.get("outcome")
    if outcome == "late":
        flash(
            gettext("Recorded in the history as a late update; the status stays as it was."),
            "info",
        )
    elif outcome == "duplicate":
        flash(gettext("This update was recorded before; nothing changed."), "info")
    else:
        flash(gettext("The shipment's status is updated."), "success")
    return redirect(url_for("web.shipment_page", shipment_id=shipment_id))


@bp.post("/shipments/<uuid:shipment_id>/assign")
def assign_shipment(shipment_id: uuid.UUID) -> Any:
    """A coordinator assigns the logistics company, based on the version shown; a
    change by someone else meanwhile is answered 412 and the page shown anew."""
    require_me()
    chosen = request.form.get("logistics_org_id", "").strip()
    etag = request.form.get("etag", "").strip()
    answer = api.patch(
        f"/shipments/{shipment_id}",
        json={"logistics_org_id": chosen or None},
        if_match=etag or None,
    )
    if answer.status in (403, 404) or answer.status >= 500:
        return problem_page(answer)
    if not answer.ok:
        shipment, current = _shipment(shipment_id)
        if shipment is None:
            return problem_page(current)
        if answer.status in (412, 428):
            form = FormState(
                {"logistics_org_id": chosen},
                detail=gettext(
                    "Someone changed this shipment meanwhile. It is shown as it is now: "
                    "check it and assign again."
                ),
            )
        else:
            form = FormState.from_problem({"logistics_org_id": chosen}, answer)
        return render_shipment(
            shipment, current.headers.get("ETag", ""), assign_form=form, status=answer.status
        )
    flash(gettext("The logistics company is assigned."), "success")
    return redirect(url_for("web.shipment_page", shipment_id=shipment_id))


# Receipts ---------------------------------------------------------------------------------

RECEIPT_FIGURES = ("accepted", "damaged", "short")


def _figure(value: str) -> Any:
    """A whole number as a number; anything else as typed, for the API to name."""
    return int(value) if value.isdigit() else value


def _need_lines(shipment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The need lines the shipment's lines serve, by id, with their figures as the API
    shows them to the signed-in user: the recipient's own, or any to a coordinator.
    Anyone else is shown none (and the API would not answer them either)."""
    if not may_confirm(shipment):
        return {}
    found: dict[str, dict[str, Any]] = {}
    # One call per need, however many of the shipment's lines serve it.
    need_ids = dict.fromkeys(
        str(line["need_id"]) for line in shipment["lines"] if line.get("need_id")
    )
    for need_id in need_ids:
        answer = api.get(f"/needs/{need_id}")
        if answer.ok:
            found.update((str(need_line["id"]), need_line) for need_line in answer.body["lines"])
    return found


def _receipt_page(shipment: dict[str, Any], form: FormState, status: int = 200) -> Any:
    receipts = api.get(f"/shipments/{shipment['id']}/receipts")
    latest = None
    if receipts.ok and receipts.body["items"]:
        latest = receipts.body["items"][-1]
    return render_template(
        "shipments/receipt.html",
        shipment=shipment,
        form=form,
        latest=latest,
        need_lines=_need_lines(shipment),
        names=org_names([shipment["donor_org_id"]]),
    ), status


@bp.route("/shipments/<uuid:shipment_id>/receipt", methods=["GET", "POST"])
def confirm_receipt(shipment_id: uuid.UUID) -> Any:
    """Confirm what arrived, line by line: accepted, damaged and short add up to what
    the line carried (added up in the page as figures are typed, and by the API). Each
    line shows the need line it serves (requested, received, on the way, still open);
    a correction comes back here to show them as they now stand."""
    require_me()
    shipment, answer = _shipment(shipment_id)
    if shipment is None:
        return problem_page(answer)
    if request.method == "GET":
        values: dict[str, Any] = {}
        for index, line in enumerate(shipment["lines"]):
            # A first receipt starts from "all arrived"; a correction from the figures
            # the latest receipt gave (the shipment's lines carry them).
            received = line.get("accepted", 0) + line.get("damaged", 0) + line.get("short", 0)
            values[f"lines.{index}.accepted"] = line["accepted"] if received else line["quantity"]
            values[f"lines.{index}.damaged"] = line.get("damaged", 0) if received else 0
            values[f"lines.{index}.short"] = line.get("short", 0) if received else 0
        return _receipt_page(shipment, FormState(values))
    values = {}
    lines = []
    # The shipment's own lines, in its order: row N of the form is line N of the
    # receipt, so the API's ``lines.N`` errors land on the row they concern.
    for index, line in enumerate(shipment["lines"]):
        row: dict[str, Any] = {"shipment_line_id": line["id"]}
        for name in RECEIPT_FIGURES:
            key = f"lines.{index}.{name}"
            typed = request.form.get(key, "").strip()
            values[key] = typed
            if typed:
                row[name] = _figure(typed)
        lines.append(row)
    note = request.form.get("note", "").strip()
    values["note"] = note
    body: dict[str, Any] = {"lines": lines}
    if note:
        body["note"] = note
    corrects = request.form.get("corrects", "").strip()
    if corrects:
        # A correction replaces the latest receipt's figures, and says why.
        body["corrects"] = corrects
        values["corrects"] = corrects
        if not note:
            form = FormState(values, {"note": [gettext("Say why the receipt is corrected.")]})
            return _receipt_page(shipment, form, 422)
    confirmed = api.post(
        f"/shipments/{shipment_id}/receipt",
        json=body,
        idempotency_key=request.form.get("idempotency_key") or None,
    )
    if confirmed.status in (403, 404) or confirmed.status >= 500:
        return problem_page(confirmed)
    if not confirmed.ok:
        return _receipt_page(shipment, FormState.from_problem(values, confirmed), confirmed.status)
    if corrects:
        # Back to the receipt: its new figures, and what is still open on each need
        # line now that the correction has moved quantity back to matching or out of it.
        flash(gettext("The receipt is corrected."), "success")
        return redirect(url_for("web.confirm_receipt", shipment_id=shipment_id))
    flash(gettext("The receipt is confirmed."), "success")
    return redirect(url_for("web.shipment_page", shipment_id=shipment_id))


# A scanner's batch --------------------------------------------------------------------------

BATCH_HEADER = "shipment_id,status,occurred_at,location,note"
MAX_UPLOAD = 5 * 1024 * 1024


def _batch_text(pasted: str) -> str:
    """Pasted rows, with the header added when the scanner left it off."""
    text = pasted.strip().replace("\r\n", "\n")
    first = text.split("\n", 1)[0].replace(" ", "").lower()
    if not first.startswith("shipment_id"):
        text = BATCH_HEADER + "\n" + text
    return text + "\n"


def _header_offset(source: str, pasted: str) -> int:
    """What to add to a row's index for its line in what was sent: a header line
    comes first in a file, and in pasted rows that carry one."""
    if source == "batch_file" or pasted.strip().lower().startswith("shipment_id"):
        return 2
    return 1


@bp.route("/shipments/batch", methods=["GET", "POST"])
def shipment_batch() -> Any:
    """Upload a scanner's batch (a CSV file, or rows pasted in) and see which rows were
    applied, which were duplicates and which were refused, with the reason."""
    require_me()
    if request.method == "GET":
        return render_template("shipments/batch.html", form=FormState(), result=None)
    pasted = request.form.get("rows", "")
    upload = request.files.get("file")
    source = "rows"
    data: bytes | None = None
    if upload is not None and upload.filename:
        source = "batch_file"
        data = upload.stream.read(MAX_UPLOAD + 1)
        if len(data) > MAX_UPLOAD:
            form = FormState({"rows": pasted}, {source: [gettext("At most 5 MB.")]})
            return render_template("shipments/batch.html", form=form, result=None), 413
    elif pasted.strip():
        data = _batch_text(pasted).encode("utf-8")
    if not data:
        form = FormState(
            {"rows": pasted}, {"rows": [gettext("Choose a file or paste the scanned rows.")]}
        )
        return render_template("shipments/batch.html", form=form, result=None), 422
    answer = api.post(
        "/shipments/events:batch",
        data=data,
        content_type="text/csv",
        idempotency_key=request.form.get("idempotency_key") or None,
    )
    if answer.status == 403 or answer.status >= 500:
        return problem_page(answer)
    if not answer.ok:
        # Problems of the whole batch (its header, its size, its encoding) concern the
        # input it came from.
        messages = [m for ms in field_errors(answer.errors).values() for m in ms]
        form = FormState(
            {"rows": pasted},
            {source: messages} if messages else {},
            api_message(answer.detail) if answer.detail else None,
        )
        return render_template("shipments/batch.html", form=form, result=None), answer.status
    return render_template(
        "shipments/batch.html",
        form=FormState({"rows": "" if source == "batch_file" else pasted}),
        result=answer.body,
        header_offset=_header_offset(source, pasted),
    )


# Coordinators: overdue shipments -------------------------------------------------------------


@bp.get("/coordinator/shipments/overdue")
def overdue_shipments() -> Any:
    require_me()
    query: dict[str, Any] = {"overdue": "true", "limit": BOARD_SIZE}
    if request.args.get("cursor"):
        query["cursor"] = request.args["cursor"]
    answer = api.get("/shipments", query=query)
    if not answer.ok:
        return problem_page(answer)
    items = answer.body["items"]
    names = org_names(
        [s["recipient_org_id"] for s in items]
        + [s["donor_org_id"] for s in items]
        + [s["logistics_org_id"] for s in items]
    )
    return render_template(
        "coordinator/overdue.html",
        shipments=items,
        names=names,
        next_cursor=answer.body.get("next_cursor"),
    )


bp.add_app_template_global(local_time, "local_time")
bp.add_app_template_global(local_date, "local_date")
bp.add_app_template_global(clock_time, "clock_time")
