"""Tables of the dispatch service: needs and their lines, the read model of available
supply, allocations, matching runs and the locks that keep runs of an item apart,
shipments with their history, and receipts."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.db import Entity, UTCDateTime, utcnow
from shared.org_directory import OrganisationView
from shared.places import PlaceView
from shared.runtime import define_messaging_models


class Base(DeclarativeBase):
    pass


class Place(PlaceView, Base):
    """This service's copy of an organisation's named place (``shared.places``)."""


class Organisation(OrganisationView, Base):
    """The dispatch service's copy of an organisation registered at the gateway."""


class Need(Entity, Base):
    """What one recipient organisation lacks, in lines. ``version`` is its ETag.

    ``draft`` until the organisation is verified; ``open`` needs expire unless
    reconfirmed before ``expires_at``.
    """

    __tablename__ = "needs"
    __table_args__ = (
        Index("ix_needs_org_created", "org_id", "created_at"),
        # The order of every list of needs (shared/pagination.py).
        Index("ix_needs_created", "created_at", "id"),
        Index("ix_needs_status_expires", "status", "expires_at"),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    # draft, open, partially_allocated, allocated, fulfilled, expired, cancelled
    status: Mapped[str] = mapped_column(String(24), nullable=False, default="draft")
    # The named place (shared.places), when one was named.
    place_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    address: Mapped[str | None] = mapped_column(String(500), nullable=True)
    region: Mapped[str] = mapped_column(String(6), nullable=False)
    lat: Mapped[float | None] = mapped_column(Float, nullable=True)
    lon: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Whom the driver calls at the delivery.
    contact_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    contact_phone: Mapped[str | None] = mapped_column(String(32), nullable=True)
    people_served: Mapped[int | None] = mapped_column(Integer, nullable=True)
    beds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    confirmed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    lines: Mapped[list[NeedLine]] = relationship(
        back_populates="need",
        order_by="NeedLine.line_no",
        lazy="selectin",
        cascade="all, delete-orphan",
    )


class NeedLine(Base):
    """One item a need lacks, in the item's base unit.

    ``proposed`` waits for the donor's reservation; ``reserved`` is held for it;
    ``shipped`` has left; ``received`` arrived and was confirmed. Matching sees
    ``quantity - proposed - reserved - shipped`` as still open; the database refuses
    anything that would commit more than the quantity.
    """

    __tablename__ = "need_lines"
    __table_args__ = (
        UniqueConstraint("need_id", "line_no", name="uq_need_line_no"),
        CheckConstraint("quantity > 0", name="ck_need_line_quantity_positive"),
        CheckConstraint(
            "proposed >= 0 AND reserved >= 0 AND shipped >= 0 AND received >= 0",
            name="ck_need_line_nonnegative",
        ),
        CheckConstraint(
            "proposed + reserved + shipped <= quantity", name="ck_need_line_not_overcommitted"
        ),
        Index("ix_need_lines_item_status", "item", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    need_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("needs.id", ondelete="CASCADE"), nullable=False
    )
    line_no: Mapped[int] = mapped_column(Integer, nullable=False)
    item: Mapped[str] = mapped_column(String(64), nullable=False)
    # Acceptable standards; empty means any.
    standards: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    entered_quantity: Mapped[str] = mapped_column(String(32), nullable=False)
    entered_unit: Mapped[str] = mapped_column(String(16), nullable=False)
    pack_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # critical, high or normal; derived from days of supply left when not given.
    urgency: Mapped[str] = mapped_column(String(16), nullable=False)
    stock_on_hand: Mapped[int | None] = mapped_column(Integer, nullable=True)
    daily_consumption: Mapped[int | None] = mapped_column(Integer, nullable=True)
    needed_by: Mapped[date | None] = mapped_column(Date, nullable=True)
    proposed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    reserved: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    shipped: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    received: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # open, partially_allocated, allocated, fulfilled, expired, cancelled
    status: Mapped[str] = mapped_column(String(24), nullable=False, default="open")

    need: Mapped[Need] = relationship(back_populates="lines")


class SupplyLine(Base):
    """The dispatch service's view of one pledge line, from the donations events.

    ``pledge_version`` is the version of the pledge the totals were taken at; an event
    carrying an older version changes nothing. ``proposed`` is dispatch's own: what
    its allocations have asked of the line and donations has not yet answered.
    """

    __tablename__ = "supply_lines"
    __table_args__ = (
        Index("ix_supply_lines_item_status", "item", "status"),
        # A matching run reads the open lines of its items, not every line they had.
        Index("ix_supply_lines_item_pledge_status", "item", "pledge_status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)  # the pledge line id
    pledge_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, index=True)
    donor_org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    item: Mapped[str] = mapped_column(String(64), nullable=False)
    standard: Mapped[str | None] = mapped_column(String(64), nullable=True)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    reserved: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    shipped: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    delivered: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    proposed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    status: Mapped[str] = mapped_column(String(24), nullable=False)
    pledge_status: Mapped[str] = mapped_column(String(16), nullable=False)
    best_before: Mapped[date | None] = mapped_column(Date, nullable=True)
    restrictions: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    # The donor asked not to be named in the public ledger.
    anonymous: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    region: Mapped[str] = mapped_column(String(6), nullable=False)
    # Where the goods are picked up, as the donor wrote it, and whom to call there
    # (for the carrier).
    # The named place (shared.places), when one was named.
    place_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    address: Mapped[str | None] = mapped_column(String(500), nullable=True)
    contact_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    contact_phone: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lat: Mapped[float | None] = mapped_column(Float, nullable=True)
    lon: Mapped[float | None] = mapped_column(Float, nullable=True)
    # How it is packed, for the waybill: boxes or cases of ``pack_size`` base units.
    pack_unit: Mapped[str | None] = mapped_column(String(16), nullable=True)
    pack_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pledge_version: Mapped[int] = mapped_column(Integer, nullable=False)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # When dispatch first heard of the pledge (every line of a pledge shares it): where
    # the public ledger counts the line as pledged.
    pledged_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Allocation(Base):
    """A quantity of one pledge line for one need line, through the saga:
    proposed -> reserved | rejected; reserved -> shipped -> delivered; or cancelled."""

    __tablename__ = "allocations"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="ck_allocation_quantity_positive"),
        Index("ix_allocations_need_line", "need_line_id", "status"),
        Index("ix_allocations_pledge_line", "pledge_line_id", "status"),
        Index("ix_allocations_created", "created_at", "id"),
        # A donor's or a recipient's own list, in the order of every list.
        Index("ix_allocations_donor_created", "donor_org_id", "created_at", "id"),
        Index("ix_allocations_recipient_created", "recipient_org_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True, index=True)
    # An allocation of a pledge or of a need is found through its line
    # (:func:`of_pledge`, :func:`of_need`): one index fewer each to write.
    pledge_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    pledge_line_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    donor_org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    # The donor asked not to be named (its pledge is anonymous): only the donor and
    # coordinators see who it is.
    donor_anonymous: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    need_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("needs.id"), nullable=False)
    need_line_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("need_lines.id"), nullable=False
    )
    recipient_org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    item: Mapped[str] = mapped_column(String(64), nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    # proposed, reserved, rejected, cancelled, shipped, delivered, received, lost, returned
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="proposed")
    reason: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    status_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow
    )
    # The allocation's events in order: allocation.proposed is 1, a cancellation 2+.
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)


