"""The service layer of pledges: create, amend, cancel, and the donations half of the
allocation saga (reserve, release, ship, deliver).

Every function works inside the caller's transaction and writes its events to the
outbox there, so a change and its announcement commit together or not at all.
Quantities on lines move only through conditional UPDATEs that the database checks
(reserved + shipped <= quantity is also a CHECK constraint), so concurrent
reservations never over-commit a line, on SQLite or PostgreSQL.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, delete, select, update
from sqlalchemy.orm import Session

from services.donations.models import Organisation, Place, Pledge, PledgeLine, Reservation
from services.donations.pledges import domain
from shared import catalog
from shared.contacts import contact_of
from shared.db import in_chunks, insert_as_built, utcnow
from shared.errors import Conflict, RuleBroken
from shared.events import new_event
from shared.outbox import Outbox
from shared.places import resolve_location

log = logging.getLogger(__name__)

PRODUCER = "donations"
# How long a reservation may wait for its shipment when the allocation names no deadline.
DEFAULT_RESERVATION_TTL = timedelta(hours=72)


class LineError(ValueError):
    """A pledge line that cannot be accepted; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# Building lines -------------------------------------------------------------------------


def convert_line(data: dict[str, Any], *, new_best_before: bool = True) -> dict[str, Any]:
    """Check a line against the catalogue and convert its quantity to base units.

    Returns the line's columns; raises :class:`LineError` naming the field. A
    best-before date already past is refused when it is given now
    (``new_best_before``), not when an amendment keeps the one the line had.
    """
    item_code = data["item"]
    try:
        item = catalog.get_item(item_code)
    except catalog.CatalogError as exc:
        raise LineError(exc.field, str(exc)) from None
    standard = data.get("standard")
    if standard:
        try:
            standard = catalog.check_standard(item.code, standard).code
        except catalog.CatalogError as exc:
            raise LineError(exc.field, str(exc)) from None
    quantity = data["quantity"]
    if isinstance(quantity, float):
        quantity = Decimal(str(quantity))
    try:
        base = catalog.to_base(
            item.code,
            quantity,
            data["unit"],
            pack_size=data.get("pack_size"),
            bottle_volume_ml=data.get("bottle_volume_ml"),
            density_g_per_l=data.get("density_g_per_l"),
        )
    except catalog.CatalogError as exc:
        raise LineError(exc.field, str(exc)) from None
    best_before = data.get("best_before")
    if new_best_before and best_before is not None and best_before < date.today():
        raise LineError(
            "best_before",
            f"The best-before date {best_before.isoformat()} is already past: nobody "
            "could use these goods.",
        )
    if item.perishable and best_before is None:
        # Produce without a date keeps for its catalogue shelf life from today.
        best_before = date.today() + timedelta(days=item.shelf_life_days or 0)
    restrictions = data.get("restrictions") or {}
    return {
        "item": item.code,
        "standard": standard,
        "quantity": base,
        "entered_quantity": str(data["quantity"]),
        "entered_unit": str(data["unit"]),
        "pack_size": data.get("pack_size"),
        "best_before": best_before,
        "restrictions": {
            "regions": list(restrictions.get("regions") or []),
            "recipient_kinds": list(restrictions.get("recipient_kinds") or []),
            "note": restrictions.get("note"),
        },
    }


def refresh_status(line: PledgeLine) -> str:
    terminal = line.status if line.status in domain.TERMINAL_LINE_STATUSES else None
    line.status = domain.line_status(totals_of(line), terminal)
    return line.status


# Fewer days than this between when goods can leave and their best-before date: they
# may spoil before they reach anyone, and the line says so.
SPOILS_WITHIN_DAYS = 2


def spoils_before_delivery(
    best_before: date | None, available_from: date | None, today: date | None = None
) -> bool:
    """Would goods with this best-before date spoil before they could reach anyone?"""
    if best_before is None:
        return False
    start = max(today or date.today(), available_from or date.min)
    return best_before < start + timedelta(days=SPOILS_WITHIN_DAYS)


def totals_of(line: Any) -> domain.LineTotals:
    return domain.LineTotals(line.quantity, line.reserved, line.shipped, line.delivered)


# Events -----------------------------------------------------------------------------------


