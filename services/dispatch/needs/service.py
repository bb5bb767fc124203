"""The service layer of needs: post, amend, cancel, reconfirm, open drafts on
verification, and the periodic expiry and reminders.

Every function works inside the caller's transaction and writes its events to the
outbox there, so a change and its announcement commit together or not at all. Each
event follows a new version of the need (its ``aggregate_version``), so consumers
apply them in order. Line quantities change only through conditional UPDATEs the
database checks (proposed + reserved + shipped <= quantity is also a CHECK
constraint), so an allocation committed meanwhile is never undercut.

Expiry: an open need expires unless reconfirmed within ``NEED_TTL`` (environment
``AIDLINK_NEED_TTL_DAYS``, default 7 days); ``need.reconfirm_due`` is emitted once,
``REMINDER_LEAD`` before (``AIDLINK_NEED_REMINDER_HOURS``, default 24 hours).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from services.dispatch.allocations.service import cancel_allocations_of_need
from services.dispatch.matching.service import request_matching
from services.dispatch.models import Allocation, Need, NeedLine, Place, of_need
from services.dispatch.needs import domain
from services.dispatch.needs.status import refresh_line_status, refresh_need_status, totals_of
from services.dispatch.transparency import totals as ledger
from shared import catalog
from shared.contacts import contact_of
from shared.db import in_chunks, insert_as_built, utcnow
from shared.errors import Conflict, RuleBroken
from shared.events import new_event
from shared.outbox import Outbox
from shared.places import resolve_location

PRODUCER = "dispatch"


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise RuntimeError(f"{name} must be a number, not {raw!r}") from None
    if value <= 0:
        raise RuntimeError(f"{name} must be positive, not {raw!r}")
    return value


# How long an open need stays in matching without being reconfirmed.
NEED_TTL_DAYS = _env_number("AIDLINK_NEED_TTL_DAYS", 7)
NEED_TTL = timedelta(days=NEED_TTL_DAYS)
# How long before its expiry a need's organisation is reminded to reconfirm it.
NEED_REMINDER_HOURS = _env_number("AIDLINK_NEED_REMINDER_HOURS", 24)
REMINDER_LEAD = timedelta(hours=NEED_REMINDER_HOURS)
# Needs handled by one run of a periodic task; the next run takes the rest.
SWEEP_BATCH = 500


class LineError(ValueError):
    """A need line that cannot be accepted; ``errors`` maps each offending field of the
    line (``quantity``, ``standards.1``, ...) to what is wrong with it."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(m for ms in errors.values() for m in ms))
        self.errors = errors


# Building lines ---------------------------------------------------------------------------


def _exact(value: Any) -> Any:
    return Decimal(str(value)) if isinstance(value, float) else value


def _standards(
    item: catalog.Item, values: Iterable[str], errors: dict[str, list[str]]
) -> list[str]:
    codes: list[str] = []
    for index, value in enumerate(values):
        try:
            code = catalog.check_standard(item.code, value).code
        except catalog.CatalogError as exc:
            errors.setdefault(f"standards.{index}", []).append(exc.message)
            continue
        if code not in codes:
            codes.append(code)
    return codes


def _to_base(item: catalog.Item, data: dict[str, Any], value: Any) -> int:
    return catalog.to_base(
        item.code,
        _exact(value),
        data["unit"],
        pack_size=data.get("pack_size"),
        bottle_volume_ml=data.get("bottle_volume_ml"),
        density_g_per_l=data.get("density_g_per_l"),
    )


def _fact(
    item: catalog.Item, data: dict[str, Any], name: str, errors: dict[str, list[str]]
) -> int | None:
    """Stock on hand or daily consumption, given in the line's unit, in base units."""
    value = data.get(name)
    if value is None:
        return None
    label = name.replace("_", " ")
    try:
        number = catalog.parse_quantity(_exact(value))
    except catalog.CatalogError as exc:
        errors.setdefault(name, []).append(exc.message.replace("the quantity", f"the {label}"))
        return None
    if number == 0 and name == "stock_on_hand":
        return 0
    if number <= 0:
        errors.setdefault(name, []).append(
            f"the {label} must be positive, not {number}"
            + (" (leave it out if unknown)" if name == "daily_consumption" else "")
        )
        return None
    try:
        return _to_base(item, data, number)
    except catalog.CatalogError as exc:
        if exc.field == "quantity":
            errors.setdefault(name, []).append(exc.message.replace("the quantity", f"the {label}"))
        elif exc.message not in errors.get(exc.field, []):
            # A bad unit or pack size, reported once for the line.
            errors.setdefault(exc.field, []).append(exc.message)
        return None


