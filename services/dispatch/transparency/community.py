"""What communities' distributions reached inside them, for the public ledger and
donors' traces: households reached, people served, vulnerable households reached and
units delivered, as counts only (never a household or a person).

The community service sends its figures as cumulative snapshots
(``community.units_distributed``, numbered by ``sequence``); a snapshot replaces the
one held only if its number is higher, so a copy delivered twice or late changes
nothing. A community's figures are the latest: the ledger's date filters do not
apply to them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.dispatch.models import CommunityReach, Organisation
from services.dispatch.transparency.totals import bump
from shared import catalog
from shared.db import in_chunks
from shared.events import Event
from shared.inbox import Handler, OutOfOrder


def on_units_distributed(session: Session, event: Event) -> None:
    data = event.data()
    org_id = uuid.UUID(str(data["org_id"]))
    if session.get(Organisation, org_id) is None:
        raise OutOfOrder(f"{event.type} for {org_id} before its org.registered")
    held = session.get(CommunityReach, org_id, with_for_update=True)
    if held is not None and held.sequence >= data["sequence"]:
        return  # an older snapshot than the one held
    if held is None:
        held = CommunityReach(org_id=org_id)
        session.add(held)
    held.sequence = data["sequence"]
    held.households_reached = data["households_reached"]
    held.people_served = data["people_served"]
    held.vulnerable_households_reached = data["vulnerable_households_reached"]
    held.units_delivered = {line["item"]: int(line["quantity"]) for line in data["units_delivered"]}
    held.from_shipments = [
        {
            "shipment_id": str(share["shipment_id"]),
            "receipt_id": str(share["receipt_id"]),
            "item": share["item"],
            "quantity": int(share["quantity"]),
        }
        for share in data.get("from_shipments") or []
    ]
    held.as_of = event.occurred_at
    session.flush()
    # The public ledger shows it: its answers (and ETag) move.
    bump(session)


def community_reach_handlers() -> dict[str, Handler]:
    return {"community.units_distributed": on_units_distributed}


def _base_unit(item: str) -> str | None:
    try:
        return catalog.get_item(item).base_unit
    except catalog.CatalogError:
        return None


def _units(held: CommunityReach, item: str | None = None) -> list[dict[str, Any]]:
    return [
        {"item": code, "base_unit": _base_unit(code), "quantity": quantity}
        for code, quantity in sorted(held.units_delivered.items())
        if quantity and (item is None or code == item)
    ]


def _figures(held: CommunityReach) -> dict[str, Any]:
    return {
        "households_reached": held.households_reached,
        "people_served": held.people_served,
        "vulnerable_households_reached": held.vulnerable_households_reached,
        "as_of": held.as_of,
    }


def ledger_communities(
    session: Session, *, item: str | None = None, region: str | None = None
) -> list[dict[str, Any]]:
    """Each community with figures, by name: in a region (a code prefix), and with
    units of ``item`` delivered if one is named (then only that item's units)."""
    stmt = select(CommunityReach, Organisation.name, Organisation.region).join(
        Organisation, Organisation.id == CommunityReach.org_id
    )
    if region is not None:
        stmt = stmt.where(Organisation.region.startswith(region, autoescape=True))
    out = []
    for held, name, org_region in session.execute(stmt):
        units = _units(held, item)
        if item is not None and not units:
            continue
        out.append(
            {
                "org_id": held.org_id,
                "name": name,
                "region": org_region,
                **_figures(held),
                "units_delivered": units,
            }
        )
    out.sort(key=lambda c: (c["name"], str(c["org_id"])))
    return out


def reach_of(session: Session, org_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, CommunityReach]:
    """The figures held of each of these organisations that is a community with any."""
    found: dict[uuid.UUID, CommunityReach] = {}
    for chunk in in_chunks(sorted(set(org_ids), key=str)):
        for held in session.scalars(select(CommunityReach).where(CommunityReach.org_id.in_(chunk))):
            found[held.org_id] = held
    return found


def trace_figures(
    held: CommunityReach, item: str, shipment_ids: Iterable[uuid.UUID], accepted: int
) -> dict[str, Any]:
    """A community's figures as a donor's trace shows them beside what it received of
    one line: its counts, the units of the line's item delivered inside it, and how
    many of those came from the shipments that carried the line (first in, first out;
    never more than the community accepted of them)."""
    carried = {str(s) for s in shipment_ids}
    from_these = sum(
        int(share["quantity"])
        for share in held.from_shipments
        if share["item"] == item and share["shipment_id"] in carried
    )
    return {
        **_figures(held),
        "item": item,
        "base_unit": _base_unit(item),
        "units_delivered": int(held.units_delivered.get(item, 0)),
        "delivered_from_these_shipments": min(from_these, accepted),
    }