def snapshot(pledge: Pledge, reason: str | None = None) -> dict[str, Any]:
    return {
        "id": pledge.id,
        "org_id": pledge.org_id,
        "status": pledge.status,
        "origin": {
            "place_id": pledge.origin_place_id,
            "address": pledge.origin_address,
            "contact": contact_of(pledge.origin_contact_name, pledge.origin_contact_phone),
            "region": pledge.origin_region,
            "lat": pledge.origin_lat,
            "lon": pledge.origin_lon,
        },
        "available_from": pledge.available_from,
        "catalog_version": pledge.catalog_version,
        "anonymous": bool(pledge.anonymous),
        "reason": reason,
        "lines": [
            {
                "id": line.id,
                "line_no": line.line_no,
                "item": line.item,
                "standard": line.standard,
                "quantity": line.quantity,
                "reserved": line.reserved,
                "shipped": line.shipped,
                "delivered": line.delivered,
                "status": line.status,
                "best_before": line.best_before,
                "restrictions": line.restrictions,
                "entered_unit": line.entered_unit,
                "pack_size": line.pack_size,
            }
            for line in pledge.lines
        ],
    }


def announce(
    session: Session, outbox: Outbox, pledge: Pledge, type: str, reason: str | None = None
) -> None:
    session.flush()
    outbox.add(
        session,
        new_event(
            type,
            snapshot(pledge, reason),
            producer=PRODUCER,
            aggregate_id=pledge.id,
            aggregate_version=pledge.version,
        ),
    )


# Create, amend, cancel ---------------------------------------------------------------------


def create_pledge(
    session: Session,
    outbox: Outbox,
    *,
    org_id: uuid.UUID,
    data: dict[str, Any],
    created_by: uuid.UUID | None = None,
    import_job_id: uuid.UUID | None = None,
) -> Pledge:
    errors: dict[str, list[str]] = {}
    lines = []
    for index, line in enumerate(data["lines"]):
        try:
            lines.append(convert_line(line))
        except LineError as exc:
            errors.setdefault(f"lines.{index}.{exc.field}", []).append(exc.message)
    if errors:
        raise RuleBroken("Some lines cannot be pledged as given.", errors=errors)
    origin = resolve_location(session, Place, org_id, data["origin"], "origin")
    now = utcnow()
    pledge = Pledge(
        id=uuid.uuid4(),
        org_id=org_id,
        status="open",
        origin_place_id=origin["place_id"],
        origin_address=origin.get("address"),
        origin_region=origin["region"],
        origin_lat=origin.get("lat"),
        origin_lon=origin.get("lon"),
        origin_contact_name=(origin.get("contact") or {}).get("name"),
        origin_contact_phone=(origin.get("contact") or {}).get("phone"),
        available_from=data.get("available_from"),
        notes=data.get("notes"),
        anonymous=bool(data.get("anonymous", False)),
        catalog_version=catalog.CATALOG_VERSION,
        created_by=created_by,
        import_job_id=import_job_id,
        created_at=now,
        updated_at=now,
        version=1,
    )
    pledge.lines = [
        PledgeLine(
            id=uuid.uuid4(),
            pledge_id=pledge.id,
            line_no=n,
            status="available",
            reserved=0,
            shipped=0,
            delivered=0,
            **columns,
        )
        for n, columns in enumerate(lines, start=1)
    ]
    # Every column with a default given (a column left unset is NULL): written by two
    # Core inserts rather than the ORM's flush.
    insert_as_built(session, pledge, pledge.lines)
    announce(session, outbox, pledge, "pledge.created")
    return pledge