def convert_line(
    data: dict[str, Any],
    *,
    today: date,
    quantity: bool = True,
    facts: bool = True,
    needed_by: bool = True,
) -> dict[str, Any]:
    """Check a need line against the catalogue and convert it to base units.

    ``quantity``, ``stock_on_hand`` and ``daily_consumption`` are in ``unit`` (with
    ``pack_size`` / ``bottle_volume_ml`` as the catalogue asks) and converted exactly;
    each acceptable standard must be one of the item's. Returns the line's columns
    (leaving out the quantity's, the facts' or the urgency when not asked to convert
    them); raises :class:`LineError` naming the fields at fault.
    """
    errors: dict[str, list[str]] = {}
    try:
        item = catalog.get_item(data["item"])
    except catalog.CatalogError as exc:
        raise LineError({exc.field: [exc.message]}) from None
    columns: dict[str, Any] = {
        "item": item.code,
        "standards": _standards(item, data.get("standards") or [], errors),
    }
    if quantity:
        try:
            columns["quantity"] = _to_base(item, data, data["quantity"])
        except catalog.CatalogError as exc:
            errors.setdefault(exc.field, []).append(exc.message)
        columns["entered_quantity"] = str(data["quantity"])
        columns["entered_unit"] = str(data["unit"])
        columns["pack_size"] = data.get("pack_size")
    if facts:
        columns["stock_on_hand"] = _fact(item, data, "stock_on_hand", errors)
        columns["daily_consumption"] = _fact(item, data, "daily_consumption", errors)
        columns["urgency"] = domain.derive_urgency(
            data.get("urgency"), columns["stock_on_hand"], columns["daily_consumption"]
        )
    if needed_by and "needed_by" in data:
        when = data.get("needed_by")
        if when is not None and when < today:
            errors.setdefault("needed_by", []).append(f"{when} is in the past.")
        columns["needed_by"] = when
    if errors:
        raise LineError(errors)
    return columns


# Events ----------------------------------------------------------------------------------


def snapshot(need: Need, reason: str | None = None) -> dict[str, Any]:
    return {
        "id": need.id,
        "org_id": need.org_id,
        "status": need.status,
        "location": {
            "place_id": need.place_id,
            "address": need.address,
            "contact": contact_of(need.contact_name, need.contact_phone),
            "region": need.region,
            "lat": need.lat,
            "lon": need.lon,
        },
        "expires_at": need.expires_at,
        "reason": reason,
        "lines": [
            {
                "id": line.id,
                "line_no": line.line_no,
                "item": line.item,
                "standards": list(line.standards or []),
                "quantity": line.quantity,
                "urgency": line.urgency,
                "needed_by": line.needed_by,
                "proposed": line.proposed,
                "reserved": line.reserved,
                "shipped": line.shipped,
                "received": line.received,
                "status": line.status,
            }
            for line in need.lines
        ],
    }


def announce(
    session: Session, outbox: Outbox, need: Need, type: str, reason: str | None = None
) -> None:
    """Emit ``type`` with the stored need as it now is, at a new version of the need
    (a new need's ``need.posted`` is written with it, by :func:`create_need`)."""
    # A stored need gets a new version for every event, even when only its lines
    # changed; it is also the need's ETag.
    need.updated_at = utcnow()
    session.flush()
    outbox.add(
        session,
        new_event(
            type,
            snapshot(need, reason),
            producer=PRODUCER,
            aggregate_id=need.id,
            aggregate_version=need.version,
        ),
    )


