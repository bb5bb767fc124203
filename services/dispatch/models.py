"""Tables of the dispatch service: needs and their lines, the read model of available
supply, allocations, matching runs and the locks that keep runs of an item apart."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
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
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.db import Entity, UTCDateTime, utcnow
from shared.org_directory import OrganisationView
from shared.web import define_messaging_models


class Base(DeclarativeBase):
    pass


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
        Index("ix_needs_status_expires", "status", "expires_at"),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    # draft, open, partially_allocated, allocated, fulfilled, expired, cancelled
    status: Mapped[str] = mapped_column(String(24), nullable=False, default="draft")
    address: Mapped[str | None] = mapped_column(String(500), nullable=True)
    region: Mapped[str] = mapped_column(String(6), nullable=False)
    lat: Mapped[float | None] = mapped_column(Float, nullable=True)
    lon: Mapped[float | None] = mapped_column(Float, nullable=True)
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
    __table_args__ = (Index("ix_supply_lines_item_status", "item", "status"),)

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
    region: Mapped[str] = mapped_column(String(6), nullable=False)
    lat: Mapped[float | None] = mapped_column(Float, nullable=True)
    lon: Mapped[float | None] = mapped_column(Float, nullable=True)
    pledge_version: Mapped[int] = mapped_column(Integer, nullable=False)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Allocation(Base):
    """A quantity of one pledge line for one need line, through the saga:
    proposed -> reserved | rejected; reserved -> shipped -> delivered; or cancelled."""

    __tablename__ = "allocations"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="ck_allocation_quantity_positive"),
        Index("ix_allocations_need_line", "need_line_id", "status"),
        Index("ix_allocations_pledge_line", "pledge_line_id", "status"),
        Index("ix_allocations_created", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True, index=True)
    pledge_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, index=True)
    pledge_line_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    donor_org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    need_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("needs.id"), nullable=False, index=True
    )
    need_line_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("need_lines.id"), nullable=False
    )
    recipient_org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    item: Mapped[str] = mapped_column(String(64), nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    # proposed, reserved, rejected, cancelled, shipped, delivered
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="proposed")
    reason: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    status_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow
    )
    # The allocation's events in order: allocation.proposed is 1, a cancellation 2+.
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)


class MatchingRun(Base):
    """One run of the matcher: a preview to approve, or applied at once."""

    __tablename__ = "matching_runs"
    __table_args__ = (Index("ix_matching_runs_created", "created_at", "id"),)

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


messaging = define_messaging_models(Base)
