"""Traces: where each unit of a pledge went, and where each unit of a need came from.

A trace follows pledge line -> allocation -> shipment -> receipt. For a pledge it names,
for each line, the recipient organisations and how much each got, through which
shipments and with what receipt; for a need, for each line, the donor organisations it
came from. Rejected and cancelled allocations are left out: nothing moved.

A donor who asked to stay anonymous appears as ``anonymous`` (without its id) to
recipients; coordinators and the donor itself see it.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.dispatch.models import (
    Allocation,
    Need,
    Organisation,
    Receipt,
    Shipment,
    ShipmentLine,
    SupplyLine,
    of_need,
    of_pledge,
)
from services.dispatch.transparency.community import reach_of, shares_from, trace_figures
from shared.db import in_chunks

ANONYMOUS = "anonymous"
# Allocations that moved, or are held to move, something.
TRACED_STATUSES = ("proposed", "reserved", "shipped", "delivered", "received", "lost", "returned")
# What counts as given to a recipient: held for it, on its way, or arrived.
COUNTED_STATUSES = ("reserved", "shipped", "delivered", "received")


def org_names(session: Session, ids: Iterable[uuid.UUID | None]) -> dict[uuid.UUID, str]:
    wanted = {i for i in ids if i is not None}
    names: dict[uuid.UUID, str] = {}
    for chunk in in_chunks(sorted(wanted)):
        rows = session.execute(
            select(Organisation.id, Organisation.name).where(Organisation.id.in_(chunk))
        )
        names.update((row.id, row.name) for row in rows)
    return names


def receipt_sequences(session: Session, shipment_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, int]:
    """The latest receipt's sequence of each shipment that has one."""
    found: dict[uuid.UUID, int] = {}
    for chunk in in_chunks(sorted(set(shipment_ids))):
        rows = session.execute(
            select(Receipt.shipment_id, func.max(Receipt.sequence))
            .where(Receipt.shipment_id.in_(chunk))
            .group_by(Receipt.shipment_id)
        )
        found.update((shipment_id, int(sequence)) for shipment_id, sequence in rows)
    return found


def _status_of_receipt(sequence: int | None) -> str:
    if not sequence:
        return "pending"
    return "confirmed" if sequence == 1 else "corrected"


def _legs(session: Session, allocations: list[Allocation]) -> dict[uuid.UUID, dict[str, Any]]:
    """Each allocation's shipment leg: the shipment, its status, the receipt's figures."""
    if not allocations:
        return {}
    rows = session.execute(
        select(ShipmentLine, Shipment.status)
        .join(Shipment, Shipment.id == ShipmentLine.shipment_id)
        .where(ShipmentLine.allocation_id.in_([a.id for a in allocations]))
    ).all()
    sequences = receipt_sequences(session, {line.shipment_id for line, _ in rows})
    legs: dict[uuid.UUID, dict[str, Any]] = {}
    for line, status in rows:
        sequence = sequences.get(line.shipment_id)
        legs[line.allocation_id] = {
            "shipment_id": line.shipment_id,
            "shipment_status": status,
            "receipt_status": _status_of_receipt(sequence),
            # The shipment line keeps the latest receipt's figures.
            "accepted": line.accepted if sequence else 0,
            "damaged": line.damaged if sequence else 0,
            "short": line.short if sequence else 0,
        }
    return legs


def _party(
    allocations: list[Allocation],
    legs: dict[uuid.UUID, dict[str, Any]],
    org_id: uuid.UUID | None,
    name: str,
    key: str,
) -> dict[str, Any]:
    """One counterpart of a line: what it got (or gave), by shipment and allocation."""
    shipments: dict[uuid.UUID, dict[str, Any]] = {}
    entry: dict[str, Any] = {
        "org_id": org_id,
        "name": name,
        "quantity": 0,
        "unshipped": 0,
        "accepted": 0,
        "damaged": 0,
        "short": 0,
        "shipments": [],
        "allocations": [],
    }
    for allocation in allocations:
        leg = legs.get(allocation.id)
        counted = allocation.status in COUNTED_STATUSES
        if counted:
            entry["quantity"] += allocation.quantity
        detail: dict[str, Any] = {
            "allocation_id": allocation.id,
            "status": allocation.status,
            "quantity": allocation.quantity,
            key: getattr(allocation, key),
            "shipment": None,
        }
        if leg is None:
            if counted:
                entry["unshipped"] += allocation.quantity
        else:
            detail["shipment"] = {"id": leg["shipment_id"], "status": leg["shipment_status"]}
            detail.update(
                receipt_status=leg["receipt_status"],
                accepted=leg["accepted"],
                damaged=leg["damaged"],
                short=leg["short"],
            )
            shipment = shipments.setdefault(
                leg["shipment_id"],
                {
                    "id": leg["shipment_id"],
                    "status": leg["shipment_status"],
                    "receipt_status": leg["receipt_status"],
                    "quantity": 0,
                    "accepted": 0,
                    "damaged": 0,
                    "short": 0,
                },
            )
            shipment["quantity"] += allocation.quantity
            for figure in ("accepted", "damaged", "short"):
                shipment[figure] += leg[figure]
                entry[figure] += leg[figure]
        entry["allocations"].append(detail)
    entry["shipments"] = sorted(shipments.values(), key=lambda s: str(s["id"]))
    return entry


