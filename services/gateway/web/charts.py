"""Chart data for the vendored Chart.js, built from the API's numbers.

A page embeds each chart's data as JSON in a ``<script type="application/json">``
block (never run, so the Content-Security-Policy stays ``script-src 'self'``) beside
its canvas; ``static/charts.js`` draws it. Every chart is paired with a table holding
the same numbers, for screen readers and for copying.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