def of_pledge(pledge_id: Any) -> Any:
    """The condition on allocations of the pledge ``pledge_id``: through its lines."""
    return Allocation.pledge_line_id.in_(
        select(SupplyLine.id).where(SupplyLine.pledge_id == pledge_id)
    )


def of_need(need_id: Any) -> Any:
    """The condition on allocations of the need ``need_id``: through its lines."""
    return Allocation.need_line_id.in_(select(NeedLine.id).where(NeedLine.need_id == need_id))


class MatchingRun(Base):
    """One run of the matcher: a preview to approve, or applied at once."""

    __tablename__ = "matching_runs"
    __table_args__ = (
        Index("ix_matching_runs_created", "created_at", "id"),
        # The previews a run supersedes, and the previews' list.
        Index("ix_matching_runs_status_created", "status", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # preview, applied, discarded, superseded, failed
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    dry_run: Mapped[bool] = mapped_column(nullable=False)
    # manual, event or schedule
    trigger: Mapped[str] = mapped_column(String(16), nullable=False)
    items: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    plan: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    approved_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class MatchingLock(Base):
    """Who is matching an item now. Taken and released with conditional writes, so it
    holds across processes and machines on SQLite and PostgreSQL alike; a holder that
    died loses it when ``expires_at`` passes."""

    __tablename__ = "matching_locks"

    item: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(64), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Debouncing: supply or demand of the item changed at ``requested_at``; a run that
    # started after that covers it.
    requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Shipment(Entity, Base):
    """Reserved allocations moving together from one origin to one destination with one
    logistics organisation. ``version`` is its ETag and the aggregate version of its
    events.

    ``status`` is the status of the latest update by when it *happened*
    (``status_at``); ``updated_at`` moves with every recorded update, late ones too.
    """

    __tablename__ = "shipments"
    __table_args__ = (
        Index("ix_shipments_plan", "status", "origin_key", "destination_key"),
        Index("ix_shipments_logistics", "logistics_org_id", "status"),
        Index("ix_shipments_created", "created_at", "id"),
        Index("ix_shipments_watch", "status", "last_event_at"),
        # A scanned carrier's waybill number finds its shipment.
        Index("ix_shipments_tracking_ref", "tracking_ref"),
        UniqueConstraint("tracking_number", name="uq_shipments_tracking_number"),
    )

    # planned, ready_for_pickup, picked_up, in_transit, out_for_delivery, delivered,
    # received; held, delayed, damaged, lost, returned, cancelled
    status: Mapped[str] = mapped_column(String(24), nullable=False, default="planned")
    status_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # When the last update (of any time) was recorded; what "no update for" is measured by.
    last_event_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    donor_org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, index=True)
    # Carries an anonymous donor's goods (which never travel with its named ones).
    donor_anonymous: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    recipient_org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, index=True)
    logistics_org_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    # Where it leaves from and goes to: region, lat, lon, address.
    origin: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    destination: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    # What consolidation groups by: one planned shipment per origin and destination.
    origin_key: Mapped[str] = mapped_column(String(200), nullable=False)
    destination_key: Mapped[str] = mapped_column(String(200), nullable=False)
    tracking_ref: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # aidlink's own tracking number, printed and scanned: AL-<year>-<six digits>.
    tracking_number: Mapped[str | None] = mapped_column(String(20), nullable=True)
    eta: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Set when the overdue sweep flagged it; cleared by the next update.
    overdue_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    overdue_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)

    lines: Mapped[list[ShipmentLine]] = relationship(
        back_populates="shipment", order_by="ShipmentLine.line_no", lazy="selectin"
    )
    history: Mapped[list[ShipmentEvent]] = relationship(
        order_by="(ShipmentEvent.occurred_at, ShipmentEvent.recorded_at)",
        lazy="selectin",
        viewonly=True,
    )


