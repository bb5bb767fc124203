"""Receipts: the recipient says, line by line, what arrived of a shipment.

Each shipment line is reported as ``accepted``, ``damaged`` and ``short``, which add up
to the line's quantity. The first receipt is ``sequence`` 1 and needs a delivered
shipment, which it moves to ``received``; a correction references the latest receipt,
takes the next sequence and replaces its figures. The unique (shipment, sequence) pair
makes two confirmations at once safe: only one of them can take a given number.

Effects are applied as the difference from the previous receipt (nothing, for the
first), so a correction is exact however often the figures change:

- the need line's ``received`` grows by the accepted quantity;
- damaged and short quantity leaves the need line's ``shipped``, so exactly that much is
  open to matching again (and matching of the item is asked for); a correction that
  lowers it takes it back, refused if matching has allocated it again meanwhile;
- the allocation becomes ``received``, the shipment line keeps the latest figures;
- ``receipt.confirmed`` goes out, and each need concerned is announced
  (``need.fulfilled`` once every line of it is received in full).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.dispatch.matching.service import request_matching
from services.dispatch.models import (
    Allocation,
    NeedLine,
    Receipt,
    ReceiptLine,
    Shipment,
    ShipmentLine,
)
from services.dispatch.needs import service as needs
from services.dispatch.shipments import service as shipments
from services.dispatch.transparency import totals as ledger
from shared.db import in_chunks, utcnow
from shared.errors import Conflict, RuleBroken
from shared.events import new_event
from shared.outbox import Outbox

PRODUCER = "dispatch"
# Allocation statuses a receipt may close: on the way or arrived (already received,
# for a correction).
RECEIVABLE_ALLOCATION_STATUSES = ("shipped", "delivered", "received")


@dataclass(frozen=True)
class Counted:
    """What the recipient reports of one shipment line."""

    accepted: int
    damaged: int
    short: int

    @property
    def back_to_matching(self) -> int:
        return self.damaged + self.short

    @property
    def total(self) -> int:
        return self.accepted + self.damaged + self.short


# Rules, free of the database -------------------------------------------------------------


def check_lines(
    quantities: Mapping[uuid.UUID, int], lines: list[dict[str, Any]]
) -> tuple[dict[uuid.UUID, Counted], dict[str, list[str]]]:
    """Every line of the shipment exactly once, figures that add up to its quantity.

    ``quantities`` maps each shipment line's id to what it carried. Returns the figures
    by shipment line and the errors by field (``lines.0.shipment_line_id``, ...)."""
    errors: dict[str, list[str]] = {}
    counted: dict[uuid.UUID, Counted] = {}
    for index, line in enumerate(lines):
        prefix = f"lines.{index}"
        line_id = line["shipment_line_id"]
        figures = Counted(line["accepted"], line["damaged"], line["short"])
        bad = False
        for name in ("accepted", "damaged", "short"):
            if getattr(figures, name) < 0:
                errors.setdefault(f"{prefix}.{name}", []).append("Must be 0 or more.")
                bad = True
        if line_id not in quantities:
            errors.setdefault(f"{prefix}.shipment_line_id", []).append(
                "Not a line of this shipment."
            )
            continue
        if line_id in counted:
            errors.setdefault(f"{prefix}.shipment_line_id", []).append(
                "This line is already reported above; report each line once."
            )
            continue
        counted[line_id] = figures
        if not bad and figures.total != quantities[line_id]:
            errors.setdefault(prefix, []).append(
                f"accepted + damaged + short is {figures.total}; the line carried "
                f"{quantities[line_id]}."
            )
    missing = [str(line_id) for line_id in quantities if line_id not in counted]
    if missing and not errors:
        errors["lines"] = [
            "Report every line of the shipment; missing: " + ", ".join(sorted(missing))
        ]
    return counted, errors


# The service ----------------------------------------------------------------------------


def latest_receipt(session: Session, shipment_id: uuid.UUID) -> Receipt | None:
    return session.scalar(
        select(Receipt)
        .where(Receipt.shipment_id == shipment_id)
        .order_by(Receipt.sequence.desc())
        .limit(1)
    )


def receipts_of(session: Session, shipment_id: uuid.UUID) -> list[Receipt]:
    return list(
        session.scalars(
            select(Receipt).where(Receipt.shipment_id == shipment_id).order_by(Receipt.sequence)
        )
    )


def _sequence(shipment: Shipment, latest: Receipt | None, corrects: uuid.UUID | None) -> int:
    """The sequence the new receipt takes, if it may be made now."""
    if corrects is None:
        if latest is not None:
            raise Conflict(
                "This shipment's receipt is already confirmed; to change it, send a "
                f"correction with corrects={latest.id}.",
                slug="receipt-already-confirmed",
                receipt_id=str(latest.id),
            )
        if shipment.status != "delivered":
            raise Conflict(
                f"The shipment is {shipment.status}; its receipt is confirmed once it "
                "is delivered.",
                slug="shipment-not-delivered",
                shipment_status=shipment.status,
            )
        return 1
    if latest is None:
        raise RuleBroken(
            "There is no receipt of this shipment to correct.",
            errors={"corrects": ["No receipt of this shipment has this id."]},
        )
    if corrects != latest.id:
        raise Conflict(
            f"A correction replaces the latest receipt, {latest.id}.",
            slug="receipt-not-latest",
            errors={"corrects": [f"Correct the latest receipt, {latest.id}."]},
            receipt_id=str(latest.id),
        )
    if shipment.status != "received":
        raise Conflict(
            f"The shipment is {shipment.status}; only a received shipment's receipt is corrected.",
            slug="shipment-not-received",
            shipment_status=shipment.status,
        )
    return latest.sequence + 1


def _apply_need_line(session: Session, lines: list[tuple[int, ShipmentLine, Counted]]) -> int:
    """Move one need line by the difference the receipt makes on all its shipment lines
    (``(index in the receipt, line, new figures)``; inside the caller's
    ``ledger.moves``), in one conditional update, so that the outcome does not depend on
    the order of the lines (damage moved from one line to another nets out). Returns
    how much more goes back to matching (less than 0: taken back)."""
    received = sum(new.accepted - line.accepted for _, line, new in lines)
    reopened = sum(new.back_to_matching - (line.damaged + line.short) for _, line, new in lines)
    if not (received or reopened):
        return 0
    need_line_id = lines[0][1].need_line_id
    moved = session.execute(
        update(NeedLine)
        .where(
            NeedLine.id == need_line_id,
            NeedLine.shipped - reopened >= 0,
            NeedLine.received + received >= 0,
            # Taking back quantity that was reopened: only if matching has not
            # committed it elsewhere meanwhile.
            NeedLine.proposed + NeedLine.reserved + NeedLine.shipped - reopened
            <= NeedLine.quantity,
        )
        .values(shipped=NeedLine.shipped - reopened, received=NeedLine.received + received)
        .returning(NeedLine.id)
        .execution_options(synchronize_session=False)
    ).first()
    if moved is None:
        raise Conflict(
            "The quantity reported damaged or short has been allocated again since; "
            "it cannot be taken back now.",
            slug="receipt-quantity-reallocated",
            errors=_taken_back_errors(lines, _uncommitted(session, need_line_id)),
        )
    return reopened


def _taken_back_errors(
    lines: list[tuple[int, ShipmentLine, Counted]], free: int
) -> dict[str, list[str]]:
    """Of the lines of one need line, those taking back quantity they had reported
    damaged or short, each with what it can accept now: what matching has not committed
    of the need line (``free``) and what the other lines of it reopen in the same
    receipt, shared by the lines taking back."""
    room = free + sum(
        max(0, new.back_to_matching - (line.damaged + line.short)) for _, line, new in lines
    )
    takers = [
        (index, line)
        for index, line, new in lines
        if new.back_to_matching < line.damaged + line.short
    ]
    if len(takers) == 1:
        ((index, line),) = takers
        most = line.accepted + min(room, line.damaged + line.short)
        return {f"lines.{index}.accepted": [f"At most {most} can be accepted now."]}
    named = ", ".join(str(index) for index, _ in takers)
    return {
        f"lines.{index}.accepted": [
            f"Lines {named} together can take back at most {room} of what they reported "
            "damaged or short."
        ]
        for index, _ in takers
    } or {f"lines.{lines[0][0]}": ["These figures cannot be applied now."]}


def _uncommitted(session: Session, need_line_id: uuid.UUID) -> int:
    """How much of the need line matching has not committed (what can be taken back
    of what a receipt reopened)."""
    need_line = session.get(NeedLine, need_line_id, populate_existing=True)
    if need_line is None:
        return 0
    return max(0, need_line.quantity - need_line.proposed - need_line.reserved - need_line.shipped)


def confirm_receipt(
    session: Session,
    outbox: Outbox,
    shipment: Shipment,
    *,
    lines: list[dict[str, Any]],
    corrects: uuid.UUID | None = None,
    note: str | None = None,
    org_id: uuid.UUID,
    actor_id: uuid.UUID | None = None,
    now: datetime | None = None,
) -> Receipt:
    """Confirm (or correct) the receipt of ``shipment``, which the caller has locked.

    ``lines`` are ``{"shipment_line_id", "accepted", "damaged", "short"}``; ``org_id``
    is the organisation confirming (the recipient, also when a coordinator acts for
    it). Raises a 409 problem when the shipment is not there yet or the receipt was
    already made, a 422 naming each field at fault."""
    now = now or utcnow()
    latest = latest_receipt(session, shipment.id)
    sequence = _sequence(shipment, latest, corrects)
    by_id = {line.id: line for line in shipment.lines}
    counted, errors = check_lines({i: line.quantity for i, line in by_id.items()}, lines)
    if errors:
        raise RuleBroken("The receipt does not match the shipment.", errors=errors)

    receipt = Receipt(
        id=uuid.uuid4(),
        shipment_id=shipment.id,
        sequence=sequence,
        corrects_id=latest.id if corrects is not None and latest is not None else None,
        org_id=org_id,
        created_by=actor_id,
        created_at=now,
        note=note,
        lines=[
            ReceiptLine(
                id=uuid.uuid4(),
                shipment_line_id=line_id,
                accepted=figures.accepted,
                damaged=figures.damaged,
                short=figures.short,
            )
            for line_id, figures in counted.items()
        ],
    )
    session.add(receipt)
    try:
        # Taken first: a concurrent confirmation of the same sequence stops here,
        # before anything else is written.
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(
            "Another receipt of this shipment was confirmed at the same moment; reload "
            "it and send a correction if needed.",
            slug="receipt-already-confirmed",
        ) from None

    reopened_items: set[str] = set()
    index_of = {line["shipment_line_id"]: i for i, line in enumerate(lines)}
    of_need_line: dict[uuid.UUID, list[tuple[int, ShipmentLine, Counted]]] = {}
    for line_id, figures in counted.items():
        line = by_id[line_id]
        of_need_line.setdefault(line.need_line_id, []).append((index_of[line_id], line, figures))
    # Every line's rows moved in one ledger step (read before and after once, the
    # totals' rows written once, in key order): each need line once, in id order (the
    # order other writers lock them in), then the shipment lines and allocations in
    # one statement each.
    with ledger.moves(
        session,
        allocations=[by_id[line_id].allocation_id for line_id in counted],
        shipment_lines=list(counted),
    ):
        for need_line_id in sorted(of_need_line):
            group = of_need_line[need_line_id]
            if _apply_need_line(session, group) > 0:
                reopened_items.add(group[0][1].item)
        session.execute(
            update(ShipmentLine),
            [
                {"id": line_id, "accepted": f.accepted, "damaged": f.damaged, "short": f.short}
                for line_id, f in sorted(counted.items())
            ],
        )
        for chunk in in_chunks(sorted({by_id[i].allocation_id for i in counted})):
            session.execute(
                update(Allocation)
                .where(
                    Allocation.id.in_(chunk),
                    Allocation.status.in_(RECEIVABLE_ALLOCATION_STATUSES),
                )
                .values(status="received", updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
    need_ids = {by_id[line_id].need_id for line_id in counted}

    if sequence == 1:
        shipments.record_update(
            session,
            outbox,
            shipment,
            status="received",
            # Never before the delivery it follows, whatever the clocks say.
            occurred_at=max(now, shipment.status_at),
            actor_id=actor_id,
            actor_org_id=org_id,
            note=note,
            source="receipt",
            # The receipts API read it under its row lock.
            locked=True,
        )
    outbox.add(
        session,
        new_event(
            "receipt.confirmed",
            receipt_payload(receipt, shipment, counted, by_id),
            producer=PRODUCER,
            aggregate_id=receipt.id,
            aggregate_version=1,
        ),
    )
    for need_id in sorted(need_ids):
        needs.settle_received(session, outbox, need_id)
    for item in sorted(reopened_items):
        request_matching(session, item)
    return receipt


def receipt_payload(
    receipt: Receipt,
    shipment: Shipment,
    counted: Mapping[uuid.UUID, Counted],
    by_id: Mapping[uuid.UUID, ShipmentLine],
) -> dict[str, Any]:
    return {
        "receipt_id": receipt.id,
        "shipment_id": shipment.id,
        "sequence": receipt.sequence,
        "corrects": receipt.corrects_id,
        "recipient_org_id": shipment.recipient_org_id,
        "donor_org_id": shipment.donor_org_id,
        "donor_anonymous": bool(shipment.donor_anonymous),
        "confirmed_at": receipt.created_at,
        "lines": [
            {
                "shipment_line_id": line_id,
                "allocation_id": by_id[line_id].allocation_id,
                "pledge_line_id": by_id[line_id].pledge_line_id,
                "need_line_id": by_id[line_id].need_line_id,
                "item": by_id[line_id].item,
                "quantity": by_id[line_id].quantity,
                "accepted": figures.accepted,
                "damaged": figures.damaged,
                "short": figures.short,
            }
            for line_id, figures in counted.items()
        ],
    }


def receipt_status(receipts: Iterable[Receipt]) -> str:
    """``pending`` before any receipt, ``confirmed`` after the first, ``corrected``
    once a correction replaced it."""
    latest = max((r.sequence for r in receipts), default=0)
    return "pending" if latest == 0 else "confirmed" if latest == 1 else "corrected"