def settle_received(session: Session, outbox: Outbox, need_id: uuid.UUID) -> Need | None:
    """A receipt moved the counters of the need's lines: refresh their statuses and
    announce the need, as ``need.fulfilled`` when every line has now been received in
    full (and ``need.updated`` otherwise, e.g. when damage reopened a line)."""
    # Locked: receipts of two shipments of one need may be confirmed at once.
    # Read afresh with its lines (the receipt moved their counters) in two statements.
    need = session.scalar(
        select(Need)
        .where(Need.id == need_id)
        .with_for_update()
        .options(selectinload(Need.lines))
        .execution_options(populate_existing=True)
    )
    if need is None:
        return None
    before = need.status
    for line in need.lines:
        refresh_line_status(line)
    refresh_need_status(need)
    if need.status == "fulfilled" and before != "fulfilled":
        announce(session, outbox, need, "need.fulfilled", "every line received in full")
    else:
        announce(session, outbox, need, "need.updated", "receipt confirmed")
    return need


# The allocations of a need that its change locks first (:func:`lock_need`): those
# still open (a cancel moves them) and those on their way or received (a change of
# place recounts them in the ledger, as receipts do).
LOCKED_ALLOCATION_STATUSES = ("proposed", "reserved", "shipped", "delivered", "received")


def lock_need(session: Session, need_id: uuid.UUID) -> Need | None:
    """The need read afresh under its row lock, with its lines, locked in the order
    dispatch's writers take them: the need's allocations, then its lines, then the
    need (each in id order). The saga and receipts move allocations, then their need
    lines' counters, then settle the needs' statuses, as matching runs move need lines
    and then needs; a change of the need that took the need first and then cancelled
    its allocations or wrote its lines would close a cycle with them, and the database
    would end one of the two."""
    session.execute(
        select(Allocation.id)
        .where(
            of_need(need_id),
            # Those a change of the need may move or recount; not the many a long-lived
            # need's runs proposed and saw rejected or cancelled.
            Allocation.status.in_(LOCKED_ALLOCATION_STATUSES),
        )
        .order_by(Allocation.id)
        .with_for_update()
    )
    session.execute(
        select(NeedLine.id)
        .where(NeedLine.need_id == need_id)
        .order_by(NeedLine.id)
        .with_for_update()
    )
    return session.scalar(
        select(Need)
        .where(Need.id == need_id)
        .with_for_update()
        .options(selectinload(Need.lines))
        .execution_options(populate_existing=True)
    )


def ask_matching(session: Session, need: Need) -> None:
    """The need's demand changed: ask for matching of its items after the commit
    (a need not yet, or no longer, in matching asks nothing)."""
    if need.status not in ("open", "partially_allocated") and need.status != "cancelled":
        return
    for item in sorted({line.item for line in need.lines}):
        request_matching(session, item)


# Post, amend, cancel, reconfirm ---------------------------------------------------------------


def _location(session: Session, need: Need, location: dict[str, Any]) -> None:
    location = resolve_location(session, Place, need.org_id, location, "location")
    need.place_id = location["place_id"]
    need.address = location.get("address")
    need.region = location["region"]
    need.lat = location.get("lat")
    need.lon = location.get("lon")
    need.contact_name = (location.get("contact") or {}).get("name")
    need.contact_phone = (location.get("contact") or {}).get("phone")


def create_need(
    session: Session,
    outbox: Outbox,
    *,
    org_id: uuid.UUID,
    org_verified: bool,
    data: dict[str, Any],
    created_by: uuid.UUID | None = None,
    ttl: timedelta = NEED_TTL,
    now: datetime | None = None,
) -> Need:
    """Post a need: ``open`` for a verified organisation, else held in ``draft`` until
    it is verified. Emits need.posted."""
    now = now or utcnow()
    errors: dict[str, list[str]] = {}
    lines = []
    for index, line in enumerate(data["lines"]):
        try:
            lines.append(convert_line(line, today=now.date()))
        except LineError as exc:
            for field, messages in exc.errors.items():
                errors.setdefault(f"lines.{index}.{field}", []).extend(messages)
    if errors:
        raise RuleBroken("Some lines cannot be accepted as given.", errors=errors)
    status = "open" if org_verified else "draft"
    need = Need(
        id=uuid.uuid4(),
        org_id=org_id,
        status=status,
        people_served=data.get("people_served"),
        beds=data.get("beds"),
        notes=data.get("notes"),
        created_by=created_by,
        confirmed_at=now,
        expires_at=now + ttl,
        reminded_at=None,
        cancelled_at=None,
        created_at=now,
        updated_at=now,
        version=1,
    )
    _location(session, need, data["location"])
    need.lines = [
        NeedLine(
            id=uuid.uuid4(),
            need_id=need.id,
            line_no=n,
            status=status,
            proposed=0,
            reserved=0,
            shipped=0,
            received=0,
            **{"needed_by": None, "pack_size": None, **columns},
        )
        for n, columns in enumerate(lines, start=1)
    ]
    insert_as_built(session, need, need.lines)
    # Its event at version 1, with the rows (Core, as the rows above).
    event = new_event(
        "need.posted", snapshot(need), producer=PRODUCER, aggregate_id=need.id, aggregate_version=1
    )
    outbox.add_many(session, [event])
    ask_matching(session, need)
    return need


