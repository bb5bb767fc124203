"""Chart data for the vendored Chart.js, built from the API's numbers.

A page embeds each chart's data as JSON in a ``<script type="application/json">``
block (never run, so the Content-Security-Policy stays ``script-src 'self'``) beside
its canvas; ``static/charts.js`` draws it. Every chart is paired with a table holding
the same numbers, for screen readers and for copying.

A chart holds one unit: quantities of one item (``quantities``), counted on the axis in
the unit people read them in (吨 / t, 万个), or shares in percent. Items of different
units get a chart each (``small_multiples``), never one axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from shared.catalog import display

# Distinguishable in colour and in grey, one per series.
PALETTE = ("#0b5cad", "#e8a33d", "#1a7f37", "#b3261e", "#6e40c9", "#57606a")


def bar(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[int | float]]],
    *,
    stacked: bool = False,
    horizontal: bool = False,
    colors: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A grouped (or stacked) bar chart: one bar per series and label. ``colors``, one
    per series, keep a figure the same colour on every chart of a page."""
    chosen = list(colors) if colors else [PALETTE[i % len(PALETTE)] for i in range(len(series))]
    return {
        "type": "bar",
        "labels": list(labels),
        "datasets": [
            {"label": name, "data": list(values), "color": chosen[i]}
            for i, (name, values) in enumerate(series)
        ],
        "stacked": stacked,
        "horizontal": horizontal,
    }


def quantities(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[int]]],
    base_unit: str | None,
    language: str,
    *,
    colors: Sequence[str] | None = None,
    horizontal: bool = False,
) -> dict[str, Any]:
    """A bar chart of quantities of one item, in base units: the axis counts in the unit
    its largest figure reads in (``axis``, ``factor`` base units in one), and each bar's
    tooltip reads its figure as the tables do ("40 吨", "1,500.5 l")."""
    largest = max((int(v) for _name, values in series for v in values), default=0)
    factor, unit = display.axis(largest, base_unit, language)
    spec = bar(
        labels,
        [(name, [_in(int(v), factor) for v in values]) for name, values in series],
        colors=colors,
        horizontal=horizontal,
    )
    for dataset, (_name, values) in zip(spec["datasets"], series, strict=True):
        dataset["texts"] = [display.quantity(int(v), base_unit, language) for v in values]
    spec.update(axis=unit, factor=factor, base_unit=base_unit)
    return spec


def _in(amount: int, factor: int) -> int | float:
    """``amount`` base units in units of ``factor``, as JSON numbers (exact to 0.001)."""
    if factor == 1:
        return amount
    return float(round(Decimal(amount) / factor, 3))


def small_multiples(
    figures: Sequence[tuple[str, str, str]],
    rows: dict[str, tuple[dict[str, Any], str | None]],
    names: dict[str, str],
    language: str,
) -> dict[str, dict[str, Any]]:
    """One small chart per item, each on its own axis in its own unit. ``figures`` are
    the bars, as (key in a row, label, colour); ``rows`` maps an item to its figures and
    its base unit; ``names`` names each item's series. Masks in pieces and fruit in
    tonnes are never on one axis, so neither hides the other."""
    charts = {}
    for code, (row, base_unit) in rows.items():
        spec = quantities(
            [label for _key, label, _color in figures],
            [(names[code], [int(row.get(key) or 0) for key, _label, _color in figures])],
            base_unit,
            language,
        )
        spec["datasets"][0]["color"] = [color for _key, _label, color in figures]
        spec["legend"] = False
        charts[code] = spec
    return charts
