"""A need's and its lines' statuses from their counters: used by the needs service
and by the allocation saga, which moves the counters (its own module, so that the
two need not import each other)."""

from __future__ import annotations

from services.dispatch.models import Need, NeedLine
from services.dispatch.needs import domain


def totals_of(line: NeedLine) -> domain.LineTotals:
    return domain.LineTotals(
        line.quantity, line.proposed, line.reserved, line.shipped, line.received
    )


def refresh_line_status(line: NeedLine) -> str:
    """Set the line's status from its counters, keeping a held one."""
    held = line.status if line.status in domain.HELD_STATUSES else None
    line.status = domain.line_status(totals_of(line), held)
    return line.status


def refresh_need_status(need: Need) -> str:
    need.status = domain.need_status([line.status for line in need.lines], need.status)
    return need.status