def amend_pledge(session: Session, outbox: Outbox, pledge: Pledge, data: dict[str, Any]) -> Pledge:
    """Apply a PATCH. Line quantities move by conditional UPDATEs, so a reservation
    committed meanwhile is never undercut."""
    if pledge.status != "open":
        raise Conflict(
            f"The pledge is {pledge.status}; it cannot be changed.", slug="pledge-not-open"
        )
    if "anonymous" in data and bool(data["anonymous"]) != bool(pledge.anonymous):
        held = session.scalar(
            select(Reservation.id).where(Reservation.pledge_id == pledge.id).limit(1)
        )
        if held is not None or any(line.reserved or line.shipped for line in pledge.lines):
            # Its goods are already promised under the other choice: recipients and
            # carriers have seen (or not seen) the donor's name on them.
            raise RuleBroken(
                "Whether the donor is named cannot change once some of the pledge is "
                "reserved; pledge the rest anew instead.",
                errors={"anonymous": ["Some of the pledge is reserved already."]},
            )
    for name in ("notes", "available_from", "anonymous"):
        if name in data:
            setattr(pledge, name, data[name])
    if "origin" in data:
        origin = resolve_location(session, Place, pledge.org_id, data["origin"], "origin")
        pledge.origin_place_id = origin["place_id"]
        pledge.origin_address = origin.get("address")
        pledge.origin_region = origin["region"]
        pledge.origin_lat = origin.get("lat")
        pledge.origin_lon = origin.get("lon")
        pledge.origin_contact_name = (origin.get("contact") or {}).get("name")
        pledge.origin_contact_phone = (origin.get("contact") or {}).get("phone")
    errors: dict[str, list[str]] = {}
    by_id = {line.id: line for line in pledge.lines}
    next_no = max((line.line_no for line in pledge.lines), default=0) + 1
    for index, change in enumerate(data.get("lines") or []):
        prefix = f"lines.{index}"
        line_id = change.get("id")
        if line_id is None:
            try:
                columns = convert_line(change)
            except LineError as exc:
                errors.setdefault(f"{prefix}.{exc.field}", []).append(exc.message)
                continue
            pledge.lines.append(
                PledgeLine(id=uuid.uuid4(), line_no=next_no, status="available", **columns)
            )
            next_no += 1
            continue
        line = by_id.get(line_id)
        if line is None:
            errors.setdefault(f"{prefix}.id", []).append("No such line on this pledge.")
            continue
        merged = {
            "item": change.get("item", line.item),
            "standard": change.get("standard", line.standard),
            "quantity": change.get("quantity", line.entered_quantity),
            "unit": change.get("unit", line.entered_unit),
            "pack_size": change.get("pack_size", line.pack_size),
            "bottle_volume_ml": change.get("bottle_volume_ml"),
            "density_g_per_l": change.get("density_g_per_l"),
            "best_before": change.get("best_before", line.best_before),
            "restrictions": change.get("restrictions", line.restrictions),
        }
        try:
            columns = convert_line(merged, new_best_before="best_before" in change)
        except LineError as exc:
            errors.setdefault(f"{prefix}.{exc.field}", []).append(exc.message)
            continue
        session.refresh(line)
        problems = domain.amendment_errors(
            totals_of(line),
            status=line.status,
            new_quantity=columns["quantity"],
            item_changed=columns["item"] != line.item,
            standard_changed=columns["standard"] != line.standard,
        )
        if problems:
            for field, message in problems.items():
                errors.setdefault(f"{prefix}.{field}", []).append(message)
            continue
        new_quantity = columns.pop("quantity")
        changed = session.execute(
            update(PledgeLine)
            .where(
                PledgeLine.id == line.id,
                PledgeLine.reserved + PledgeLine.shipped <= new_quantity,
            )
            .values(quantity=new_quantity, **columns)
            .returning(PledgeLine.id)
        ).first()
        if changed is None:
            errors.setdefault(f"{prefix}.quantity", []).append(
                "Reservations arrived meanwhile; the quantity cannot go that low."
            )
            continue
        session.refresh(line)
        refresh_status(line)
    if errors:
        raise RuleBroken("Some changes cannot be made.", errors=errors)
    pledge.status = domain.pledge_status([line.status for line in pledge.lines], False)
    # Bump the version even when only lines changed: it is the pledge's ETag.
    pledge.updated_at = utcnow()
    announce(session, outbox, pledge, "pledge.amended")
    return pledge


def cancel_pledge(session: Session, outbox: Outbox, pledge: Pledge, reason: str | None) -> Pledge:
    """Cancel the pledge: every line closes and its unshipped reservations are released.
    What has shipped stays shipped."""
    if pledge.status == "cancelled":
        return pledge
    active = session.scalars(
        select(Reservation).where(
            Reservation.pledge_id == pledge.id, Reservation.status == "active"
        )
    ).all()
    for reservation in active:
        release_reservation(session, outbox, reservation, "pledge cancelled")
    # Releasing bumped the version under the ORM's feet; start from the stored row.
    session.refresh(pledge)
    for line in pledge.lines:
        session.refresh(line)
        if line.status not in domain.FINAL_LINE_STATUSES:
            line.status = "cancelled"
    pledge.status = "cancelled"
    pledge.cancelled_at = utcnow()
    pledge.cancel_reason = reason
    announce(session, outbox, pledge, "pledge.cancelled", reason)
    return pledge


# The saga -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    accepted: bool
    available: int
    reason: str | None = None