def _traced(session: Session, *conditions: Any) -> list[Allocation]:
    return list(
        session.scalars(
            select(Allocation)
            .where(*conditions, Allocation.status.in_(TRACED_STATUSES))
            .order_by(Allocation.created_at, Allocation.id)
        )
    )


def pledge_owner(session: Session, pledge_id: uuid.UUID) -> uuid.UUID | None:
    """The donor organisation of a pledge dispatch knows of."""
    return session.scalar(
        select(SupplyLine.donor_org_id).where(SupplyLine.pledge_id == pledge_id).limit(1)
    )


def pledge_trace(session: Session, pledge_id: uuid.UUID) -> dict[str, Any] | None:
    """For each line of the pledge, the recipients it reached; None if unknown here."""
    supply = list(
        session.scalars(
            select(SupplyLine).where(SupplyLine.pledge_id == pledge_id).order_by(SupplyLine.id)
        )
    )
    if not supply:
        return None
    allocations = _traced(session, of_pledge(pledge_id))
    legs = _legs(session, allocations)
    donor_id = supply[0].donor_org_id
    names = org_names(session, [donor_id, *(a.recipient_org_id for a in allocations)])
    by_line: dict[uuid.UUID, dict[uuid.UUID, list[Allocation]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for allocation in allocations:
        by_line[allocation.pledge_line_id][allocation.recipient_org_id].append(allocation)
    lines = []
    communities = reach_of(session, {a.recipient_org_id for a in allocations})
    shares = shares_from(
        session,
        {
            legs[a.id]["shipment_id"]
            for a in allocations
            if a.recipient_org_id in communities and a.id in legs
        },
    )
    for line in supply:
        recipients = [
            _party(found, legs, org_id, names.get(org_id, str(org_id)), "need_id")
            for org_id, found in sorted(by_line[line.id].items(), key=lambda kv: str(kv[0]))
        ]
        for party in recipients:
            held = communities.get(party["org_id"])
            if held is not None:
                # Inside a community the goods went on to households: its counts.
                party["community"] = trace_figures(
                    held,
                    line.item,
                    [s["id"] for s in party["shipments"]],
                    party["accepted"],
                    shares,
                )
        lines.append(
            {
                "pledge_line_id": line.id,
                "item": line.item,
                "standard": line.standard,
                "quantity": line.quantity,
                "status": line.status,
                "allocated": sum(r["quantity"] for r in recipients),
                "accepted": sum(r["accepted"] for r in recipients),
                "damaged": sum(r["damaged"] for r in recipients),
                "short": sum(r["short"] for r in recipients),
                "recipients": recipients,
            }
        )
    return {
        "pledge_id": pledge_id,
        "donor": {"org_id": donor_id, "name": names.get(donor_id, str(donor_id))},
        "anonymous": any(line.anonymous for line in supply),
        "lines": lines,
    }


def need_trace(session: Session, need: Need, *, reveal_anonymous: bool) -> dict[str, Any]:
    """For each line of the need, the donors it came from. A donor who asked to stay
    anonymous is one ``anonymous`` entry unless ``reveal_anonymous``."""
    allocations = _traced(session, of_need(need.id))
    legs = _legs(session, allocations)
    hidden = set()
    if not reveal_anonymous and allocations:
        hidden = set(
            session.scalars(
                select(SupplyLine.id).where(
                    SupplyLine.id.in_({a.pledge_line_id for a in allocations}),
                    SupplyLine.anonymous.is_(True),
                )
            )
        )
    names = org_names(session, [a.donor_org_id for a in allocations])
    by_line: dict[uuid.UUID, dict[uuid.UUID | None, list[Allocation]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for allocation in allocations:
        donor = None if allocation.pledge_line_id in hidden else allocation.donor_org_id
        by_line[allocation.need_line_id][donor].append(allocation)
    lines = []
    for line in need.lines:
        donors = []
        for org_id, found in sorted(by_line[line.id].items(), key=lambda kv: str(kv[0] or "")):
            name = ANONYMOUS if org_id is None else names.get(org_id, str(org_id))
            party = _party(found, legs, org_id, name, "pledge_id")
            if org_id is None:
                # The pledge would lead back to the donor.
                for detail in party["allocations"]:
                    detail["pledge_id"] = None
            donors.append(party)
        lines.append(
            {
                "need_line_id": line.id,
                "line_no": line.line_no,
                "item": line.item,
                "quantity": line.quantity,
                "status": line.status,
                "shipped": line.shipped,
                "received": line.received,
                "donors": donors,
            }
        )
    return {
        "need_id": need.id,
        "recipient": {
            "org_id": need.org_id,
            "name": org_names(session, [need.org_id]).get(need.org_id, str(need.org_id)),
        },
        "lines": lines,
    }
