"""Where supplies went: a pledge's lines traced to the recipients they reached (for
its donor), and a need's lines traced to the donors they came from (for its
recipient), with the shipments and what the receipts said."""

from __future__ import annotations

import uuid
from typing import Any

from flask import render_template

from services.gateway.web import api
from services.gateway.web.base import bp, problem_page, require_me
from services.gateway.web.names import names_in_language


@bp.get("/pledges/<uuid:pledge_id>")
def pledge_page(pledge_id: uuid.UUID) -> Any:
    require_me()
    pledge = api.get(f"/pledges/{pledge_id}")
    if not pledge.ok:
        return problem_page(pledge)
    trace = api.get(f"/pledges/{pledge_id}/trace")
    if not trace.ok and trace.status != 404:
        return problem_page(trace)
    # The trace is dispatch's view: a pledge it has not heard of yet has none.
    lines = {str(t["pledge_line_id"]): t for t in trace.body["lines"]} if trace.ok else {}
    return render_template(
        "pledges/show.html", pledge=pledge.body, traced=lines, names=_party_names(lines)
    )


@bp.get("/needs/<uuid:need_id>")
def need_page(need_id: uuid.UUID) -> Any:
    require_me()
    need = api.get(f"/needs/{need_id}")
    if not need.ok:
        return problem_page(need)
    trace = api.get(f"/needs/{need_id}/trace")
    if not trace.ok:
        return problem_page(trace)
    lines = {str(t["need_line_id"]): t for t in trace.body["lines"]}
    return render_template(
        "needs/show.html", need=need.body, traced=lines, names=_party_names(lines)
    )


def _party_names(lines: dict[str, Any]) -> dict[str, str]:
    """The trace's organisations by their names in the page's language."""
    return names_in_language(
        party.get("org_id")
        for line in lines.values()
        for party in (*line.get("recipients", []), *line.get("donors", []))
    )