def _bump_pledge(session: Session, pledge_id: uuid.UUID) -> int:
    version = session.scalar(
        update(Pledge)
        .where(Pledge.id == pledge_id)
        .values(version=Pledge.version + 1, updated_at=utcnow())
        .returning(Pledge.version)
        .execution_options(synchronize_session=False)
    )
    assert version is not None
    return int(version)


def _line_after(session: Session, line_id: uuid.UUID) -> PledgeLine:
    line = session.get(PledgeLine, line_id, populate_existing=True)
    assert line is not None
    refresh_status(line)
    session.flush()
    return line


def _line_totals(line: PledgeLine) -> dict[str, Any]:
    return {
        "id": line.id,
        "quantity": line.quantity,
        "reserved": line.reserved,
        "shipped": line.shipped,
        "delivered": line.delivered,
        "status": line.status,
    }


def _reservation_event(
    session: Session,
    outbox: Outbox,
    type: str,
    *,
    allocation_id: uuid.UUID,
    aggregate_version: int,
    line: PledgeLine | None,
    quantity: int,
    available: int,
    reason: str | None,
    reservation: Reservation | None = None,
    donor_org_id: uuid.UUID | None = None,
    pledge_version: int | None = None,
    pledge_line_id: uuid.UUID | None = None,
) -> None:
    outbox.add(
        session,
        new_event(
            type,
            {
                "allocation_id": allocation_id,
                "reservation_id": reservation.id if reservation else None,
                "pledge_id": line.pledge_id if line else None,
                "pledge_line_id": line.id if line else pledge_line_id,
                "donor_org_id": donor_org_id,
                "donor_anonymous": bool(line.pledge.anonymous) if line else False,
                "recipient_org_id": reservation.recipient_org_id if reservation else None,
                "quantity": quantity,
                "available": available,
                "reason": reason,
                "line": _line_totals(line) if line else None,
                "pledge_version": pledge_version,
            },
            producer=PRODUCER,
            aggregate_id=allocation_id,
            aggregate_version=aggregate_version,
        ),
    )


def reserve(session: Session, outbox: Outbox, proposal: dict[str, Any], now: datetime) -> Decision:
    """Reserve ``proposal['quantity']`` of a pledge line for an allocation, or refuse,
    with one conditional UPDATE; emits reservation.accepted or reservation.rejected."""
    allocation_id = proposal["allocation_id"]
    if session.scalar(select(Reservation.id).where(Reservation.allocation_id == allocation_id)):
        return Decision(True, 0, "already decided")
    quantity = int(proposal["quantity"])
    line_id = proposal["pledge_line_id"]
    line = session.get(PledgeLine, line_id)
    reason = None
    if line is None:
        reason = "no such pledge line"
    else:
        pledge = session.get(Pledge, line.pledge_id)
        assert pledge is not None
        donor = session.get(Organisation, pledge.org_id)
        if donor is None or donor.status != "verified":
            reason = "the donor organisation is not verified"
        elif line.best_before is not None and line.best_before < now.date():
            reason = "the line is past its best-before date"
    reserved_row = None
    if reason is None:
        reserved_row = session.execute(
            update(PledgeLine)
            .where(
                PledgeLine.id == line_id,
                PledgeLine.status.not_in(domain.TERMINAL_LINE_STATUSES),
                PledgeLine.quantity - PledgeLine.reserved - PledgeLine.shipped >= quantity,
            )
            .values(reserved=PledgeLine.reserved + quantity)
            .returning(PledgeLine.id)
            .execution_options(synchronize_session=False)
        ).first()
        if reserved_row is None:
            reason = "not enough left on the line"
    if reserved_row is None:
        assert reason is not None  # set on every way here
        available = 0
        pledge_version = None
        if line is not None:
            line = session.get(PledgeLine, line_id, populate_existing=True)
            assert line is not None
            available = domain.available(totals_of(line), line.status)
            pledge_version = session.scalar(
                select(Pledge.version).where(Pledge.id == line.pledge_id)
            )
        _refuse(session, outbox, proposal, line, reason, available, pledge_version)
        return Decision(False, available, reason)
    line = _line_after(session, line_id)
    pledge_version = _bump_pledge(session, line.pledge_id)
    donor_org_id = session.scalar(select(Pledge.org_id).where(Pledge.id == line.pledge_id))
    assert donor_org_id is not None
    return _accept(session, outbox, proposal, line, donor_org_id, pledge_version, now)


