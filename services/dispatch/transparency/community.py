"""What communities' distributions reached inside them, for the public ledger and
donors' traces: households reached, people served, vulnerable households reached and
units delivered, as counts only (never a household or a person).

The community service sends its figures as cumulative snapshots
(``community.units_distributed``, numbered by ``sequence``); a snapshot replaces the
one held only if its number is higher, so a copy delivered twice or late changes
nothing. Each names the shares of the units delivered by shipment that it changed
(version 2), or all of them (version 1, and a version 2 ``whole``, a community's first);
each share is kept from the newest snapshot that named it, so the inbox hands these
snapshots over in any order (``Inbox.self_ordered``): a late one still says what it
alone says of a share. A community's figures are the latest: the ledger's date filters do not
apply to them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from services.dispatch.models import CommunityReach, CommunityShare, Organisation
from services.dispatch.transparency.totals import moved_at_commit
from shared import catalog
from shared.db import in_chunks, upsert_insert
from shared.events import Event
from shared.inbox import Handler, OutOfOrder


def on_units_distributed(session: Session, event: Event) -> None:
    data = event.data()
    org_id = uuid.UUID(str(data["org_id"]))
    if session.get(Organisation, org_id) is None:
        raise OutOfOrder(f"{event.type} for {org_id} before its org.registered")
    sequence = int(data["sequence"])
    held = session.get(CommunityReach, org_id, with_for_update=True)
    # Version 1 named every share; version 2 the shares it changed, unless ``whole``.
    whole = event.version == 1 or bool(data.get("whole"))
    # Each share as a whole, kept unless a later snapshot set it already: however late
    # a snapshot arrives (the inbox hands them over in any order), what it alone says of
    # a share is kept, and nothing older replaces it. Older than a whole snapshot taken
    # in, it says nothing of any share (each was named again by it, or none at it; the
    # share of a row it zeroed, or never made, stays so).
    named = data.get("from_shipments") or []
    if held is not None and sequence < held.whole_sequence:
        named = []
    changed = _keep_shares(session, org_id, sequence, named)
    if whole:
        # The shares it does not name were none when it was taken (kept as none at its
        # number, so that an older snapshot does not bring them back).
        zeroed = session.execute(
            update(CommunityShare)
            .where(CommunityShare.org_id == org_id, CommunityShare.sequence < sequence)
            .values(quantity=0, sequence=sequence)
            .execution_options(synchronize_session=False)
        )
        changed += cast(Any, zeroed).rowcount or 0
    if held is not None and held.sequence >= sequence:
        # Its counts are older than those held: only what it alone said of a share.
        if whole and sequence > held.whole_sequence:
            held.whole_sequence = sequence
        if changed:
            moved_at_commit(session)
        return
    if held is None:
        held = CommunityReach(org_id=org_id, whole_sequence=0)
        session.add(held)
    if whole:
        held.whole_sequence = sequence
    held.sequence = sequence
    held.households_reached = data["households_reached"]
    held.people_served = data["people_served"]
    held.vulnerable_households_reached = data["vulnerable_households_reached"]
    held.units_delivered = {line["item"]: int(line["quantity"]) for line in data["units_delivered"]}
    held.as_of = event.occurred_at
    session.flush()
    # The public ledger shows it: its answers (and ETag) move.
    moved_at_commit(session)


def _keep_shares(
    session: Session, org_id: uuid.UUID, sequence: int, shares: list[dict[str, Any]]
) -> int:
    """Keep each share named, unless a snapshot numbered higher set it; returns how
    many were kept."""
    if not shares:
        return 0
    table = cast(Table, CommunityShare.__table__)
    insert = upsert_insert(session)(table)
    stmt = insert.on_conflict_do_update(
        index_elements=[table.c.shipment_id, table.c.item],
        set_={
            "receipt_id": insert.excluded.receipt_id,
            "quantity": insert.excluded.quantity,
            "sequence": insert.excluded.sequence,
        },
        where=table.c.sequence < insert.excluded.sequence,
    ).returning(table.c.shipment_id)
    kept = session.execute(
        stmt,
        [
            {
                "shipment_id": uuid.UUID(str(share["shipment_id"])),
                "item": share["item"],
                "org_id": org_id,
                "receipt_id": uuid.UUID(str(share["receipt_id"])),
                "quantity": int(share["quantity"]),
                "sequence": sequence,
            }
            for share in sorted(shares, key=lambda x: (str(x["shipment_id"]), x["item"]))
        ],
    )
    return len(kept.all())


def shares_of(session: Session, org_id: uuid.UUID) -> dict[tuple[str, str], int]:
    """The units a community delivered by (shipment id, item), as dispatch holds them
    (for ``check-invariants``)."""
    return {
        (str(shipment_id), item): int(quantity)
        for shipment_id, item, quantity in session.execute(
            select(CommunityShare.shipment_id, CommunityShare.item, CommunityShare.quantity).where(
                CommunityShare.org_id == org_id, CommunityShare.quantity > 0
            )
        )
    }


def shares_from(session: Session, shipment_ids: Iterable[uuid.UUID]) -> dict[tuple[str, str], int]:
    """The units delivered inside the communities they went to, by (shipment id, item),
    of these shipments."""
    found: dict[tuple[str, str], int] = {}
    for chunk in in_chunks(sorted(set(shipment_ids), key=str)):
        for shipment_id, item, quantity in session.execute(
            select(CommunityShare.shipment_id, CommunityShare.item, CommunityShare.quantity).where(
                CommunityShare.shipment_id.in_(chunk)
            )
        ):
            found[(str(shipment_id), item)] = int(quantity)
    return found


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
    held: CommunityReach,
    item: str,
    shipment_ids: Iterable[uuid.UUID],
    accepted: int,
    shares: Mapping[tuple[str, str], int],
) -> dict[str, Any]:
    """A community's figures as a donor's trace shows them beside what it received of
    one line: its counts, the units of the line's item delivered inside it, and how
    many of those came from the shipments that carried the line (``shares``, from
    :func:`shares_from`; first in, first out; never more than the community accepted
    of them)."""
    from_these = sum(shares.get((str(s), item), 0) for s in set(shipment_ids))
    return {
        **_figures(held),
        "item": item,
        "base_unit": _base_unit(item),
        "units_delivered": int(held.units_delivered.get(item, 0)),
        "delivered_from_these_shipments": min(from_these, accepted),
    }
