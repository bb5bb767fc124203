"""The public transparency ledger: what was pledged, reserved, shipped and received, by
item, region and month, and the flows from donor to recipient organisations.

Definitions (quantities in each item's base unit; items are never added together):

- ``pledged``: the quantity of pledge lines that are not cancelled or expired, at the
  pledge's origin region, in the month the pledge was made;
- ``reserved``: the quantity of allocations held for a need and not yet shipped
  (status ``reserved``);
- ``shipped``: the quantity of allocations that left the donor (status ``shipped``,
  ``delivered`` or ``received``);
- ``received``: the quantity recipients accepted, as their latest receipt of each
  shipment line says (damaged and short quantity is not received);
- reserved and shipped count at the need's region in the month the allocation was made;
  received at the need's region in the month of the shipment's first receipt.

A region is the city: the first four digits of the region code (a two-digit province
code stays as it is). A flow is one donor organisation, one recipient organisation and
one item: ``quantity`` is what was reserved or shipped from one to the other,
``shipped`` and ``received`` as above. A donor whose pledge asks for it appears as
``anonymous``, without its id. Flows are filtered by the need's region and the month
the allocation was made. Nothing here names a person, an address or a contact.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.dispatch.models import (
    Allocation,
    Need,
    Receipt,
    ShipmentLine,
    SupplyLine,
    messaging,
)
from services.dispatch.transparency.trace import ANONYMOUS, org_names
from shared import catalog

MEASURES = ("pledged", "reserved", "shipped", "received")
SHIPPED_STATUSES = ("shipped", "delivered", "received")
UNPLEDGED_LINE_STATUSES = ("cancelled", "expired")

# Stable columns of the open-data exports; documented in the README.
TOTAL_COLUMNS = ("month", "region", "item", "base_unit", *MEASURES)
FLOW_COLUMNS = (
    "donor",
    "donor_org_id",
    "recipient",
    "recipient_org_id",
    "item",
    "base_unit",
    "quantity",
    "shipped",
    "received",
)


@dataclass(frozen=True)
class Filters:
    item: str | None = None
    # A region code prefix: "42" (a province), "4201" (a city), "420103" (a district).
    region: str | None = None
    # Dates, both included.
    start: date | None = None
    end: date | None = None

    def admits(self, item: str, region: str, when: datetime) -> bool:
        if self.item is not None and item != self.item:
            return False
        if self.region is not None and not region.startswith(self.region):
            return False
        day = when.date()
        if self.start is not None and day < self.start:
            return False
        return self.end is None or day <= self.end

    def as_dict(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "region": self.region,
            "from": self.start.isoformat() if self.start else None,
            "to": self.end.isoformat() if self.end else None,
        }


@dataclass(frozen=True)
class Fact:
    """One quantity of one measure, where and when it counts."""

    measure: str
    item: str
    region: str
    when: datetime
    quantity: int


def city(region: str) -> str:
    return region[:4]


def month(when: datetime) -> str:
    return f"{when.year:04d}-{when.month:02d}"


def _base_unit(item: str) -> str | None:
    try:
        return catalog.get_item(item).base_unit
    except catalog.CatalogError:
        return None


def _pledge_months(session: Session, pledge_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, datetime]:
    """When dispatch heard of each pledge: its pledge.created (or first pledge event)."""
    inbox = messaging.inbox
    wanted = {str(p) for p in pledge_ids}
    if not wanted:
        return {}
    rows = session.execute(
        select(inbox.aggregate_id, func.min(inbox.received_at))
        .where(inbox.type.in_(("pledge.created", "pledge.amended", "pledge.cancelled")))
        .group_by(inbox.aggregate_id)
    )
    found: dict[uuid.UUID, datetime] = {}
    for aggregate_id, first in rows:
        if aggregate_id in wanted and first is not None:
            found[uuid.UUID(aggregate_id)] = first
    return found


def facts(session: Session) -> list[Fact]:
    """Every quantity the ledger counts, before filtering and grouping."""
    found: list[Fact] = []
    supply = session.scalars(
        select(SupplyLine).where(SupplyLine.status.not_in(UNPLEDGED_LINE_STATUSES))
    ).all()
    made = _pledge_months(session, {line.pledge_id for line in supply})
    for line in supply:
        when = made.get(line.pledge_id, line.synced_at)
        found.append(Fact("pledged", line.item, line.region, when, line.quantity))
    allocations = session.execute(
        select(
            Allocation.status,
            Allocation.item,
            Allocation.quantity,
            Allocation.created_at,
            Need.region,
        )
        .join(Need, Need.id == Allocation.need_id)
        .where(Allocation.status.in_(("reserved", *SHIPPED_STATUSES)))
    )
    for status, item, quantity, created_at, region in allocations:
        measure = "reserved" if status == "reserved" else "shipped"
        found.append(Fact(measure, item, region, created_at, quantity))
    first_receipt = (
        select(Receipt.shipment_id, Receipt.created_at).where(Receipt.sequence == 1).subquery()
    )
    received = session.execute(
        select(ShipmentLine.item, ShipmentLine.accepted, first_receipt.c.created_at, Need.region)
        .join(first_receipt, first_receipt.c.shipment_id == ShipmentLine.shipment_id)
        .join(Need, Need.id == ShipmentLine.need_id)
        .where(ShipmentLine.accepted > 0)
    )
    for item, accepted, confirmed_at, region in received:
        found.append(Fact("received", item, region, confirmed_at, accepted))
    return found


def _figures() -> dict[str, int]:
    return dict.fromkeys(MEASURES, 0)


def total_rows(session: Session, filters: Filters) -> list[dict[str, Any]]:
    """The finest grain of the ledger: one row per month, region and item."""
    grouped: dict[tuple[str, str, str], dict[str, int]] = defaultdict(_figures)
    for fact in facts(session):
        if not filters.admits(fact.item, fact.region, fact.when):
            continue
        grouped[(month(fact.when), city(fact.region), fact.item)][fact.measure] += fact.quantity
    return [
        {"month": m, "region": r, "item": i, "base_unit": _base_unit(i), **figures}
        for (m, r, i), figures in sorted(grouped.items())
    ]


def _rollup(rows: list[dict[str, Any]], key: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for row in rows:
        target = out if key is None else out.setdefault(row[key], {})
        figures = target.setdefault(row["item"], {"base_unit": row["base_unit"], **_figures()})
        for measure in MEASURES:
            figures[measure] += row[measure]
    return out


def flow_rows(session: Session, filters: Filters) -> list[dict[str, Any]]:
    """Donor organisation -> recipient organisation, per item."""
    rows = session.execute(
        select(Allocation, Need.region, SupplyLine.anonymous, ShipmentLine.accepted)
        .join(Need, Need.id == Allocation.need_id)
        .outerjoin(SupplyLine, SupplyLine.id == Allocation.pledge_line_id)
        .outerjoin(ShipmentLine, ShipmentLine.allocation_id == Allocation.id)
        .where(Allocation.status.in_(("reserved", *SHIPPED_STATUSES)))
    ).all()
    grouped: dict[tuple[uuid.UUID | None, uuid.UUID, str], dict[str, int]] = defaultdict(
        lambda: {"quantity": 0, "shipped": 0, "received": 0}
    )
    for allocation, region, anonymous, accepted in rows:
        if not filters.admits(allocation.item, region, allocation.created_at):
            continue
        donor = None if anonymous else allocation.donor_org_id
        figures = grouped[(donor, allocation.recipient_org_id, allocation.item)]
        figures["quantity"] += allocation.quantity
        if allocation.status in SHIPPED_STATUSES:
            figures["shipped"] += allocation.quantity
        figures["received"] += accepted or 0
    names = org_names(session, {k for key in grouped for k in key[:2]})
    flows = [
        {
            "donor": ANONYMOUS if donor is None else names.get(donor, str(donor)),
            "donor_org_id": donor,
            "recipient": names.get(recipient, str(recipient)),
            "recipient_org_id": recipient,
            "item": item,
            "base_unit": _base_unit(item),
            **figures,
        }
        for (donor, recipient, item), figures in grouped.items()
    ]
    flows.sort(key=lambda f: (f["item"], f["donor"], f["recipient"], str(f["donor_org_id"])))
    return flows


def ledger(session: Session, filters: Filters) -> dict[str, Any]:
    rows = total_rows(session, filters)
    return {
        "filters": filters.as_dict(),
        "totals": _rollup(rows, None),
        "by_region": _rollup(rows, "region"),
        "by_month": _rollup(rows, "month"),
        "flows": flow_rows(session, filters),
    }