def _refuse(
    session: Session,
    outbox: Outbox,
    proposal: dict[str, Any],
    line: PledgeLine | None,
    reason: str,
    available: int,
    pledge_version: int | None,
) -> None:
    """Remember a refused proposal (so a redelivered one is answered the same way) and
    announce ``reservation.rejected``."""
    if line is not None:
        session.add(
            Reservation(
                id=uuid.uuid4(),
                allocation_id=proposal["allocation_id"],
                pledge_id=line.pledge_id,
                pledge_line_id=proposal["pledge_line_id"],
                need_line_id=proposal.get("need_line_id"),
                recipient_org_id=proposal.get("recipient_org_id"),
                quantity=int(proposal["quantity"]),
                status="rejected",
                reason=reason,
                version=2,
            )
        )
    _reservation_event(
        session,
        outbox,
        "reservation.rejected",
        allocation_id=proposal["allocation_id"],
        aggregate_version=2,
        line=line,
        quantity=int(proposal["quantity"]),
        available=available,
        reason=reason,
        pledge_version=pledge_version,
        pledge_line_id=proposal["pledge_line_id"],
    )


def _accept(
    session: Session,
    outbox: Outbox,
    proposal: dict[str, Any],
    line: PledgeLine,
    donor_org_id: uuid.UUID,
    pledge_version: int,
    now: datetime,
) -> Decision:
    """Record the reservation of a proposal whose quantity ``line`` now counts as
    reserved, and announce ``reservation.accepted``."""
    reservation = Reservation(
        id=uuid.uuid4(),
        allocation_id=proposal["allocation_id"],
        pledge_id=line.pledge_id,
        pledge_line_id=line.id,
        need_line_id=proposal.get("need_line_id"),
        recipient_org_id=proposal.get("recipient_org_id"),
        quantity=int(proposal["quantity"]),
        status="active",
        deadline=proposal.get("deadline") or now + DEFAULT_RESERVATION_TTL,
        version=2,
    )
    session.add(reservation)
    available = domain.available(totals_of(line), line.status)
    _reservation_event(
        session,
        outbox,
        "reservation.accepted",
        allocation_id=proposal["allocation_id"],
        aggregate_version=2,
        line=line,
        quantity=reservation.quantity,
        available=available,
        reason=None,
        reservation=reservation,
        donor_org_id=donor_org_id,
        pledge_version=pledge_version,
    )
    return Decision(True, available)