class TrackingCounter(Base):
    """The last tracking number given out in a year."""

    __tablename__ = "tracking_counters"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last: Mapped[int] = mapped_column(Integer, nullable=False)


class ShipmentLine(Base):
    """One allocation carried by a shipment. An allocation travels in one shipment at a
    time; ``accepted``, ``damaged`` and ``short`` are what the latest receipt said."""

    __tablename__ = "shipment_lines"
    __table_args__ = (
        UniqueConstraint("allocation_id", name="uq_shipment_line_allocation"),
        CheckConstraint("quantity > 0", name="ck_shipment_line_quantity_positive"),
        CheckConstraint(
            "accepted >= 0 AND damaged >= 0 AND short >= 0", name="ck_shipment_line_receipt"
        ),
        CheckConstraint(
            "accepted + damaged + short <= quantity", name="ck_shipment_line_receipt_total"
        ),
        Index("ix_shipment_lines_pledge", "pledge_id"),
        Index("ix_shipment_lines_need", "need_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    shipment_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("shipments.id"), nullable=False, index=True
    )
    line_no: Mapped[int] = mapped_column(Integer, nullable=False)
    allocation_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("allocations.id"), nullable=False
    )
    pledge_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    pledge_line_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    need_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    need_line_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    item: Mapped[str] = mapped_column(String(64), nullable=False)
    standard: Mapped[str | None] = mapped_column(String(64), nullable=True)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    # As the donor packed it: boxes or cases of ``pack_size`` base units.
    pack_unit: Mapped[str | None] = mapped_column(String(16), nullable=True)
    pack_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    accepted: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    damaged: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    short: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    shipment: Mapped[Shipment] = relationship(back_populates="lines")


