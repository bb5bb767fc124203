"""Tables of the donations service: pledges, their lines, reservations against the
lines, and spreadsheet import jobs."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
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
    """The donations service's copy of an organisation registered at the gateway."""


class Pledge(Entity, Base):
    """What one donor organisation offers, in lines. ``version`` is its ETag and the
    aggregate version of its events; every change to a line bumps it."""

    __tablename__ = "pledges"
    __table_args__ = (
        Index("ix_pledges_org_created", "org_id", "created_at"),
        # The order of every list of pledges (shared/pagination.py).
        Index("ix_pledges_created", "created_at", "id"),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    # open, cancelled or closed (every line delivered, expired or cancelled)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="open", index=True)
    # The named place it leaves from (shared.places), when one was named.
    origin_place_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    origin_address: Mapped[str | None] = mapped_column(String(500), nullable=True)
    origin_region: Mapped[str] = mapped_column(String(6), nullable=False)
    origin_lat: Mapped[float | None] = mapped_column(Float, nullable=True)
    origin_lon: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Whom the driver calls at the pickup.
    origin_contact_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    origin_contact_phone: Mapped[str | None] = mapped_column(String(32), nullable=True)
    available_from: Mapped[date | None] = mapped_column(Date, nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    catalog_version: Mapped[str] = mapped_column(String(16), nullable=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    import_job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True, index=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancel_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The donor (an individual) asked not to be named in the public ledger.
    anonymous: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )

    lines: Mapped[list[PledgeLine]] = relationship(
        back_populates="pledge",
        order_by="PledgeLine.line_no",
        lazy="selectin",
        cascade="all, delete-orphan",
    )


class PledgeLine(Base):
    """One item of a pledge. Quantities are integers in the item's base unit.

    ``reserved`` is held for allocations not yet shipped; ``shipped`` counts every
    unit that left (``delivered`` is the part of it that arrived). The database
    refuses any write that would make reserved + shipped exceed the pledged quantity.
    """

    __tablename__ = "pledge_lines"
    __table_args__ = (
        UniqueConstraint("pledge_id", "line_no", name="uq_pledge_line_no"),
        CheckConstraint("quantity > 0", name="ck_pledge_line_quantity_positive"),
        CheckConstraint(
            "reserved >= 0 AND shipped >= 0 AND delivered >= 0", name="ck_pledge_line_nonnegative"
        ),
        CheckConstraint("reserved + shipped <= quantity", name="ck_pledge_line_not_overcommitted"),
        CheckConstraint("delivered <= shipped", name="ck_pledge_line_delivered_shipped"),
        Index("ix_pledge_lines_item_status", "item", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    pledge_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("pledges.id", ondelete="CASCADE"), nullable=False
    )
    line_no: Mapped[int] = mapped_column(Integer, nullable=False)
    item: Mapped[str] = mapped_column(String(64), nullable=False)
    standard: Mapped[str | None] = mapped_column(String(64), nullable=True)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    # As the donor entered it, e.g. 20 boxes of 50.
    entered_quantity: Mapped[str] = mapped_column(String(32), nullable=False)
    entered_unit: Mapped[str] = mapped_column(String(16), nullable=False)
    pack_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Indexed: the hourly sweep of perishables reads the lines past it, not every line.
    best_before: Mapped[date | None] = mapped_column(Date, nullable=True, index=True)
    restrictions: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    reserved: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    shipped: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    delivered: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # available, partially_reserved, reserved, partially_shipped, shipped,
    # partially_delivered, delivered, cancelled, expired (pledges.domain.line_status)
    status: Mapped[str] = mapped_column(String(24), nullable=False, default="available")

    pledge: Mapped[Pledge] = relationship(back_populates="lines")


class Reservation(Base):
    """Quantity of a pledge line held for one allocation of the dispatch service."""

    __tablename__ = "reservations"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="ck_reservation_quantity_positive"),
        Index("ix_reservations_status_deadline", "status", "deadline"),
        # A pledge's reservations (its cancellation, its anonymity changed).
        Index("ix_reservations_pledge", "pledge_id", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # One reservation per allocation, whatever the number of deliveries of its event.
    allocation_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, unique=True)
    pledge_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("pledges.id"), nullable=False)
    pledge_line_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("pledge_lines.id"), nullable=False, index=True
    )
    need_line_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    recipient_org_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    # active (reserved), shipped, delivered, lost (shipped, never arrived), released,
    # rejected
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow
    )
    # The events applied to this reservation, in order (allocation.proposed = 1, ...).
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)


class ImportJob(Base):
    """A spreadsheet of pledge lines being validated and imported by a worker."""

    __tablename__ = "import_jobs"
    __table_args__ = (
        UniqueConstraint("org_id", "sha256", name="uq_import_job_file"),
        Index("ix_import_jobs_org_created", "org_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, index=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    content_type: Mapped[str] = mapped_column(String(16), nullable=False)  # csv or xlsx
    content: Mapped[bytes] = mapped_column(nullable=False)
    # all_or_nothing or valid_rows
    mode: Mapped[str] = mapped_column(String(16), nullable=False)
    language: Mapped[str] = mapped_column(String(8), nullable=False, default="en")
    # queued, running, succeeded, failed
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued")
    rows_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rows_done: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    rows_imported: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)
    defaults: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    pledge_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


messaging = define_messaging_models(Base)