def _require(need: Need, allowed: frozenset[str], doing: str) -> None:
    if need.status not in allowed:
        raise Conflict(
            f"The need is {need.status}; it cannot be {doing}.",
            slug="need-not-changeable",
            need_status=need.status,
        )


QUANTITY_INPUTS = ("item", "quantity", "unit", "pack_size", "bottle_volume_ml", "density_g_per_l")
FACT_INPUTS = ("urgency", "stock_on_hand", "daily_consumption")


def _amend_line(
    session: Session, line: NeedLine, change: dict[str, Any], today: date
) -> dict[str, list[str]] | None:
    """Apply one line change; returns the errors by field, or None when done."""
    session.refresh(line)
    if totals_of(line).committed and change.get("item") is not None:
        try:
            other_item = catalog.get_item(change["item"]).code != line.item
        except catalog.CatalogError:
            other_item = True
        if other_item:
            # Said first: the new item's units and standards are beside the point.
            return {"item": ["The line has allocations; its item cannot change."]}
    converting_quantity = any(k in change for k in QUANTITY_INPUTS)
    converting_facts = any(k in change for k in FACT_INPUTS)
    merged: dict[str, Any] = {
        "item": change.get("item", line.item),
        "standards": change.get("standards", line.standards),
        "quantity": change.get("quantity", line.entered_quantity),
        "unit": change.get("unit", line.entered_unit),
        # A new unit comes with its own pack size, if it has one.
        "pack_size": change.get("pack_size", None if "unit" in change else line.pack_size),
        "bottle_volume_ml": change.get("bottle_volume_ml"),
        "density_g_per_l": change.get("density_g_per_l"),
        "urgency": change.get("urgency"),
    }
    for name in ("stock_on_hand", "daily_consumption"):
        if name in change:
            merged[name] = change[name]
    if "needed_by" in change:
        merged["needed_by"] = change["needed_by"]
    try:
        columns = convert_line(
            merged, today=today, quantity=converting_quantity, facts=converting_facts
        )
    except LineError as exc:
        return dict(exc.errors)
    if converting_facts:
        # Facts not sent stay as they were (already in base units).
        for name in ("stock_on_hand", "daily_consumption"):
            if name not in change:
                columns[name] = getattr(line, name)
        if change.get("urgency") is None:
            columns["urgency"] = domain.derive_urgency(
                None, columns["stock_on_hand"], columns["daily_consumption"]
            )
    item_changed = columns["item"] != line.item
    standards_changed = set(columns["standards"]) != set(line.standards or [])
    new_quantity = columns.pop("quantity", None)
    problems = domain.amendment_errors(
        totals_of(line),
        status=line.status,
        new_quantity=new_quantity,
        item_changed=item_changed,
        standards_changed=standards_changed,
    )
    if problems:
        return {field: [message] for field, message in problems.items()}
    values = dict(columns)
    conditions = [NeedLine.id == line.id]
    committed = NeedLine.proposed + NeedLine.reserved + NeedLine.shipped
    if new_quantity is not None:
        values["quantity"] = new_quantity
        conditions.append(committed <= new_quantity)
    if item_changed or standards_changed:
        conditions.append(committed == 0)
    changed = session.execute(
        update(NeedLine).where(*conditions).values(**values).returning(NeedLine.id)
    ).first()
    if changed is None:
        return {"quantity": ["Allocations arrived meanwhile; the line cannot change so."]}
    session.refresh(line)
    refresh_line_status(line)
    return None


