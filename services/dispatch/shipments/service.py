"""The service layer of shipments: consolidation of reserved allocations, status updates
with their history, their effects on the allocation saga, and the overdue watch.

Every function works inside the caller's transaction and writes its events to the
outbox there. A status update locks its shipment's row first, so concurrent updates of
one shipment (two scanners, a receipt) take turns and each sees the other's result;
allocations and need lines move only by conditional UPDATEs (allocations.py), so an
update delivered twice, or racing a cancellation, moves nothing twice.

``shipment.created`` and ``shipment.status_changed`` carry the shipment's version as
their ``aggregate_version``: donations applies them in that order and ignores an older
one arriving after a newer one.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from marshmallow import Schema, fields, post_dump
from sqlalchemy import Table, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, lazyload, object_session

from services.dispatch.allocations import service as saga
from services.dispatch.matching.service import request_matching
from services.dispatch.models import (
    Allocation,
    Need,
    Organisation,
    Place,
    Shipment,
    ShipmentEvent,
    ShipmentLine,
    SupplyLine,
    TrackingCounter,
)
from services.dispatch.shipments import domain
from shared.contacts import contact_of
from shared.db import in_chunks, utcnow
from shared.display_fields import DisplayQuantities
from shared.errors import Conflict, DomainError, Forbidden, RuleBroken
from shared.events import new_event, new_events
from shared.identity import Identity, current_identity
from shared.outbox import Outbox
from shared.places import normalised_address
from shared.privacy import donor_hidden, origin_for, without_donor

PRODUCER = "dispatch"
# How far ahead of our clock an update may claim to have happened (scanner clocks drift).
DEFAULT_CLOCK_SKEW = timedelta(minutes=5)
DEFAULT_STALE_AFTER = timedelta(hours=24)
# Shipments flagged by one run of the overdue sweep; the next run takes the rest.
SWEEP_BATCH = 500
INACTIVE_ORG_STATUSES = ("suspended", "merged")
# Columns re-read under the row lock before an update is judged.
_STATE_COLUMNS = [
    "status",
    "status_at",
    "last_event_at",
    "logistics_org_id",
    "overdue_at",
    "overdue_reason",
    "updated_at",
    "version",
]


# The JSON shape ---------------------------------------------------------------------------


class ShipmentLineSchema(DisplayQuantities, Schema):
    display_fields = ("quantity", "accepted", "damaged", "short")
    display_packed = "quantity"

    id = fields.UUID()
    line_no = fields.Integer()
    allocation_id = fields.UUID()
    pledge_id = fields.UUID()
    pledge_line_id = fields.UUID()
    need_id = fields.UUID()
    need_line_id = fields.UUID()
    item = fields.String()
    standard = fields.String(allow_none=True)
    quantity = fields.Integer(metadata={"description": "In the item's base unit"})
    pack_unit = fields.String(
        allow_none=True, metadata={"description": "box or case, as the donor packed it"}
    )
    pack_size = fields.Integer(
        allow_none=True, metadata={"description": "Base units in one box or case"}
    )
    accepted = fields.Integer(metadata={"description": "As the latest receipt says"})
    damaged = fields.Integer()
    short = fields.Integer()


class ShipmentEventSchema(Schema):
    id = fields.UUID()
    status = fields.String()
    previous_status = fields.String(
        allow_none=True, metadata={"description": "The status it followed, when applied"}
    )
    occurred_at = fields.AwareDateTime(metadata={"description": "When it happened"})
    recorded_at = fields.AwareDateTime(metadata={"description": "When it was recorded"})
    location = fields.String(allow_none=True)
    note = fields.String(allow_none=True)
    actor_id = fields.UUID(allow_none=True)
    actor_org_id = fields.UUID(allow_none=True)
    source = fields.String(metadata={"description": "api, batch, receipt or system"})
    applied = fields.Boolean(
        metadata={"description": "False for a late update: kept in its place, status unmoved"}
    )


class ShipmentSchema(Schema):
    id = fields.UUID()
    status = fields.String()
    status_at = fields.AwareDateTime(metadata={"description": "When the status happened"})
    lines = fields.List(fields.Nested(ShipmentLineSchema))
    origin = fields.Dict(
        metadata={
            "description": "region, address, lat, lon: all of it for the donor, "
            "coordinators and the carrier; the region for anyone else"
        }
    )
    destination = fields.Dict(metadata={"description": "region, lat, lon, address"})
    donor_org_id = fields.UUID(
        allow_none=True,
        metadata={
            "description": "None when the donor is anonymous (except to itself and "
            "coordinators), as are its pledges' ids on the lines"
        },
    )
    donor_anonymous = fields.Boolean(metadata={"description": "The donor asked not to be named"})
    donor_name = fields.Method(
        "_donor_name",
        allow_none=True,
        metadata={"description": "The donor's name (None when it is anonymous to you)"},
    )
    recipient_org_id = fields.UUID()
    logistics_org_id = fields.UUID(allow_none=True)
    tracking_number = fields.String(
        allow_none=True,
        metadata={"description": "aidlink's own, printed and scanned: AL-2020-000123"},
    )
    tracking_ref = fields.String(
        allow_none=True, metadata={"description": "The logistics company's waybill number"}
    )
    eta = fields.AwareDateTime(allow_none=True)
    last_event_at = fields.AwareDateTime(
        metadata={"description": "When the last update (late ones too) was recorded"}
    )
    overdue = fields.Method("_overdue")
    overdue_at = fields.AwareDateTime(allow_none=True)
    overdue_reason = fields.String(allow_none=True)
    history = fields.List(
        fields.Nested(ShipmentEventSchema),
        metadata={"description": "Every update, ordered by when it happened"},
    )
    created_by = fields.UUID(allow_none=True)
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    version = fields.Integer()

    def _overdue(self, shipment: Shipment) -> bool:
        return shipment.overdue_at is not None

    def _donor_name(self, shipment: Shipment) -> str | None:
        session = object_session(shipment)
        donor = session.get(Organisation, shipment.donor_org_id) if session else None
        return donor.name if donor is not None else None

    @post_dump(pass_original=True)
    def _as_the_caller_may_see_it(
        self, data: dict[str, Any], shipment: Shipment, **_kw: Any
    ) -> dict[str, Any]:
        """Where the goods leave from is the donor's, the coordinators' and the carrier's
        business (the recipient sees the region); an anonymous donor is named to
        itself and coordinators only (see shared.privacy)."""
        identity = current_identity()
        org = identity.org_id
        carries_it = org is not None and org == shipment.logistics_org_id
        if not (identity.is_coordinator or org == shipment.donor_org_id or carries_it):
            data["origin"] = origin_for(data.get("origin"), carries_it=False)
        if not (identity.is_coordinator or org == shipment.recipient_org_id or carries_it):
            # Whom to call at the delivery is the recipient's and its carrier's business.
            data["destination"] = {
                k: v for k, v in (data.get("destination") or {}).items() if k != "contact"
            }
        if donor_hidden(
            anonymous=bool(shipment.donor_anonymous),
            donor_org_id=shipment.donor_org_id,
            viewer_org_id=org,
            viewer_is_coordinator=identity.is_coordinator,
        ):
            hidden: dict[str, Any] = without_donor(data)
            return hidden
        return data


# Who may see and change what --------------------------------------------------------------


def can_see(identity: Identity, shipment: Shipment) -> bool:
    """Coordinators see every shipment; the donor, the recipient and the logistics
    company assigned to it see it too."""
    if identity.is_coordinator:
        return True
    org = identity.org_id
    if org is None:
        return False
    return (
        (identity.has_role("logistics") and shipment.logistics_org_id == org)
        or (identity.has_role("donor") and shipment.donor_org_id == org)
        or (identity.has_role("recipient") and shipment.recipient_org_id == org)
    )


def can_update(identity: Identity, shipment: Shipment) -> bool:
    """Coordinators, and the active logistics company assigned to the shipment."""
    if identity.is_coordinator:
        return True
    return (
        identity.has_role("logistics")
        and identity.org_active
        and identity.org_id is not None
        and shipment.logistics_org_id == identity.org_id
    )


def visible_to(identity: Identity) -> Any:
    """A WHERE clause for the shipments ``identity`` may see (None: all of them)."""
    if identity.is_coordinator:
        return None
    org = identity.org_id
    clauses = []
    if org is not None and identity.has_role("logistics"):
        clauses.append(Shipment.logistics_org_id == org)
    if org is not None and identity.has_role("donor"):
        clauses.append(Shipment.donor_org_id == org)
    if org is not None and identity.has_role("recipient"):
        clauses.append(Shipment.recipient_org_id == org)
    return or_(*clauses) if clauses else Shipment.id.is_(None)


# Where from and where to ------------------------------------------------------------------


def _key(*parts: Any) -> str:
    raw = json.dumps([str(p) if p is not None else None for p in parts])
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class Route:
    origin: dict[str, Any]
    destination: dict[str, Any]
    origin_key: str
    destination_key: str
    donor_org_id: uuid.UUID
    recipient_org_id: uuid.UUID
    donor_anonymous: bool = False


def route_of(session: Session, allocation: Allocation) -> Route:
    """Where an allocation leaves from (the donor and its pledge's origin) and goes to
    (the recipient and its need's location)."""
    supply = session.get(SupplyLine, allocation.pledge_line_id)
    need = session.get(Need, allocation.need_id)
    return _route(allocation, supply, need, _places_of(session, [supply], [need]))


def _places_of(
    session: Session, supplies: Iterable[SupplyLine | None], needs: Iterable[Need | None]
) -> dict[uuid.UUID, Place]:
    ids = {x.place_id for x in [*supplies, *needs] if x is not None and x.place_id}
    if not ids:
        return {}
    return {p.id: p for p in session.scalars(select(Place).where(Place.id.in_(ids)))}


def place_key(
    party: uuid.UUID,
    place_id: uuid.UUID | None,
    region: str | None,
    address: str | None,
    lat: float | None,
    lon: float | None,
) -> tuple[Any, ...]:
    """What makes two origins (or destinations) of one party the same: the named place;
    else the address, however it is spaced or punctuated, with or without coordinates
    (a pledge by API with them and one by spreadsheet without are one warehouse); else
    the region and coordinates."""
    if place_id is not None:
        return ("place", party, place_id)
    written = normalised_address(address)
    if written:
        return ("address", party, region, written)
    return ("point", party, region, lat, lon)


def _place_facts(place: Place | None) -> dict[str, Any] | None:
    """What the driver needs of a named place beyond its address and contact."""
    if place is None:
        return None
    return {
        "id": str(place.id),
        "name": place.name,
        "kind": place.kind,
        "opening_hours": place.opening_hours,
        "access_notes": place.access_notes,
    }


def _routes(session: Session, allocations: Sequence[Allocation]) -> dict[uuid.UUID, Route]:
    """:func:`route_of` of each allocation, by its id, reading their supply lines and
    needs in two statements."""
    supplies = {
        row.id: row
        for row in session.scalars(
            select(SupplyLine).where(SupplyLine.id.in_({a.pledge_line_id for a in allocations}))
        )
    }
    needs = {
        row.id: row
        for row in session.scalars(
            select(Need).where(Need.id.in_({a.need_id for a in allocations}))
        )
    }
    places = _places_of(session, supplies.values(), needs.values())
    return {
        a.id: _route(a, supplies.get(a.pledge_line_id), needs.get(a.need_id), places)
        for a in allocations
    }


def _route(
    allocation: Allocation,
    supply: SupplyLine | None,
    need: Need | None,
    places: dict[uuid.UUID, Place],
) -> Route:
    origin_place = places.get(supply.place_id) if supply and supply.place_id else None
    need_place = places.get(need.place_id) if need and need.place_id else None
    origin: dict[str, Any] = {
        "place": _place_facts(origin_place),
        "region": supply.region if supply else None,
        "address": supply.address if supply else None,
        "contact": contact_of(supply.contact_name, supply.contact_phone) if supply else None,
        "lat": supply.lat if supply else None,
        "lon": supply.lon if supply else None,
    }
    destination: dict[str, Any] = {
        "place": _place_facts(need_place),
        "region": need.region if need else None,
        "address": need.address if need else None,
        "contact": contact_of(need.contact_name, need.contact_phone) if need else None,
        "lat": need.lat if need else None,
        "lon": need.lon if need else None,
    }
    anonymous = bool(allocation.donor_anonymous)
    # An anonymous donor's goods never travel with its named ones: together they would
    # name it.
    origin_parts = place_key(
        allocation.donor_org_id,
        supply.place_id if supply else None,
        origin["region"],
        origin["address"],
        origin["lat"],
        origin["lon"],
    )
    return Route(
        origin=origin,
        destination=destination,
        origin_key=_key(*origin_parts, "anonymous") if anonymous else _key(*origin_parts),
        destination_key=_key(
            *place_key(
                allocation.recipient_org_id,
                need.place_id if need else None,
                destination["region"],
                destination["address"],
                destination["lat"],
                destination["lon"],
            )
        ),
        donor_org_id=allocation.donor_org_id,
        recipient_org_id=allocation.recipient_org_id,
        donor_anonymous=anonymous,
    )


# Events -----------------------------------------------------------------------------------


def _lines_payload(shipment: Shipment) -> list[dict[str, Any]]:
    return [
        {
            "allocation_id": line.allocation_id,
            "pledge_line_id": line.pledge_line_id,
            "quantity": line.quantity,
        }
        for line in shipment.lines
    ]


def _announce(
    session: Session,
    outbox: Outbox,
    shipment: Shipment,
    type: str,
    *,
    previous_status: str | None,
    occurred_at: datetime,
    location: str | None = None,
    flush: bool = True,
) -> None:
    if flush:
        session.flush()
    outbox.add(
        session,
        new_event(
            type,
            {
                "shipment_id": shipment.id,
                "status": shipment.status,
                "previous_status": previous_status,
                "occurred_at": occurred_at,
                "location": location,
                "lines": _lines_payload(shipment),
                **parties(shipment),
            },
            producer=PRODUCER,
            aggregate_id=shipment.id,
            aggregate_version=shipment.version,
        ),
    )


# Consolidation ----------------------------------------------------------------------------


TRACKING_PREFIX = "AL"
_TRACKING_NUMBER = re.compile(r"^AL-\d{4}-\d{6,}$", re.IGNORECASE)


def next_tracking_numbers(session: Session, year: int, count: int) -> list[str]:
    """The next ``count`` tracking numbers of ``year`` (AL-2020-000001, ...), taken by
    one statement in the caller's transaction (the counter moves by ``count`` at once;
    its row is locked until the caller commits, so no two shipments share a number)."""
    if count < 1:
        return []
    for _attempt in range(3):
        last = session.execute(
            update(TrackingCounter)
            .where(TrackingCounter.year == year)
            .values(last=TrackingCounter.last + count)
            .returning(TrackingCounter.last)
            .execution_options(synchronize_session=False)
        ).scalar()
        if last is None:
            try:
                with session.begin_nested():
                    session.execute(insert(TrackingCounter).values(year=year, last=count))
                last = count
            except IntegrityError:
                continue  # another transaction began the year: take the next ones
        return [f"{TRACKING_PREFIX}-{year}-{n:06d}" for n in range(last - count + 1, last + 1)]
    raise RuntimeError(f"could not take a tracking number for {year}")


def is_tracking_number(text: str) -> bool:
    return bool(_TRACKING_NUMBER.match(text.strip()))


def find_shipment(
    session: Session, reference: str | uuid.UUID, identity: Identity | None = None
) -> Shipment | None:
    """A shipment by its id, its tracking number, or the logistics company's own
    waybill number (when only one of the shipments ``identity`` may see has it)."""
    if isinstance(reference, uuid.UUID):
        return session.get(Shipment, reference)
    text = str(reference).strip()
    try:
        return session.get(Shipment, uuid.UUID(text))
    except ValueError:
        pass
    if is_tracking_number(text):
        return session.scalar(select(Shipment).where(Shipment.tracking_number == text.upper()))
    stmt = select(Shipment).where(Shipment.tracking_ref == text)
    visible = visible_to(identity) if identity is not None else None
    if visible is not None:
        stmt = stmt.where(visible)
    found = session.scalars(stmt.limit(2)).all()
    return found[0] if len(found) == 1 else None


def parties(shipment: Shipment) -> dict[str, Any]:
    """Who a shipment's events concern (for webhooks), and whether its donor is to be
    left unnamed to the others."""
    return {
        "donor_org_id": shipment.donor_org_id,
        "donor_anonymous": bool(shipment.donor_anonymous),
        "recipient_org_id": shipment.recipient_org_id,
        "logistics_org_id": shipment.logistics_org_id,
    }


def _line_values(
    allocation: Allocation, supply: SupplyLine | None, line_no: int, shipment_id: uuid.UUID
) -> dict[str, Any]:
    """A shipment line's columns for ``allocation``, packed as its ``supply`` line is."""
    return {
        "id": uuid.uuid4(),
        "shipment_id": shipment_id,
        "line_no": line_no,
        "allocation_id": allocation.id,
        "pledge_id": allocation.pledge_id,
        "pledge_line_id": allocation.pledge_line_id,
        "need_id": allocation.need_id,
        "need_line_id": allocation.need_line_id,
        "item": allocation.item,
        "standard": supply.standard if supply else None,
        "quantity": allocation.quantity,
        "pack_unit": supply.pack_unit if supply else None,
        "pack_size": supply.pack_size if supply else None,
        "accepted": 0,
        "damaged": 0,
        "short": 0,
    }


def _lock_destination(session: Session, *recipient_org_ids: uuid.UUID) -> None:
    """Planning for one recipient takes turns (on PostgreSQL, by the recipient's row,
    several in id order; SQLite writers take turns anyway), so two reservations handled
    at once by two workers join one planned shipment instead of opening one each."""
    session.execute(
        select(Organisation.id)
        .where(Organisation.id.in_(sorted(set(recipient_org_ids))))
        .order_by(Organisation.id)
        .with_for_update()
    )


def plan_allocation(
    session: Session, outbox: Outbox, allocation: Allocation, *, now: datetime | None = None
) -> uuid.UUID | None:
    """Put a just-reserved allocation on the planned shipment of its origin and
    destination, opening one (``shipment.created``) if there is none. An allocation
    already on a shipment stays where it is. Returns the shipment's id."""
    return plan_allocations(session, outbox, [allocation], now=now).get(allocation.id)


def plan_allocations(
    session: Session,
    outbox: Outbox,
    allocations: Sequence[Allocation],
    *,
    now: datetime | None = None,
) -> dict[uuid.UUID, uuid.UUID]:
    """:func:`plan_allocation` for several just-reserved allocations at once, in a
    handful of statements whatever their number and however many lines the planned
    shipments already carry: each joins the planned shipment of its route, and those
    of a route without one open one shipment together. The shipments are written as
    rows (no shipment is loaded with its lines and history). Returns the id of the
    shipment each allocation was put on, by allocation id."""
    todo = [a for a in allocations if a.status == "reserved"]
    if not todo:
        return {}
    now = now or utcnow()
    on_a_shipment = set(
        session.scalars(
            select(ShipmentLine.allocation_id).where(
                ShipmentLine.allocation_id.in_([a.id for a in todo])
            )
        )
    )
    todo = [a for a in todo if a.id not in on_a_shipment]
    if not todo:
        return {}
    routes = _routes(session, todo)
    # The supply lines the new shipment lines copy their packing from, read at once.
    held = {
        supply.id: supply
        for chunk in in_chunks(sorted({a.pledge_line_id for a in todo}))
        for supply in session.scalars(select(SupplyLine).where(SupplyLine.id.in_(chunk)))
    }
    _lock_destination(session, *(r.recipient_org_id for r in routes.values()))
    keys = {(r.origin_key, r.destination_key) for r in routes.values()}
    planned: dict[tuple[str, str], uuid.UUID] = {}
    for shipment_id, origin_key, destination_key in session.execute(
        select(Shipment.id, Shipment.origin_key, Shipment.destination_key)
        .where(
            Shipment.status == "planned",
            Shipment.origin_key.in_(sorted({k[0] for k in keys})),
            Shipment.destination_key.in_(sorted({k[1] for k in keys})),
        )
        .order_by(Shipment.created_at, Shipment.id)
        .with_for_update()
    ):
        key = (origin_key, destination_key)
        if key in keys:
            planned.setdefault(key, shipment_id)
    last_no: dict[uuid.UUID, int] = {
        shipment_id: int(top or 0)
        for shipment_id, top in session.execute(
            select(ShipmentLine.shipment_id, func.max(ShipmentLine.line_no))
            .where(ShipmentLine.shipment_id.in_(sorted(set(planned.values()))))
            .group_by(ShipmentLine.shipment_id)
        )
    }
    placed: dict[uuid.UUID, uuid.UUID] = {}
    joining: list[dict[str, Any]] = []
    opening: dict[tuple[str, str], list[Allocation]] = {}
    for allocation in todo:
        route = routes[allocation.id]
        key = (route.origin_key, route.destination_key)
        joined = planned.get(key)
        if joined is None:
            opening.setdefault(key, []).append(allocation)
            continue
        last_no[joined] = last_no.get(joined, 0) + 1
        joining.append(
            _line_values(allocation, held.get(allocation.pledge_line_id), last_no[joined], joined)
        )
        placed[allocation.id] = joined
    if joining:
        session.execute(insert(cast(Table, ShipmentLine.__table__)), joining)
        # Its lines changed: a new version (its ETag), as any change of a shipment.
        session.execute(
            update(Shipment)
            .where(Shipment.id.in_(sorted(set(placed.values()))))
            .values(updated_at=now, version=Shipment.version + 1)
            .execution_options(synchronize_session=False)
        )
    numbers = next_tracking_numbers(session, now.year, len(opening))
    placed.update(
        _open_shipments(session, outbox, routes, list(opening.values()), numbers, held, now)
    )
    return placed


def _open_shipments(
    session: Session,
    outbox: Outbox,
    routes: dict[uuid.UUID, Route],
    groups: list[list[Allocation]],
    numbers: list[str],
    supplies: dict[uuid.UUID, SupplyLine],
    now: datetime,
    *,
    logistics_org_id: uuid.UUID | None = None,
    tracking_ref: str | None = None,
    eta: datetime | None = None,
    created_by: uuid.UUID | None = None,
) -> dict[uuid.UUID, uuid.UUID]:
    """A planned shipment for each group of allocations (one route each, its tracking
    number in ``numbers``), with its first history row and its ``shipment.created``,
    written as rows: the shipments, their lines, history rows and events each in one
    multi-row insert (a matching run's reservations open hundreds at once; a
    coordinator's consolidation, ``created_by``, one). Returns the id of the shipment
    each allocation is on, by allocation id."""
    if not groups:
        return {}
    shipments: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    payloads: list[dict[str, Any]] = []
    ids: list[uuid.UUID] = []
    on: dict[uuid.UUID, uuid.UUID] = {}
    stamp = now.isoformat()
    for group, number in zip(groups, numbers, strict=True):
        route = routes[group[0].id]
        shipment_id = uuid.uuid4()
        ids.append(shipment_id)
        shipments.append(
            {
                "id": shipment_id,
                "version": 1,
                "created_at": now,
                "updated_at": now,
                "status": "planned",
                "status_at": now,
                "last_event_at": now,
                "donor_org_id": route.donor_org_id,
                "donor_anonymous": route.donor_anonymous,
                "recipient_org_id": route.recipient_org_id,
                "logistics_org_id": logistics_org_id,
                "origin": route.origin,
                "destination": route.destination,
                "origin_key": route.origin_key,
                "destination_key": route.destination_key,
                "tracking_ref": tracking_ref,
                "tracking_number": number,
                "eta": eta,
                "created_by": created_by,
            }
        )
        for line_no, allocation in enumerate(group, start=1):
            on[allocation.id] = shipment_id
            lines.append(
                _line_values(
                    allocation, supplies.get(allocation.pledge_line_id), line_no, shipment_id
                )
            )
        history.append(
            {
                "id": uuid.uuid4(),
                "shipment_id": shipment_id,
                "status": "planned",
                "previous_status": None,
                "occurred_at": now,
                "recorded_at": now,
                "location": None,
                "note": "consolidated by a coordinator"
                if created_by
                else "consolidated on reservation",
                "actor_id": created_by,
                "actor_org_id": None,
                "source": "system",
                "applied": True,
            }
        )
        payloads.append(
            {
                "shipment_id": str(shipment_id),
                "status": "planned",
                "previous_status": None,
                "occurred_at": stamp,
                "location": None,
                "lines": [
                    {
                        "allocation_id": str(a.id),
                        "pledge_line_id": str(a.pledge_line_id),
                        "quantity": a.quantity,
                    }
                    for a in group
                ],
                "donor_org_id": str(route.donor_org_id),
                "donor_anonymous": bool(route.donor_anonymous),
                "recipient_org_id": str(route.recipient_org_id),
                "logistics_org_id": str(logistics_org_id) if logistics_org_id else None,
            }
        )
    session.execute(insert(cast(Table, Shipment.__table__)), shipments)
    session.execute(insert(cast(Table, ShipmentLine.__table__)), lines)
    session.execute(insert(cast(Table, ShipmentEvent.__table__)), history)
    outbox.add_many(
        session,
        new_events(
            "shipment.created", payloads, producer=PRODUCER, aggregate_ids=ids, aggregate_version=1
        ),
    )
    return on


def consolidate(
    session: Session,
    outbox: Outbox,
    *,
    allocation_ids: Sequence[uuid.UUID],
    logistics_org_id: uuid.UUID | None = None,
    tracking_ref: str | None = None,
    eta: datetime | None = None,
    created_by: uuid.UUID | None = None,
) -> Shipment:
    """A coordinator's consolidation: reserved allocations of one origin and one
    destination leave the planned shipments they were on for a new one. A planned
    shipment left empty is cancelled."""
    errors: dict[str, list[str]] = {}
    wanted = list(dict.fromkeys(allocation_ids))
    found: list[Allocation] = []
    for index, allocation_id in enumerate(wanted):
        allocation = session.get(Allocation, allocation_id, with_for_update=True)
        name = f"allocation_ids.{index}"
        if allocation is None:
            errors[name] = [f"No allocation {allocation_id}."]
            continue
        if allocation.status != "reserved":
            errors[name] = [
                f"The allocation is {allocation.status}; only reserved allocations are "
                "consolidated."
            ]
            continue
        carrier = session.scalar(
            select(Shipment)
            .join(ShipmentLine, ShipmentLine.shipment_id == Shipment.id)
            .where(ShipmentLine.allocation_id == allocation_id)
        )
        if carrier is not None and carrier.status != "planned":
            errors[name] = [f"It is on shipment {carrier.id}, which is {carrier.status}."]
            continue
        found.append(allocation)
    if not errors:
        routes = list(_routes(session, found).values())
        if len({(r.origin_key, r.destination_key) for r in routes}) > 1:
            errors["allocation_ids"] = [
                "The allocations do not share one origin and one destination."
            ]
    if logistics_org_id is not None:
        problem = logistics_org_problem(session, logistics_org_id)
        if problem:
            errors["logistics_org_id"] = [problem]
    if errors:
        raise RuleBroken("These allocations cannot be consolidated so.", errors=errors)
    route = routes[0]
    _lock_destination(session, route.recipient_org_id)
    left = set(
        session.scalars(
            select(ShipmentLine.shipment_id).where(ShipmentLine.allocation_id.in_(wanted))
        )
    )
    session.execute(
        delete(ShipmentLine)
        .where(ShipmentLine.allocation_id.in_(wanted))
        .execution_options(synchronize_session=False)
    )
    now = utcnow()
    supplies = {
        supply.id: supply
        for supply in session.scalars(
            select(SupplyLine).where(SupplyLine.id.in_({a.pledge_line_id for a in found}))
        )
    }
    [shipment_id] = set(
        _open_shipments(
            session,
            outbox,
            {allocation.id: route for allocation in found},
            [found],
            next_tracking_numbers(session, now.year, 1),
            supplies,
            now,
            logistics_org_id=logistics_org_id,
            tracking_ref=tracking_ref,
            eta=eta,
            created_by=created_by,
        ).values()
    )
    shipment = session.get_one(Shipment, shipment_id)
    for old_id in sorted(left):
        old = session.get(Shipment, old_id, populate_existing=True)
        if old is None:
            continue
        session.refresh(old, ["lines"])
        if old.lines:
            old.updated_at = now
            continue
        record_update(
            session,
            outbox,
            old,
            status="cancelled",
            occurred_at=now,
            note=f"its allocations were consolidated into shipment {shipment.id}",
            actor_id=created_by,
            source="system",
        )
    return shipment


def logistics_org_problem(session: Session, org_id: uuid.UUID) -> str | None:
    """What is wrong with assigning a shipment to ``org_id`` (None when nothing)."""
    org = session.get(Organisation, org_id)
    if org is None:
        return "The dispatch service does not know this organisation (yet)."
    if org.kind != "logistics_company":
        return f"A {org.kind} is not a logistics company."
    if org.status in INACTIVE_ORG_STATUSES:
        return f"The organisation is {org.status}."
    return None


def amend(session: Session, shipment: Shipment, data: dict[str, Any]) -> Shipment:
    """A coordinator assigns the logistics company, the tracking reference or the ETA.
    A new ETA clears an overdue flag the old one raised."""
    if shipment.status in domain.FINAL_STATUSES:
        raise Conflict(
            f"The shipment is {shipment.status}; it cannot be changed.",
            slug="shipment-final",
            current_status=shipment.status,
        )
    if data.get("logistics_org_id") is not None:
        problem = logistics_org_problem(session, data["logistics_org_id"])
        if problem:
            raise RuleBroken(
                "The logistics company cannot be assigned.",
                errors={"logistics_org_id": [problem]},
            )
    for name in ("logistics_org_id", "tracking_ref", "eta"):
        if name in data:
            setattr(shipment, name, data[name])
    if (
        "eta" in data
        and shipment.overdue_reason
        and shipment.overdue_reason.startswith(domain.PAST_ETA)
    ):
        shipment.overdue_at = None
        shipment.overdue_reason = None
    shipment.updated_at = utcnow()
    session.flush()
    return shipment


# Status updates ---------------------------------------------------------------------------


@dataclass
class UpdateOutcome:
    """``result`` is ``applied`` (the status moved), ``late`` (kept in the history, the
    status unmoved) or ``duplicate`` (recorded before: ``event`` is that record)."""

    result: str
    event: ShipmentEvent
    shipment: Shipment


def _utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise RuleBroken(
            "Give times with their zone, e.g. 2020-02-03T08:00:00Z.",
            errors={name: ["The time has no zone."]},
        )
    return value.astimezone(UTC)


def _as_given(moment: datetime, given: datetime) -> str:
    """``moment`` in ISO form, in the offset of ``given`` (a time as the caller sent it),
    to the second."""
    return moment.astimezone(given.tzinfo).isoformat(timespec="seconds")


def _refused(current: str, requested: str, why: str | None) -> Conflict:
    return Conflict(
        f"{why} (current status: {current}; requested: {requested})",
        slug="shipment-transition-refused",
        errors={"status": [why or "not allowed"]},
        current_status=current,
        requested_status=requested,
    )


def record_update(
    session: Session,
    outbox: Outbox,
    shipment: Shipment,
    *,
    status: str,
    occurred_at: datetime,
    location: str | None = None,
    note: str | None = None,
    actor_id: uuid.UUID | None = None,
    actor_org_id: uuid.UUID | None = None,
    source: str = "api",
    now: datetime | None = None,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
    locked: bool = False,
) -> UpdateOutcome:
    """Record one status update of a shipment.

    ``locked``: the caller read the shipment (and so its lines) under its row lock in
    this transaction; otherwise it is locked and its state read again here.

    The same status at the same moment again is a ``duplicate`` (recorded once). An
    update that happened before the current status is ``late``: kept in the history, the
    status unmoved. Otherwise the transition is checked (a 409 naming the current and
    requested status when impossible) and ``applied``: the status moves, the overdue
    flag clears, the allocations and need lines follow (see
    :func:`shipments_domain.effects`) and ``shipment.status_changed`` is emitted.
    """
    now = now or utcnow()
    if status not in domain.STATUSES:
        raise RuleBroken(
            f"{status!r} is not a shipment status.",
            errors={"status": [f"Use one of: {', '.join(domain.STATUSES)}."]},
        )
    if source not in domain.SOURCES:
        raise ValueError(f"unknown source {source!r}")
    given = occurred_at
    occurred_at = _utc(occurred_at, "occurred_at")
    if domain.too_far_ahead(occurred_at, now, clock_skew):
        # Said in the offset the update was given in: a scan in +08:00 is answered so.
        raise RuleBroken(
            "The update cannot have happened in the future.",
            errors={
                "occurred_at": [
                    f"{_as_given(occurred_at, given)} is ahead of {_as_given(now, given)}."
                ]
            },
        )
    created_at = shipment.created_at.astimezone(UTC) if shipment.created_at else None
    if created_at is not None and domain.before_it_existed(occurred_at, created_at, clock_skew):
        raise RuleBroken(
            "The update is dated before the shipment existed.",
            slug="update-before-shipment",
            errors={
                "occurred_at": [
                    f"{_as_given(occurred_at, given)} is before the shipment was created "
                    f"({_as_given(created_at, given)})."
                ]
            },
        )
    if not locked:
        lock_state(session, shipment)
    earlier = session.scalar(
        select(ShipmentEvent).where(
            ShipmentEvent.shipment_id == shipment.id,
            ShipmentEvent.status == status,
            ShipmentEvent.occurred_at == occurred_at,
        )
    )
    if earlier is not None:
        return UpdateOutcome("duplicate", earlier, shipment)
    current = shipment.status
    decision = domain.decide(current, shipment.status_at, status, occurred_at, source)
    if decision.outcome == "refused":
        raise _refused(current, status, decision.refused)
    applied = decision.outcome == "apply"
    actions = domain.effects(current, status) if applied else ()
    if domain.SHIP in actions and not shipment.lines:
        raise _refused(current, status, "The shipment carries nothing; it cannot leave.")
    event = ShipmentEvent(
        id=uuid.uuid4(),
        shipment_id=shipment.id,
        status=status,
        previous_status=current if applied else None,
        occurred_at=occurred_at,
        recorded_at=now,
        location=location,
        note=note,
        actor_id=actor_id,
        actor_org_id=actor_org_id,
        source=source,
        applied=applied,
    )
    session.add(event)
    shipment.last_event_at = now
    shipment.updated_at = now
    if applied:
        shipment.status = status
        shipment.status_at = occurred_at
        shipment.overdue_at = None
        shipment.overdue_reason = None
    session.flush()
    # The history is read again when next shown.
    session.expire(shipment, ["history"])
    if applied:
        _apply_effects(session, shipment, actions)
        _announce(
            session,
            outbox,
            shipment,
            "shipment.status_changed",
            previous_status=current,
            occurred_at=occurred_at,
            location=location,
        )
    return UpdateOutcome("applied" if applied else "late", event, shipment)


def _apply_effects(session: Session, shipment: Shipment, actions: tuple[str, ...]) -> None:
    """Move the shipment's allocations and their need lines' counters along, all of
    them at once (a shipment of many lines is a handful of statements, not a handful
    per line)."""
    rematch: set[str] = set()
    quantity = {line.allocation_id: line.quantity for line in shipment.lines}
    ids = list(quantity)

    def move(before: tuple[str, ...], after: str, reason: str | None = None) -> list[Any]:
        moved = saga.move_allocations(session, ids, before, after, reason)
        return [moved[i] for i in ids if i in moved]

    if domain.SHIP in actions:
        saga.adjust_counters_many(
            session,
            [
                (a, {"reserved": -quantity[a.id], "shipped": quantity[a.id]})
                for a in move(("reserved",), "shipped")
            ],
        )
    if domain.DELIVER in actions:
        move(("shipped",), "delivered")
    if domain.LOSE in actions or domain.RETURN in actions:
        after = "lost" if domain.LOSE in actions else "returned"
        moved = move(("shipped",), after, f"shipment {after}")
        saga.adjust_counters_many(session, [(a, {"shipped": -quantity[a.id]}) for a in moved])
        rematch.update(a.item for a in moved)
    if domain.CANCEL in actions:
        moved = move(("reserved",), "cancelled", "shipment cancelled")
        saga.adjust_counters_many(session, [(a, {"reserved": -quantity[a.id]}) for a in moved])
        rematch.update(a.item for a in moved)
    for item in sorted(rematch):
        request_matching(session, item)


# Batches ----------------------------------------------------------------------------------


@dataclass
class RowResult:
    index: int
    outcome: str  # applied, late, duplicate or refused
    shipment_id: str | None = None
    status: str | None = None
    occurred_at: str | None = None
    reason: str | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "outcome": self.outcome,
            "shipment_id": self.shipment_id,
            "status": self.status,
            "occurred_at": self.occurred_at,
        }
        if self.reason:
            out["reason"] = self.reason
        if self.errors:
            out["errors"] = self.errors
        return out


@contextmanager
def _savepoint(session: Session) -> Iterator[None]:
    """One row's work in a savepoint, undone alone if it fails. The outbox keeps the
    events written inside it for the commit of the whole batch, and drops them if the
    savepoint rolls back."""
    with session.begin_nested():
        yield


def apply_batch(
    session: Session,
    outbox: Outbox,
    rows: Sequence[dict[str, Any]],
    identity: Identity,
    *,
    now: datetime | None = None,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> list[RowResult]:
    """Apply a scanner's batch: each row (``shipment_id``, ``status``, ``occurred_at``,
    ``location``, ``note``, already checked for form; a row with ``errors`` is refused
    as it is) is applied, kept as late, found a duplicate or refused with its reason,
    each in a savepoint of its own, so a bad row undoes nothing but itself. Rows are
    taken in the order they happened, so a scanner's unordered batch moves each shipment
    forward; results come back in the batch's order."""
    now = now or utcnow()
    results: dict[int, RowResult] = {}
    order = sorted(
        (row for row in rows if not row.get("errors")),
        key=lambda row: (row["occurred_at"], row["index"]),
    )
    for row in rows:
        if row.get("errors"):
            results[row["index"]] = RowResult(
                row["index"],
                "refused",
                shipment_id=_text(row.get("shipment_id")),
                status=_text(row.get("status")),
                occurred_at=_text(row.get("occurred_at")),
                reason="The row is not valid.",
                errors=row["errors"],
            )
    # The shipments the rows name by id, read together rather than one by one, each
    # with its lines and history: three statements a row before.
    shipments: dict[Any, Shipment | None] = _preload(session, (row["shipment_id"] for row in order))
    for row in order:
        result = RowResult(
            row["index"],
            "refused",
            shipment_id=str(row["shipment_id"]),
            status=row["status"],
            occurred_at=row["occurred_at"].isoformat(),
        )
        results[row["index"]] = result
        shipment_id = row["shipment_id"]
        if shipment_id not in shipments:
            shipments[shipment_id] = find_shipment(session, shipment_id, identity)
        shipment = shipments[shipment_id]
        if shipment is None or not can_see(identity, shipment):
            result.reason = f"No shipment {shipment_id}."
            result.errors = {"shipment_id": [result.reason]}
            continue
        # Answered by the shipment's id, whichever reference the row gave.
        result.shipment_id = str(shipment.id)
        if not can_update(identity, shipment):
            result.reason = "This shipment is not yours to update."
            result.errors = {"shipment_id": [result.reason]}
            continue
        try:
            with _savepoint(session):
                # Under its row lock, as the update will read it: still the caller's to
                # update (the batch read it before any lock; a carrier may have been
                # taken off it since).
                lock_state(session, shipment)
                if not can_update(identity, shipment):
                    reason = "This shipment is not yours to update."
                    raise Forbidden(reason, errors={"shipment_id": [reason]})
                outcome = record_update(
                    session,
                    outbox,
                    shipment,
                    locked=True,
                    status=row["status"],
                    occurred_at=row["occurred_at"],
                    location=row.get("location"),
                    note=row.get("note"),
                    actor_id=identity.user_id,
                    actor_org_id=identity.org_id,
                    source="batch",
                    now=now,
                    clock_skew=clock_skew,
                )
        except DomainError as problem:
            result.reason = problem.detail
            result.errors = problem.errors or {}
            continue
        result.outcome = outcome.result
    return [results[index] for index in sorted(results)]


def lock_state(session: Session, shipment: Shipment) -> None:
    """Lock ``shipment``'s row and read its state again, as the last writer left it;
    its lines are read again when next used, since an allocation reserved meanwhile
    may have joined it (plan_allocations locks the shipment before adding a line): it
    leaves with it."""
    session.refresh(shipment, _STATE_COLUMNS, with_for_update=True)
    session.expire(shipment, ["lines"])


def _preload(session: Session, references: Iterable[Any]) -> dict[Any, Shipment | None]:
    """The shipments of ``references`` that are ids, by reference as given (None for
    an id no shipment has); their lines and history left to be read when used (each
    row's update reads the lines again under the shipment's lock, and a batch does not
    show the history). References that are tracking or waybill numbers are looked up
    on their own."""
    wanted: dict[Any, uuid.UUID] = {}
    for reference in references:
        try:
            wanted[reference] = (
                reference if isinstance(reference, uuid.UUID) else uuid.UUID(str(reference).strip())
            )
        except ValueError:
            continue
    found = {
        shipment.id: shipment
        for chunk in in_chunks(sorted(set(wanted.values())))
        for shipment in session.scalars(
            select(Shipment)
            .where(Shipment.id.in_(chunk))
            .options(lazyload(Shipment.lines), lazyload(Shipment.history))
        )
    }
    return {reference: found.get(id_) for reference, id_ in wanted.items()}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)


# Overdue ----------------------------------------------------------------------------------


def due_overdue(
    session: Session,
    now: datetime,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
    limit: int = SWEEP_BATCH,
) -> list[uuid.UUID]:
    """Shipments not yet flagged that are overdue now: no update for ``stale_after``,
    or past their ETA and not delivered."""
    return list(
        session.scalars(
            select(Shipment.id)
            .where(
                Shipment.status.not_in(domain.FINAL_STATUSES),
                Shipment.overdue_at.is_(None),
                or_(
                    Shipment.last_event_at <= now - stale_after,
                    and_(
                        Shipment.eta.is_not(None),
                        Shipment.eta < now,
                        Shipment.status.not_in(("delivered", "received")),
                    ),
                ),
            )
            .order_by(Shipment.last_event_at, Shipment.id)
            .limit(limit)
        )
    )


def flag_overdue(
    session: Session,
    outbox: Outbox,
    shipment_id: uuid.UUID,
    now: datetime,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
) -> bool:
    """Flag one shipment overdue, once, and emit ``shipment.overdue``; False if it was
    flagged, updated or finished meanwhile."""
    shipment = session.get(Shipment, shipment_id, with_for_update=True, populate_existing=True)
    if shipment is None or shipment.overdue_at is not None:
        return False
    reason = domain.overdue_reason(
        shipment.status, shipment.last_event_at, shipment.eta, now, stale_after
    )
    if reason is None:
        return False
    shipment.overdue_at = now
    shipment.overdue_reason = reason[:200]
    session.flush()
    outbox.add(
        session,
        new_event(
            "shipment.overdue",
            {
                "shipment_id": shipment.id,
                "status": shipment.status,
                "reason": shipment.overdue_reason,
                "overdue_at": now,
                "last_event_at": shipment.last_event_at,
                "eta": shipment.eta,
                "tracking_ref": shipment.tracking_ref,
                **parties(shipment),
            },
            producer=PRODUCER,
            aggregate_id=shipment.id,
            aggregate_version=shipment.version,
        ),
    )
    return True


def erase_donor(session: Session, org_id: uuid.UUID) -> int:
    """``org.erased``: the person's pledges keep their region and quantities here but
    lose their coordinates, and so do the shipments that leave from them (their
    grouping key is made again from what is left, so new goods still join them).
    Returns the supply lines touched."""
    lines = list(session.scalars(select(SupplyLine).where(SupplyLine.donor_org_id == org_id)))
    for line in lines:
        line.address = None
        line.contact_name = None
        line.contact_phone = None
        line.lat = None
        line.lon = None
    for shipment in session.scalars(select(Shipment).where(Shipment.donor_org_id == org_id)):
        region = (shipment.origin or {}).get("region")
        shipment.origin = {"region": region, "address": None, "lat": None, "lon": None}
        parts = place_key(shipment.donor_org_id, None, region, None, None, None)
        shipment.origin_key = (
            _key(*parts, "anonymous") if shipment.donor_anonymous else _key(*parts)
        )
    return len(lines)
