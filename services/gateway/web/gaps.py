"""Coordinators' view of supply against demand, by item and by city: what needs still
lack (open demand), what pledges still hold unallocated (available supply), and the
gap between them, as charts with their tables. Demand and supply come from the needs
and pledges lists; what moved comes from the ledger."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from flask import render_template, request
from flask_babel import gettext

from services.gateway.web import api
from services.gateway.web.base import bp, problem_page, region_name, require_me
from services.gateway.web.charts import bar, quantities
from services.gateway.web.i18n import (
    base_unit,
    current_language,
    item_name,
    line_options,
)
from services.gateway.web.transparency import _ordered_items

PAGE = 200
# Enough for a city's crisis; past it the page says its figures are partial.
MAX_PAGES = 25
OPEN_NEEDS = frozenset({"open", "partially_allocated", "allocated"})
OPEN_SUPPLY = frozenset(
    {"available", "partially_reserved", "partially_shipped", "partially_delivered"}
)


def _all(path: str, query: dict[str, Any]) -> tuple[list[dict[str, Any]], bool, Any]:
    """Every item of a list, page by page (up to MAX_PAGES); whether it is complete."""
    found: list[dict[str, Any]] = []
    cursor = None
    for _page in range(MAX_PAGES):
        page = {**query, "limit": PAGE}
        if cursor:
            page["cursor"] = cursor
        answer = api.get(path, query=page)
        if not answer.ok:
            return found, False, answer
        found.extend(answer.body["items"])
        cursor = answer.body.get("next_cursor")
        if not cursor:
            return found, True, None
    return found, False, None


def city(region: str | None) -> str:
    return (region or "")[:4]


def gaps(
    needs: list[dict[str, Any]], pledges: list[dict[str, Any]]
) -> tuple[dict[str, dict[str, int]], dict[tuple[str, str], dict[str, int]]]:
    """Open demand and available supply by item, and by (city, item)."""
    by_item: dict[str, dict[str, int]] = defaultdict(lambda: {"demand": 0, "supply": 0})
    by_city: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"demand": 0, "supply": 0})
    for need in needs:
        if need["status"] not in OPEN_NEEDS:
            continue
        for line in need["lines"]:
            still = int(line.get("open") or 0)
            if still > 0:
                by_item[line["item"]]["demand"] += still
                by_city[(city(need["location"]["region"]), line["item"])]["demand"] += still
    for pledge in pledges:
        for line in pledge["lines"]:
            if line["status"] not in OPEN_SUPPLY:
                continue
            free = (
                int(line["quantity"])
                - int(line.get("reserved") or 0)
                - int(line.get("shipped") or 0)
            )
            if free > 0:
                by_item[line["item"]]["supply"] += free
                by_city[(city(pledge["origin"]["region"]), line["item"])]["supply"] += free
    return dict(by_item), dict(by_city)


@bp.get("/coordinator/gaps")
def supply_gaps() -> Any:
    require_me()
    # The open needs and the open pledges, asked for by status: the closed ones, which
    # grow with every week of the crisis, are neither read nor counted.
    needs: list[dict[str, Any]] = []
    needs_complete = True
    for status in sorted(OPEN_NEEDS):
        found, complete, failed = _all("/needs", {"status": status})
        if failed is not None:
            return problem_page(failed)
        needs.extend(found)
        needs_complete = needs_complete and complete
    pledges, pledges_complete, failed = _all("/pledges", {"status": "open"})
    if failed is not None:
        return problem_page(failed)
    ledger = api.raw_call("GET", "/transparency/ledger")
    moved = ledger.body["totals"] if ledger.ok else {}
    by_item, by_city = gaps(needs, pledges)
    items = _ordered_items(by_item)
    chart_item = request.args.get("item") or None
    if chart_item not in by_item:
        # The item short by the most of its own need, first.
        chart_item = max(
            items,
            key=lambda code: (
                (by_item[code]["demand"] - by_item[code]["supply"])
                / max(by_item[code]["demand"], 1)
            ),
            default=None,
        )
    cities = sorted({c for c, code in by_city if code == chart_item})
    city_rows = [by_city[(c, chart_item or "")] for c in cities]
    return render_template(
        "coordinator/gaps.html",
        items=items,
        by_item=by_item,
        by_city=by_city,
        moved=moved,
        cities=cities,
        chart_item=chart_item,
        complete=needs_complete and pledges_complete,
        item_options=[o for o in line_options()["item_options"] if o[0] in by_item],
        charts={
            "by_item": short_chart(items, by_item),
            "by_city": city_chart(cities, city_rows, chart_item),
        },
    )


def short_chart(items: list[str], by_item: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Each item against its own need, in percent, so items of different units share
    one axis: the bar is the gap, what is still short of what is still needed. An item
    fully covered has no bar, one with nothing available a full one."""
    shares = [
        round(100 * max(0, by_item[c]["demand"] - by_item[c]["supply"]) / by_item[c]["demand"])
        if by_item[c]["demand"]
        else 0
        for c in items
    ]
    spec = bar(
        [item_name(c) for c in items],
        [(gettext("Still short, in percent of what is still needed"), shares)],
        horizontal=True,
    )
    spec["datasets"][0]["texts"] = [f"{share} %" for share in shares]
    spec.update(axis="%", max=100)
    return spec


def city_chart(cities: list[str], rows: list[dict[str, int]], item: str | None) -> dict[str, Any]:
    """One item by city, in its unit as people read it: what is still needed, what is
    available and the gap between them."""
    return quantities(
        [region_name(c) for c in cities],
        [
            (gettext("Still needed"), [row["demand"] for row in rows]),
            (gettext("Available to allocate"), [row["supply"] for row in rows]),
            (gettext("Gap"), [max(0, row["demand"] - row["supply"]) for row in rows]),
        ],
        base_unit(item),
        current_language(),
    )