def amend_need(
    session: Session, outbox: Outbox, need: Need, data: dict[str, Any], *, today: date | None = None
) -> Need:
    """Apply a PATCH: the location, people served, beds, notes, and lines (changed by
    ``id``, added without). A quantity may be raised at any time and lowered only down
    to what allocations hold; a line with allocations keeps its item and standards.
    Sending stock or consumption again derives the urgency again, unless ``urgency``
    is sent too. Emits need.updated."""
    _require(need, domain.AMENDABLE_STATUSES, "changed")
    today = today or utcnow().date()
    for name in ("people_served", "beds", "notes"):
        if name in data:
            setattr(need, name, data[name])
    if "location" in data:
        # Reserved, shipped and received count at the need's region in the ledger.
        with ledger.moves(session, **ledger.need_rows(session, need.id)):
            _location(session, need, data["location"])
    errors: dict[str, list[str]] = {}
    by_id = {line.id: line for line in need.lines}
    next_no = max((line.line_no for line in need.lines), default=0) + 1
    new_status = "draft" if need.status == "draft" else "open"
    for index, change in enumerate(data.get("lines") or []):
        prefix = f"lines.{index}"
        line_id = change.get("id")
        if line_id is None:
            missing = [name for name in ("item", "quantity", "unit") if name not in change]
            if missing:
                for name in missing:
                    errors.setdefault(f"{prefix}.{name}", []).append("Required for a new line.")
                continue
            try:
                columns = convert_line(change, today=today)
            except LineError as exc:
                for field, messages in exc.errors.items():
                    errors.setdefault(f"{prefix}.{field}", []).extend(messages)
                continue
            need.lines.append(
                NeedLine(
                    id=uuid.uuid4(),
                    line_no=next_no,
                    status=new_status,
                    proposed=0,
                    reserved=0,
                    shipped=0,
                    received=0,
                    **columns,
                )
            )
            next_no += 1
            continue
        line = by_id.get(line_id)
        if line is None:
            errors.setdefault(f"{prefix}.id", []).append("No such line on this need.")
            continue
        problems = _amend_line(session, line, change, today)
        for field, messages in (problems or {}).items():
            errors.setdefault(f"{prefix}.{field}", []).extend(messages)
    if errors:
        raise RuleBroken("Some changes cannot be made.", errors=errors)
    refresh_need_status(need)
    announce(session, outbox, need, "need.updated")
    ask_matching(session, need)
    return need


def cancel_need(session: Session, outbox: Outbox, need: Need, reason: str | None) -> Need:
    """Cancel the need: its open allocations are cancelled (donations releases their
    reservations) and every line not fulfilled closes. What has shipped is on its way
    and stays shipped. Emits need.cancelled; cancelling again changes nothing."""
    if need.status == "cancelled":
        return need
    if need.status in domain.UNCANCELLABLE_STATUSES:
        raise Conflict(
            f"The need is {need.status}; it cannot be cancelled.",
            slug="need-not-changeable",
            need_status=need.status,
        )
    cancel_allocations_of_need(session, outbox, need.id, reason or "need cancelled")
    # Cancelling allocations moved the counters under the ORM's feet.
    session.refresh(need)
    for line in need.lines:
        session.refresh(line)
        if line.status != "fulfilled":
            line.status = "cancelled"
    need.status = "cancelled"
    need.cancelled_at = utcnow()
    announce(session, outbox, need, "need.cancelled", reason)
    # What its cancelled allocations had asked of donors is free for other needs.
    ask_matching(session, need)
    return need


def reconfirm_need(
    session: Session,
    outbox: Outbox,
    need: Need,
    *,
    ttl: timedelta = NEED_TTL,
    now: datetime | None = None,
) -> Need:
    """The organisation still needs it: it stays in matching for ``ttl`` from now, and
    will be reminded again before then. Emits need.updated."""
    _require(need, domain.RECONFIRMABLE_STATUSES, "reconfirmed")
    now = now or utcnow()
    need.confirmed_at = now
    need.expires_at = now + ttl
    need.reminded_at = None
    announce(session, outbox, need, "need.updated", "reconfirmed")
    ask_matching(session, need)
    return need


