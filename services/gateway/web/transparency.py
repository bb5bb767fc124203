"""The public transparency ledger (no sign-in): totals by item, by city and by month
as charts with their tables, the flows from donors to recipients, and the open-data
downloads with the same filters. Each item's totals are a small chart of their own, in
the item's unit: items are never charted, or added, on one axis."""

from __future__ import annotations

from typing import Any

from flask import render_template, request
from flask_babel import gettext

from services.gateway.web import api
from services.gateway.web.base import bp
from services.gateway.web.charts import PALETTE, quantities, small_multiples
from services.gateway.web.forms import FormState, region_code
from services.gateway.web.i18n import (
    CATALOG,
    base_unit,
    current_language,
    item_name,
    line_options,
)
from services.gateway.web.names import names_in_language
from shared.catalog import regions

FILTERS = ("item", "region", "from", "to")
FIGURES = ("pledged", "reserved", "shipped", "received")
COLORS = dict(zip(FIGURES, PALETTE, strict=False))


def figure_names() -> dict[str, str]:
    return {
        "pledged": gettext("Pledged"),
        "reserved": gettext("Reserved"),
        "shipped": gettext("Shipped"),
        "received": gettext("Received"),
    }


def _ordered_items(codes: Any) -> list[str]:
    """Items in catalogue order, unknown codes last."""
    order = {code: i for i, code in enumerate(CATALOG)}
    return sorted(codes, key=lambda code: (order.get(code, len(order)), code))


def ledger_view(ledger: dict[str, Any], chart_item: str | None) -> dict[str, Any]:
    """The ledger's numbers as the page's tables and charts. Quantities of different
    items are never added nor share an axis: each item's totals are a chart of their own
    (``charts["items"]``), and the city and month charts show one item."""
    names = figure_names()
    language = current_language()
    totals = ledger["totals"]
    items = _ordered_items(totals)
    if chart_item not in totals:
        chart_item = items[0] if items else None
    by_item = small_multiples(
        [(f, names[f], COLORS[f]) for f in FIGURES],
        {code: (totals[code], totals[code].get("base_unit") or base_unit(code)) for code in items},
        {code: item_name(code) for code in items},
        language,
    )
    regions_ = sorted(ledger["by_region"])
    months = sorted(ledger["by_month"])
    shown = ("pledged", "shipped", "received")
    unit = (totals.get(chart_item or "") or {}).get("base_unit") or base_unit(chart_item)

    def of(table: dict[str, Any], key: str, figure: str) -> int:
        cell = table[key].get(chart_item or "")
        return int(cell[figure]) if cell else 0

    by_region = quantities(
        [regions.name(r, language) for r in regions_],
        [(names[f], [of(ledger["by_region"], r, f) for r in regions_]) for f in shown],
        unit,
        language,
        colors=[COLORS[f] for f in shown],
    )
    by_month = quantities(
        months,
        [(names[f], [of(ledger["by_month"], m, f) for m in months]) for f in shown],
        unit,
        language,
        colors=[COLORS[f] for f in shown],
    )
    return {
        "items": items,
        "chart_item": chart_item,
        "regions": regions_,
        "months": months,
        "charts": {"by_item": by_item, "by_region": by_region, "by_month": by_month},
        "figures": FIGURES,
        "figure_names": names,
    }


def _region_filter(text: str) -> str:
    """A region typed by name ("武昌", "Shenzhen") as the code the ledger filters by: the
    one region it names, else the best of the regions it finds (a city before its
    districts); digits, a code or its prefix, as typed."""
    language = current_language()
    code = region_code(text, language)
    if code.isdigit():
        return code
    found = regions.search(text, language, limit=1)
    return found[0][0] if found else text


@bp.get("/transparency")
def transparency() -> Any:
    """Public: no sign-in. The API's filters, and its problems shown at their field."""
    values = {k: request.args.get(k, "").strip() for k in FILTERS}
    query = {k: v for k, v in values.items() if v}
    if query.get("region"):
        query["region"] = _region_filter(query["region"])
        if query["region"].isdigit() and regions.known(query["region"]):
            values["region"] = regions.name(query["region"], current_language())
    # The flows come a page at a time; the totals and charts are whole on every page.
    cursor = request.args.get("cursor", "").strip()
    answer = api.raw_call(
        "GET", "/transparency/ledger", query=query | ({"cursor": cursor} if cursor else {})
    )
    form = FormState(values)
    status = 200
    ledger: dict[str, Any] = {"totals": {}, "by_region": {}, "by_month": {}, "flows": []}
    if answer.ok:
        ledger = answer.body
    elif 400 <= answer.status < 500:
        form = FormState.from_problem(values, answer)
        status = answer.status
    else:
        status = 502
        form = FormState(values, detail=gettext("The ledger is not available right now."))
    view = ledger_view(ledger, request.args.get("chart_item") or values["item"] or None)
    named = [
        *(
            f.get(key)
            for f in ledger.get("flows", [])
            for key in ("donor_org_id", "recipient_org_id")
        ),
        *(c.get("org_id") for c in ledger.get("communities", [])),
    ]
    return render_template(
        "transparency/ledger.html",
        form=form,
        ledger=ledger,
        names=names_in_language(named),
        query=query if answer.ok else {},
        item_options=line_options()["item_options"],
        **view,
    ), status