class ShipmentEvent(Base):
    """One row of a shipment's history. The same status at the same moment is one
    update however often it is scanned; ``applied`` says whether it moved the current
    status (a late update is kept in its place but does not move it back)."""

    __tablename__ = "shipment_events"
    __table_args__ = (
        UniqueConstraint("shipment_id", "status", "occurred_at", name="uq_shipment_event_scan"),
        Index("ix_shipment_events_shipment", "shipment_id", "occurred_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    shipment_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("shipments.id"), nullable=False)
    status: Mapped[str] = mapped_column(String(24), nullable=False)
    previous_status: Mapped[str | None] = mapped_column(String(24), nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    location: Mapped[str | None] = mapped_column(String(200), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    actor_org_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    # api, batch, receipt or system
    source: Mapped[str] = mapped_column(String(16), nullable=False, default="api")
    applied: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)


class Receipt(Base):
    """What a recipient confirmed of one shipment. The first is ``sequence`` 1; each
    correction references the receipt it corrects and takes the next number, so two
    confirmations at once cannot both be the first."""

    __tablename__ = "receipts"
    __table_args__ = (UniqueConstraint("shipment_id", "sequence", name="uq_receipt_sequence"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    shipment_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("shipments.id"), nullable=False, index=True
    )
    sequence: Mapped[int] = mapped_column(Integer, nullable=False)
    corrects_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("receipts.id"), nullable=True
    )
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)

    lines: Mapped[list[ReceiptLine]] = relationship(lazy="selectin", cascade="all, delete-orphan")


class ReceiptLine(Base):
    __tablename__ = "receipt_lines"
    __table_args__ = (
        UniqueConstraint("receipt_id", "shipment_line_id", name="uq_receipt_line"),
        CheckConstraint(
            "accepted >= 0 AND damaged >= 0 AND short >= 0", name="ck_receipt_line_nonnegative"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    receipt_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("receipts.id", ondelete="CASCADE"), nullable=False
    )
    shipment_line_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("shipment_lines.id"), nullable=False
    )
    accepted: Mapped[int] = mapped_column(Integer, nullable=False)
    damaged: Mapped[int] = mapped_column(Integer, nullable=False)
    short: Mapped[int] = mapped_column(Integer, nullable=False)


class LedgerTotal(Base):
    """The public ledger's figures of one day, region and item, kept in step with the
    lines they count in the same transaction (services/dispatch/transparency/totals.py).
    ``month`` and ``city`` are the day's and the region's, for grouping."""

    __tablename__ = "ledger_totals"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    region: Mapped[str] = mapped_column(String(6), primary_key=True)
    item: Mapped[str] = mapped_column(String(64), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), nullable=False)
    city: Mapped[str] = mapped_column(String(4), nullable=False)
    pledged: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    reserved: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    shipped: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    received: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class LedgerFlow(Base):
    """What went from one donor organisation to one recipient organisation, of one
    item, by the day the allocations were made and the need's region. An anonymous
    donor's row carries :data:`ANONYMOUS_DONOR` instead of its id, so that the public
    read model never holds who asked not to be named."""

    __tablename__ = "ledger_flows"
    __table_args__ = (
        # Flows are paged by (item, donor, recipient).
        Index("ix_ledger_flows_pair", "item", "donor_org_id", "recipient_org_id"),
    )

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    region: Mapped[str] = mapped_column(String(6), primary_key=True)
    item: Mapped[str] = mapped_column(String(64), primary_key=True)
    donor_org_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    recipient_org_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    quantity: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    shipped: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    received: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


# The donor of an anonymous pledge, in the ledger's flows.
ANONYMOUS_DONOR = uuid.UUID(int=0)


class LedgerState(Base):
    """One row: the ledger's version, moved by every commit that moves a total, and
    when. The public ledger's ETag and Last-Modified."""

    __tablename__ = "ledger_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class CommunityReach(Base):
    """What a community's distribution has reached inside it, as its latest snapshot
    (``community.units_distributed``) says: counts only, never a household. A snapshot
    replaces the one held only if its ``sequence`` is higher.

    ``units_delivered``: relief item -> units delivered, in its base unit; the units
    delivered by the shipment that brought them are its :class:`CommunityShare` rows."""

    __tablename__ = "community_reach"

    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, nullable=False)
    households_reached: Mapped[int] = mapped_column(Integer, nullable=False)
    people_served: Mapped[int] = mapped_column(Integer, nullable=False)
    vulnerable_households_reached: Mapped[int] = mapped_column(Integer, nullable=False)
    units_delivered: Mapped[dict[str, int]] = mapped_column(JSON, nullable=False)
    # The newest snapshot taken in that named every share: an older one says nothing of
    # the shares any more (each was named again by it, or none at it).
    whole_sequence: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    # When the community sent the snapshot.
    as_of: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow
    )


class CommunityShare(Base):
    """Of a community's units delivered, those of one item that one shipment brought
    (first in, first out), as the latest snapshot that named this share said: a share
    is replaced only by a snapshot numbered higher than the one that set it, so that
    snapshots taken in any order leave the latest."""

    __tablename__ = "community_shares"
    __table_args__ = (Index("ix_community_shares_org", "org_id"),)

    shipment_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    item: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    receipt_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    quantity: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sequence: Mapped[int] = mapped_column(BigInteger, nullable=False)


class HelpGiven(Base):
    """One session of help from people's time that was held, as the community service
    reported it (``community.help_session_held``): counts only, never a person.
    ``person_key`` is an opaque id the community gives every session of one person's
    chain of follow-ups alike, so that people helped can be counted apart from
    sessions; nothing here or in any other dispatch table joins it to anyone.
    ``region`` is the city (the first four digits of the helper organisation's region
    code), ``week`` the Monday of the session's week in Beijing time."""

    __tablename__ = "help_given"
    __table_args__ = (Index("ix_help_given_week_region", "week", "region"),)

    session_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    person_key: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    region: Mapped[str] = mapped_column(String(12), nullable=False)
    week: Mapped[date] = mapped_column(Date, nullable=False)
    minutes: Mapped[int] = mapped_column(Integer, nullable=False)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


messaging = define_messaging_models(Base)