def open_drafts_of(
    session: Session,
    outbox: Outbox,
    org_id: uuid.UUID,
    *,
    ttl: timedelta = NEED_TTL,
    now: datetime | None = None,
) -> int:
    """The organisation was verified: its drafts open, each for ``ttl`` from now.
    Emits need.updated for each; returns how many opened."""
    now = now or utcnow()
    # Locked as lock_need locks one: their lines first, then the needs (a draft has no
    # allocations).
    ids = sorted(
        session.scalars(select(Need.id).where(Need.org_id == org_id, Need.status == "draft"))
    )
    for chunk in in_chunks(ids):
        session.execute(
            select(NeedLine.id)
            .where(NeedLine.need_id.in_(chunk))
            .order_by(NeedLine.id)
            .with_for_update()
        )
    drafts = [
        need
        for chunk in in_chunks(ids)
        for need in session.scalars(
            select(Need)
            .where(Need.id.in_(chunk), Need.status == "draft")
            .order_by(Need.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ]
    drafts.sort(key=lambda need: (need.created_at, need.id))
    for need in drafts:
        need.status = "open"
        for line in need.lines:
            held = line.status if line.status in domain.CLOSED_LINE_STATUSES else None
            line.status = domain.line_status(totals_of(line), held)
        refresh_need_status(need)
        need.confirmed_at = now
        need.expires_at = now + ttl
        need.reminded_at = None
        announce(session, outbox, need, "need.updated", "organisation verified")
        ask_matching(session, need)
    return len(drafts)


# Expiry and reminders ------------------------------------------------------------------------


def due_for_expiry(session: Session, now: datetime, limit: int = SWEEP_BATCH) -> list[uuid.UUID]:
    return list(
        session.scalars(
            select(Need.id)
            .where(Need.status.in_(domain.EXPIRING_STATUSES), Need.expires_at <= now)
            .order_by(Need.expires_at, Need.id)
            .limit(limit)
        )
    )


def expire_need(session: Session, outbox: Outbox, need_id: uuid.UUID, now: datetime) -> bool:
    """Expire the need if it is still open past its expiry: lines with a remainder
    close, so it leaves matching; allocations already proposed or reserved stay and go
    on. Emits need.expired; False if it was reconfirmed or changed meanwhile."""
    need = lock_need(session, need_id)
    if need is None or need.status not in domain.EXPIRING_STATUSES or need.expires_at > now:
        return False
    for line in need.lines:
        refresh_line_status(line)
        if domain.expires_on_expiry(totals_of(line), line.status):
            line.status = "expired"
    need.status = "expired"
    announce(session, outbox, need, "need.expired", "not reconfirmed in time")
    return True


def due_for_reminder(
    session: Session, now: datetime, lead: timedelta = REMINDER_LEAD, limit: int = SWEEP_BATCH
) -> list[uuid.UUID]:
    return list(
        session.scalars(
            select(Need.id)
            .where(
                Need.status.in_(domain.EXPIRING_STATUSES),
                Need.reminded_at.is_(None),
                Need.expires_at > now,
                Need.expires_at <= now + lead,
            )
            .order_by(Need.expires_at, Need.id)
            .limit(limit)
        )
    )


def remind_need(
    session: Session,
    outbox: Outbox,
    need_id: uuid.UUID,
    now: datetime,
    lead: timedelta = REMINDER_LEAD,
) -> bool:
    """Ask the organisation, once, to reconfirm a need about to expire: emits
    need.reconfirm_due. False if it was reminded, reconfirmed or closed meanwhile."""
    need = session.get(Need, need_id, with_for_update=True, populate_existing=True)
    if (
        need is None
        or need.status not in domain.EXPIRING_STATUSES
        or need.reminded_at is not None
        or not (now < need.expires_at <= now + lead)
    ):
        return False
    need.reminded_at = now
    announce(session, outbox, need, "need.reconfirm_due", "reconfirm before it expires")
    return True