def reserve_many(
    session: Session, outbox: Outbox, proposals: list[dict[str, Any]], now: datetime
) -> list[Decision]:
    """:func:`reserve` for several proposals at once (a matching run's), in order,
    with the same decisions and the same events: the pledge lines and pledges
    involved are locked once (in id order) and counted in memory, and each pledge's
    version moves by one statement for all its new reservations."""
    if not proposals:
        return []
    wanted = [proposal["allocation_id"] for proposal in proposals]
    decided = {
        allocation_id
        for chunk in in_chunks(wanted)
        for allocation_id in session.scalars(
            select(Reservation.allocation_id).where(Reservation.allocation_id.in_(chunk))
        )
    }
    # Each IN list under the parameter limit; locked chunk after chunk in id order,
    # the order every writer of these rows takes them in.
    lines: dict[uuid.UUID, PledgeLine] = {
        row.id: row
        for chunk in in_chunks(sorted({p["pledge_line_id"] for p in proposals}))
        for row in session.scalars(
            select(PledgeLine)
            .where(PledgeLine.id.in_(chunk))
            .order_by(PledgeLine.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    }
    pledges: dict[uuid.UUID, Pledge] = {
        row.id: row
        for chunk in in_chunks(sorted({line.pledge_id for line in lines.values()}))
        for row in session.scalars(
            select(Pledge)
            .where(Pledge.id.in_(chunk))
            .order_by(Pledge.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    }
    donors = {
        row.id: row
        for chunk in in_chunks({pledge.org_id for pledge in pledges.values()})
        for row in session.scalars(select(Organisation).where(Organisation.id.in_(chunk)))
    }
    bumps: dict[uuid.UUID, int] = {}
    decisions: list[Decision] = []
    for proposal in proposals:
        allocation_id = proposal["allocation_id"]
        if allocation_id in decided:
            decisions.append(Decision(True, 0, "already decided"))
            continue
        decided.add(allocation_id)
        quantity = int(proposal["quantity"])
        line_id = proposal["pledge_line_id"]
        line = lines.get(line_id)
        pledge = pledges[line.pledge_id] if line is not None else None
        reason = None
        if line is None or pledge is None:
            reason = "no such pledge line"
        else:
            donor = donors.get(pledge.org_id)
            if donor is None or donor.status != "verified":
                reason = "the donor organisation is not verified"
            elif line.best_before is not None and line.best_before < now.date():
                reason = "the line is past its best-before date"
            elif (
                line.status in domain.TERMINAL_LINE_STATUSES
                or line.quantity - line.reserved - line.shipped < quantity
            ):
                reason = "not enough left on the line"
        if reason is not None:
            available = 0
            pledge_version = None
            if line is not None and pledge is not None:
                available = domain.available(totals_of(line), line.status)
                pledge_version = pledge.version + bumps.get(pledge.id, 0)
            _refuse(session, outbox, proposal, line, reason, available, pledge_version)
            decisions.append(Decision(False, available, reason))
            continue
        assert line is not None and pledge is not None
        line.reserved += quantity
        refresh_status(line)
        bumps[pledge.id] = bumps.get(pledge.id, 0) + 1
        decisions.append(
            _accept(
                session,
                outbox,
                proposal,
                line,
                pledge.org_id,
                pledge.version + bumps[pledge.id],
                now,
            )
        )
    session.flush()
    for pledge_id in sorted(bumps):
        session.execute(
            update(Pledge)
            .where(Pledge.id == pledge_id)
            .values(version=Pledge.version + bumps[pledge_id], updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        # Read again when next needed: its version moved outside the session's view.
        session.expire(pledges[pledge_id])
    return decisions


def release_reservation(
    session: Session,
    outbox: Outbox,
    reservation: Reservation,
    reason: str,
) -> bool:
    """Give an active reservation's quantity back to its line; emits reservation.released.
    Returns False if the reservation was no longer active."""
    taken = session.execute(
        update(Reservation)
        .where(Reservation.id == reservation.id, Reservation.status == "active")
        .values(status="released", reason=reason, version=Reservation.version + 1)
        .returning(Reservation.version)
        .execution_options(synchronize_session=False)
    ).first()
    if taken is None:
        return False
    session.execute(
        update(PledgeLine)
        .where(PledgeLine.id == reservation.pledge_line_id)
        .values(reserved=PledgeLine.reserved - reservation.quantity)
        .execution_options(synchronize_session=False)
    )
    line = _line_after(session, reservation.pledge_line_id)
    pledge_version = _bump_pledge(session, line.pledge_id)
    session.refresh(reservation)
    _reservation_event(
        session,
        outbox,
        "reservation.released",
        allocation_id=reservation.allocation_id,
        aggregate_version=int(taken[0]),
        line=line,
        quantity=reservation.quantity,
        available=domain.available(totals_of(line), line.status),
        reason=reason,
        reservation=reservation,
        pledge_version=pledge_version,
    )
    return True


def release_allocation(
    session: Session, outbox: Outbox, allocation_id: uuid.UUID, reason: str
) -> bool:
    reservation = session.scalar(
        select(Reservation).where(Reservation.allocation_id == allocation_id)
    )
    if reservation is None:
        return False
    return release_reservation(session, outbox, reservation, reason)


# A shipment in these has left its origin: an active reservation has shipped.
SHIPPED_STATUSES = frozenset(
    {"picked_up", "in_transit", "out_for_delivery", "held", "delayed", "damaged"}
)
DELIVERED_STATUSES = frozenset({"delivered", "received"})


def _shipment_changes(status: str, q: int) -> list[tuple[str, str, dict[str, int]]]:
    """How a shipment status moves a reservation of ``q``: (from, to, deltas of the
    pledge line), the first that matches the reservation's status applies. A status
    that found the reservation already past it (redelivered, or arriving after a newer
    one) matches nothing and changes nothing."""
    if status in SHIPPED_STATUSES:
        return [("active", "shipped", {"reserved": -q, "shipped": q})]
    if status in DELIVERED_STATUSES:
        return [
            ("active", "delivered", {"reserved": -q, "shipped": q, "delivered": q}),
            ("shipped", "delivered", {"delivered": q}),
        ]
    if status == "lost":
        # The units are gone: they count as shipped and never come back to the line.
        return [
            ("active", "lost", {"reserved": -q, "shipped": q}),
            ("shipped", "lost", {}),
        ]
    if status == "returned":
        # Back with the donor: the line may give them again. (``active``: the pickup
        # was never heard of, or arrived after the return.)
        return [
            ("shipped", "released", {"shipped": -q}),
            ("active", "released", {"reserved": -q}),
        ]
    return []


LEFT_STATUSES = SHIPPED_STATUSES | DELIVERED_STATUSES | {"lost"}


def _retake(session: Session, reservation: Reservation) -> bool:
    """Reserve again, with one conditional UPDATE, the quantity of a reservation this
    service released; False (and an error in the log, and a disagreement that
    ``aidlink check-invariants`` reports) if the line has given it to someone else."""
    q = reservation.quantity
    taken = session.execute(
        update(PledgeLine)
        .where(
            PledgeLine.id == reservation.pledge_line_id,
            PledgeLine.quantity - PledgeLine.reserved - PledgeLine.shipped >= q,
        )
        .values(reserved=PledgeLine.reserved + q)
        .returning(PledgeLine.id)
        .execution_options(synchronize_session=False)
    ).first()
    if taken is None:
        log.error(
            "reservation %s was released (%s) but its goods left; line %s no longer has %d",
            reservation.id,
            reservation.reason,
            reservation.pledge_line_id,
            q,
        )
        return False
    session.execute(
        update(Reservation)
        .where(Reservation.id == reservation.id, Reservation.status == "released")
        .values(status="active", version=Reservation.version + 1)
        .execution_options(synchronize_session=False)
    )
    return True


def apply_shipment(session: Session, outbox: Outbox, shipment: dict[str, Any]) -> int:
    """Move the reservations of a shipment's lines along: reserved -> shipped when it
    leaves (or is held, delayed or damaged on the way), -> delivered when it arrives,
    -> lost (still shipped, never back) when it is lost, back to the line when it is
    returned or cancelled before leaving. Returns how many reservations moved."""
    status = shipment["status"]
    if status != "cancelled" and not _shipment_changes(status, 0):
        return 0  # planned, ready for pickup: the goods have not moved
    moved = 0
    for item in shipment["lines"]:
        reservation = session.scalar(
            select(Reservation).where(Reservation.allocation_id == item["allocation_id"])
        )
        if reservation is None:
            continue
        if status == "cancelled":
            if release_reservation(session, outbox, reservation, "shipment cancelled"):
                moved += 1
            continue
        if status in LEFT_STATUSES and reservation.status == "released" and reservation.reason:
            # Released here (deadline, cancelled pledge) while the goods were already on
            # their way: what happened on the road wins, if the line still has them.
            _retake(session, reservation)
        for before, after, deltas in _shipment_changes(status, reservation.quantity):
            taken = session.execute(
                update(Reservation)
                .where(Reservation.id == reservation.id, Reservation.status == before)
                .values(status=after, version=Reservation.version + 1)
                .returning(Reservation.id)
                .execution_options(synchronize_session=False)
            ).first()
            if taken is None:
                continue
            if deltas:
                session.execute(
                    update(PledgeLine)
                    .where(PledgeLine.id == reservation.pledge_line_id)
                    .values(**{name: getattr(PledgeLine, name) + d for name, d in deltas.items()})
                    .execution_options(synchronize_session=False)
                )
                line = _line_after(session, reservation.pledge_line_id)
                _bump_pledge(session, line.pledge_id)
                moved += 1
            break
    if moved:
        _announce_pledges_of(session, outbox, shipment)
    return moved


def _announce_pledges_of(session: Session, outbox: Outbox, shipment: dict[str, Any]) -> None:
    line_ids = [item["pledge_line_id"] for item in shipment["lines"]]
    pledge_ids = set(
        session.scalars(select(PledgeLine.pledge_id).where(PledgeLine.id.in_(line_ids)))
    )
    for pledge_id in pledge_ids:
        pledge = session.get(Pledge, pledge_id, populate_existing=True)
        assert pledge is not None
        for line in pledge.lines:
            session.refresh(line)
        status = domain.pledge_status(
            [line.status for line in pledge.lines], pledge.status == "cancelled"
        )
        if status != pledge.status:
            session.execute(
                update(Pledge)
                .where(Pledge.id == pledge.id)
                .values(status=status)
                .execution_options(synchronize_session=False)
            )
            session.refresh(pledge)
        announce(session, outbox, pledge, "pledge.amended", "shipment " + shipment["status"])


# Beat work -------------------------------------------------------------------------------------


def expire_perishables(session: Session, outbox: Outbox, today: date) -> int:
    """Close lines past their best-before date and release what they had not shipped."""
    lines = session.scalars(
        select(PledgeLine).where(
            PledgeLine.best_before < today,
            PledgeLine.status.not_in(domain.FINAL_LINE_STATUSES | {"shipped"}),
        )
    ).all()
    pledges: set[uuid.UUID] = set()
    for line in lines:
        for reservation in session.scalars(
            select(Reservation).where(
                Reservation.pledge_line_id == line.id, Reservation.status == "active"
            )
        ).all():
            release_reservation(session, outbox, reservation, "past best-before")
        session.refresh(line)
        line.status = "expired"
        pledges.add(line.pledge_id)
    for pledge_id in pledges:
        pledge = session.get(Pledge, pledge_id, populate_existing=True)
        assert pledge is not None
        pledge.status = domain.pledge_status(
            [line.status for line in pledge.lines], pledge.status == "cancelled"
        )
        announce(session, outbox, pledge, "pledge.amended", "perishables expired")
    return len(lines)


def overdue_reservations(session: Session, now: datetime, limit: int = 500) -> list[Reservation]:
    return list(
        session.scalars(
            select(Reservation)
            .where(and_(Reservation.status == "active", Reservation.deadline < now))
            .order_by(Reservation.deadline)
            .limit(limit)
        )
    )


# A person's data ---------------------------------------------------------------------------


def erase_donor(
    session: Session, org_id: uuid.UUID, user_ids: list[uuid.UUID] | None = None
) -> int:
    """``org.erased``: drop the person's pickup addresses and coordinates from its
    pledges and the events kept about them, and the spreadsheets it uploaded. The
    region and every quantity stay, so all totals still add up. Returns the pledges
    touched."""
    from services.donations.models import ImportJob, messaging

    pledges = list(session.scalars(select(Pledge).where(Pledge.org_id == org_id)))
    for pledge in pledges:
        pledge.origin_address = None
        pledge.origin_lat = None
        pledge.origin_lon = None
        pledge.origin_contact_name = None
        pledge.origin_contact_phone = None
        pledge.notes = None
    ids = [str(p.id) for p in pledges]
    outbox = messaging.outbox
    if ids:
        for row in session.scalars(select(outbox).where(outbox.aggregate_id.in_(ids))):
            message = dict(row.message)
            payload = dict(message.get("payload") or {})
            if "origin" in payload:
                payload["origin"] = {"region": (payload["origin"] or {}).get("region")}
                message["payload"] = payload
                row.message = message
    for job in session.scalars(select(ImportJob).where(ImportJob.org_id == org_id)):
        # The uploaded file (names, addresses) goes; the job's counts stay.
        job.content = b""
        job.filename = "erased"
        job.errors = []
        job.defaults = {k: v for k, v in (job.defaults or {}).items() if k == "origin_region"}
    # Answers kept for Idempotency-Keys (a pledge's holds its pickup address).
    keys = messaging.idempotency
    scopes = [f"org:{org_id}", *(f"user:{u}" for u in user_ids or ())]
    session.execute(delete(keys).where(keys.scope.in_(scopes)))
    return len(pledges)


def donor_personal_data(session: Session, org_id: uuid.UUID) -> dict[str, Any]:
    """What donations holds of a donor that may be a person's data: its pledges'
    pickup places and notes, and the spreadsheets it uploaded."""
    from services.donations.models import ImportJob

    pledges = session.scalars(
        select(Pledge).where(Pledge.org_id == org_id).order_by(Pledge.created_at, Pledge.id)
    )
    jobs = session.scalars(
        select(ImportJob).where(ImportJob.org_id == org_id).order_by(ImportJob.created_at)
    )
    return {
        "pledges": [
            {
                "id": str(p.id),
                "created_at": p.created_at.isoformat(),
                "origin": {
                    "address": p.origin_address,
                    "contact": contact_of(p.origin_contact_name, p.origin_contact_phone),
                    "region": p.origin_region,
                    "lat": p.origin_lat,
                    "lon": p.origin_lon,
                },
                "notes": p.notes,
                "anonymous": bool(p.anonymous),
            }
            for p in pledges
        ],
        "imports": [
            {"id": str(j.id), "filename": j.filename, "created_at": j.created_at.isoformat()}
            for j in jobs
        ],
    }
