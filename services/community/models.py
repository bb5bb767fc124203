"""Tables of the community service: its copy of the organisations, the community's
buildings, who holds which role in it, its households, residents' cases, and the outbox
and inbox every service keeps.

Households are the most sensitive data aidlink holds (README: "Community"): they stay
in this database and leave it only as counts.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
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
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import Entity, UTCDateTime, utcnow
from shared.org_directory import OrganisationView
from shared.runtime import define_messaging_models


class Base(DeclarativeBase):
    pass


class Organisation(OrganisationView, Base):
    """The community service's copy of an organisation registered at the gateway."""


class Building(Entity, Base):
    """A building of a residential community, in one of its areas (片区), if it has them."""

    __tablename__ = "buildings"
    __table_args__ = (UniqueConstraint("org_id", "name", name="uq_building_name"),)

    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    area: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Appointment(Base):
    """A user of the community organisation given a narrower role than the committee's:
    the leader of a building or of an area, a volunteer, a social worker (with the
    hours a day they can give) or a case supervisor."""

    __tablename__ = "appointments"
    __table_args__ = (
        Index("ix_appointments_org_user", "org_id", "user_id"),
        CheckConstraint(
            "hours_per_day IS NULL OR (hours_per_day >= 0 AND hours_per_day <= 24)",
            name="ck_appointment_hours",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    # committee, building_leader, area_leader, volunteer, social_worker, case_supervisor
    role: Mapped[str] = mapped_column(String(24), nullable=False)
    building_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("buildings.id", ondelete="CASCADE"), nullable=True
    )
    area: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # What the community calls them (a person's name: erased with the organisation).
    name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    hours_per_day: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)


class Household(Entity, Base):
    """One household: where it lives, how many people, and the flags the community
    chose to record. ``vulnerable`` (any flag) outlives an erasure, for the counts."""

    __tablename__ = "households"
    __table_args__ = (
        UniqueConstraint("building_id", "unit", "room", name="uq_household_address"),
        CheckConstraint("people >= 1", name="ck_household_people"),
        Index("ix_households_org_building", "org_id", "building_id"),
        # A community's households reached, counted without its deliveries.
        Index("ix_households_org_reached", "org_id", "reached_at"),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    building_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("buildings.id", ondelete="RESTRICT"), nullable=False
    )
    # "" when the building has no units.
    unit: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    room: Mapped[str] = mapped_column(String(16), nullable=False)
    people: Mapped[int] = mapped_column(Integer, nullable=False)
    flags: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    vulnerable: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    # For whoever brings the goods ("call before knocking; deaf").
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    phone: Mapped[str | None] = mapped_column(String(32), nullable=True)
    erased: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    # When a delivery to it was first made (None: not reached yet). Kept with the
    # delivery, so that the community's reach counts households, not deliveries.
    reached_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class OrderRound(Entity, Base):
    """One round of household orders (a week's, say): open while building leaders enter
    them, then confirmed by the committee, whose figures (``requested``, per item in
    the item's ordering unit) become the community's need for what relief supplies
    carry."""

    __tablename__ = "order_rounds"
    __table_args__ = (Index("ix_order_rounds_org_created", "org_id", "created_at"),)

    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    title: Mapped[str] = mapped_column(String(100), nullable=False)
    # open, confirmed
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="open")
    # The most one household may order of each item, by item code.
    limits: Mapped[dict[str, int]] = mapped_column(JSON, nullable=False, default=dict)
    requested: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)
    people_served: Mapped[int | None] = mapped_column(Integer, nullable=True)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    confirmed_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)


class OrderLine(Base):
    """What one household ordered of one item in a round, in the item's ordering unit."""

    __tablename__ = "order_lines"
    __table_args__ = (
        UniqueConstraint("round_id", "household_id", "item", name="uq_order_line"),
        CheckConstraint("quantity > 0", name="ck_order_line_quantity"),
        Index("ix_order_lines_round_building", "round_id", "building_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    round_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("order_rounds.id", ondelete="CASCADE"), nullable=False
    )
    household_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("households.id", ondelete="CASCADE"), nullable=False
    )
    building_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    item: Mapped[str] = mapped_column(String(64), nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    entered_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class ReceivedGoods(Base):
    """What the community accepted of one item of one shipment, as its receipt (or the
    latest correction of it) says, in the relief item's base unit."""

    __tablename__ = "received_goods"
    # A community's goods received, not every community's; an item's goods in line,
    # for the few that a delivery's units came from.
    __table_args__ = (Index("ix_received_goods_line", "org_id", "item", "received_before"),)

    shipment_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    item: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    accepted: Mapped[int] = mapped_column(Integer, nullable=False)
    receipt_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    # When the community first received goods of this shipment: their place in line
    # (first in, first out; ties by shipment id).
    first_in: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # The units of the item the community accepted of the goods before these in line:
    # of the item's units delivered, these goods gave those from ``received_before`` to
    # ``received_before + accepted``. Kept as goods arrive (a correction moves the
    # goods after it), so that a delivery reads the few goods its units came from.
    received_before: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    # The receipt's number (1, then its corrections): a receipt older than the one
    # taken in (an original delivered after its correction) changes nothing.
    receipt_sequence: Mapped[int] = mapped_column(Integer, nullable=False, default=1)


class StockMove(Base):
    """Every unit into or out of the community's stock: ``received`` (a receipt, or its
    correction's difference), ``allocated`` to a delivery (negative), ``returned`` from a
    delivery not made, ``written_off`` with a reason (negative)."""

    __tablename__ = "stock_moves"
    __table_args__ = (Index("ix_stock_moves_org_item", "org_id", "item"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    item: Mapped[str] = mapped_column(String(64), nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    ref_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Distribution(Entity, Base):
    """One split of the community's stock over its households, by ``rule``."""

    __tablename__ = "distributions"

    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    rule: Mapped[str] = mapped_column(String(24), nullable=False)
    round_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)


class HouseholdDelivery(Entity, Base):
    """What a volunteer brings one household, and how it went: ``pending``, then
    ``delivered``, ``not_home``, ``refused`` or ``returned`` (the last three go back to
    stock). ``items``: relief item code -> quantity in its base unit."""

    __tablename__ = "household_deliveries"
    __table_args__ = (
        Index("ix_household_deliveries_org_building", "org_id", "building_id", "status"),
        Index("ix_household_deliveries_distribution", "distribution_id"),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    distribution_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("distributions.id", ondelete="RESTRICT"), nullable=False
    )
    building_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    household_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("households.id", ondelete="RESTRICT"), nullable=False
    )
    items: Mapped[dict[str, int]] = mapped_column(JSON, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    note: Mapped[str | None] = mapped_column(String(500), nullable=True)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    done_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)


class ReachUnits(Base):
    """The units a community delivered of one item, in its base unit: added to as each
    delivery is made, in the same transaction, so that its reach reads a row an item
    rather than every delivery it ever made (``check-invariants`` compares the two)."""

    __tablename__ = "reach_units"

    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    item: Mapped[str] = mapped_column(String(64), primary_key=True)
    quantity: Mapped[int] = mapped_column(BigInteger, nullable=False)


class ReachSnapshot(Base):
    """How many snapshots of a community's reach (``community.units_distributed``) it
    has sent: the next one's ``sequence``. Its row is also the lock that puts two
    volunteers' outcomes, and the snapshots they send, one after the other."""

    __tablename__ = "reach_snapshots"

    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    sequence: Mapped[int] = mapped_column(Integer, nullable=False)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # Whether a snapshot naming every share of the units delivered by shipment has been
    # sent (``whole``); until then, the next one does. Set back to false, the next
    # snapshot sends them all again.
    whole_sent: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )


class Case(Entity, Base):
    """A resident's request for a service (counselling, help to reach a clinic, ...),
    taken in by a social worker, a building leader or the committee, and handed to a
    social worker: ``open``, ``assigned``, ``in_progress``, ``closed``.

    ``summary``, ``closing_note`` and the follow-ups' notes are personal: seen by the
    assigned worker and the case supervisors only, and cleared when the household or
    the organisation is erased (``erased``), which leaves the counts."""

    __tablename__ = "cases"
    __table_args__ = (
        UniqueConstraint("org_id", "number", name="uq_case_number"),
        Index("ix_cases_org_status", "org_id", "status"),
        Index("ix_cases_org_created", "org_id", "created_at", "id"),
        Index("ix_cases_org_assigned", "org_id", "assigned_to"),
        Index("ix_cases_household", "household_id"),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    # Read by people: C-2026-0001, counted per community and year.
    number: Mapped[str] = mapped_column(String(20), nullable=False)
    kind: Mapped[str] = mapped_column(String(24), nullable=False)
    urgency: Mapped[str] = mapped_column(String(8), nullable=False)
    household_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("households.id", ondelete="RESTRICT"), nullable=True
    )
    building_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="open")
    taken_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    assigned_to: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    assigned_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    closing_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    closed_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    erased: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())


class CaseFollowUp(Base):
    """A dated note on a case: a follow-up (``note``), or the closing note kept when the
    case was reopened (``closing``), or why it was reopened (``reopened``)."""

    __tablename__ = "case_follow_ups"
    __table_args__ = (Index("ix_case_follow_ups_case_at", "case_id", "at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    case_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("cases.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(String(16), nullable=False, default="note")
    # When it happened (the visit, the call), as the worker says; recorded_at is when
    # it was written down.
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class CaseCounter(Base):
    """The last case number given in a community in a year."""

    __tablename__ = "case_counters"

    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last: Mapped[int] = mapped_column(Integer, nullable=False)


class AccessRecord(Base):
    """A coordinator who read a community's residents' data, and why."""

    __tablename__ = "access_records"
    __table_args__ = (Index("ix_access_records_org_at", "org_id", "at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    coordinator_org_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    reason: Mapped[str] = mapped_column(String(500), nullable=False)
    what: Mapped[str] = mapped_column(String(200), nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Helper(Entity, Base):
    """A member of an organisation who gives their time (a counsellor, a social worker,
    a doctor giving medical advice), registered through their organisation: what they
    are qualified for, the languages they speak, the most sessions a day (their own
    day, in ``timezone``) and their weekly availability (``[weekday, "HH:MM", "HH:MM"]``,
    local time). ``qualifications`` (kind and evidence) are personal: seen by the
    helper, their organisation's admins and coordinators. Only ``verified`` helpers
    are scheduled; ``rejected`` carries the coordinator's reason."""

    __tablename__ = "helpers"
    __table_args__ = (
        UniqueConstraint("org_id", "user_id", name="uq_helper_member"),
        CheckConstraint("daily_limit >= 0", name="ck_helper_daily_limit"),
        Index("ix_helpers_status", "status"),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    kinds: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    topics: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    languages: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    daily_limit: Mapped[int] = mapped_column(Integer, nullable=False)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False)
    availability: Mapped[list[list[Any]]] = mapped_column(JSON, nullable=False, default=list)
    qualifications: Mapped[list[dict[str, str]]] = mapped_column(JSON, nullable=False, default=list)
    # pending, verified, rejected
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    decision_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decided_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    registered_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)


class HelpRequest(Entity, Base):
    """A request for a session, from a signed-in user (``user_id``) or through the
    public form (none). ``text`` and ``contact`` are personal: they stay in this
    database, never in an event, a log line or an export beyond counts; the contact is
    shown to the assigned helper only within the session's window. ``queued_at`` is
    its place in line (a declined session's request goes back ahead of the rest);
    ``status``: ``open``, ``scheduled``, ``closed``."""

    __tablename__ = "help_requests"
    __table_args__ = (
        Index("ix_help_requests_status_queued", "status", "queued_at"),
        # A closed request's follow-up is found by the token they share.
        Index("ix_help_requests_follow_token", "follow_token_hash"),
    )

    # Indexed: a signed-in seeker's own requests.
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True, index=True)
    topic: Mapped[str] = mapped_column(String(32), nullable=False)
    urgency: Mapped[str] = mapped_column(String(8), nullable=False)
    priority_group: Mapped[str | None] = mapped_column(String(24), nullable=True)
    languages: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    # [[start, end], ...] ISO 8601 in UTC: the times the person can talk (none: any).
    windows: Mapped[list[list[str]]] = mapped_column(JSON, nullable=False, default=list)
    crisis: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    contact: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="open")
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    previous_helper_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    # The organisation a signed-in seeker asked through (their personal-data export).
    org_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    # The first request of its chain of follow-ups (none: this one): who the ledger
    # counts as one person, by an opaque id.
    first_request_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    # SHA-256 of the token an anonymous seeker follows the request with.
    follow_token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)


class HelpRun(Base):
    """A coordinator's scheduling run: a ``preview`` of the schedule over the open
    requests and verified helpers' free slots, then ``approved`` (its assignments
    became sessions). ``assignments`` and ``unassigned`` hold ids, times and reasons,
    nothing personal."""

    __tablename__ = "help_runs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="preview")
    run_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    assignments: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    unassigned: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    approved_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # A coordinator who changed the preview's assignments, and when.
    edited_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    edited_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Grows with each change of the preview (its ETag, for If-Match).
    revision: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")


class HelpSession(Entity, Base):
    """A session an approved run gave a request: with a helper in one slot, ``booked``
    until the helper ``confirmed`` or ``declined`` it. ``held_start`` is the slot's
    start while the session holds it (empty once declined): unique per helper, so no
    slot is booked twice, whatever approvals run at once."""

    __tablename__ = "help_sessions"
    __table_args__ = (
        UniqueConstraint("helper_id", "held_start", name="uq_help_session_slot"),
        Index("ix_help_sessions_request", "request_id"),
        # A helper's sessions of the days ahead, not all the helper ever held.
        Index("ix_help_sessions_helper_starts", "helper_id", "starts_at"),
        Index("ix_help_sessions_starts", "starts_at"),
    )

    helper_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("helpers.id", ondelete="RESTRICT"), nullable=False
    )
    request_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("help_requests.id", ondelete="RESTRICT"), nullable=False
    )
    run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    held_start: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # booked, confirmed, declined, held, missed, cancelled (the seeker's data erased)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="booked")
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Closed held (minutes given) or missed (by ``missed_by``: seeker or helper).
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    closed_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    missed_by: Mapped[str | None] = mapped_column(String(8), nullable=True)


# Help sessions: notes, missed sessions, the contact provider's rooms ---------------------


class HelpSessionNote(Base):
    """The helper's note on a session they held: seen by the helper and their
    organisation's admins (their supervisors) only; never in an event, a webhook, a
    log line or a public export. Deleted after the retention period
    (``AIDLINK_HELP_NOTE_RETENTION_DAYS``) and on erasure."""

    __tablename__ = "help_session_notes"
    __table_args__ = (
        UniqueConstraint("session_id", name="uq_help_session_note"),
        Index("ix_help_session_notes_written", "written_at"),
        Index("ix_help_session_notes_org", "org_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("help_sessions.id", ondelete="CASCADE"), nullable=False
    )
    helper_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    # The helper's organisation: whose admins read it.
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    note: Mapped[str] = mapped_column(Text, nullable=False)
    follow_up: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    written_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    written_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class HelpConnection(Base):
    """A connection the contact provider made for a session: a masked call-back or a
    room (``room_url``, answered again to the helper while the session's window
    lasts). Holds no phone number."""

    __tablename__ = "help_connections"
    __table_args__ = (Index("ix_help_connections_session", "session_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("help_sessions.id", ondelete="CASCADE"), nullable=False
    )
    provider: Mapped[str] = mapped_column(String(64), nullable=False)
    # call_back, room
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    reference: Mapped[str | None] = mapped_column(String(200), nullable=True)
    room_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class HelpRule(Base):
    """The coordinators' rule of who is served first within an urgency: the priority
    groups (medical staff, patients, their families) they named, one row. Until they
    name any, ``AIDLINK_HELP_PRIORITY_GROUPS`` is the rule."""

    __tablename__ = "help_rule"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    priority_groups: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


# Hotlines: their call log --------------------------------------------------------------


class Hotline(Entity, Base):
    """A telephone line an organisation runs for people to call (a social-work
    station's help line): its public number, the languages its operators speak and
    the region (GB/T 2260) it serves. Nothing in it is personal."""

    __tablename__ = "hotlines"
    __table_args__ = (
        UniqueConstraint("org_id", "name", name="uq_hotline_name"),
        Index("ix_hotlines_org", "org_id"),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    phone: Mapped[str] = mapped_column(String(32), nullable=False)
    languages: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    region: Mapped[str] = mapped_column(String(6), nullable=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)


class HotlineCall(Entity, Base):
    """One call an operator logged: its category (``information``, ``counselling``,
    ``emergency``, ``other``), the caller's community or region, and how long it
    took. No caller's name or number: what an emergency or a booking needs of the
    person lives in the household, case or request for help it ``became``
    (``delivery``, ``case`` or ``booking``), under their rules."""

    __tablename__ = "hotline_calls"
    __table_args__ = (
        CheckConstraint("minutes >= 0 AND minutes <= 600", name="ck_hotline_call_minutes"),
        Index("ix_hotline_calls_hotline_at", "hotline_id", "at", "id"),
        Index("ix_hotline_calls_org_at", "org_id", "at"),
    )

    hotline_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("hotlines.id", ondelete="RESTRICT"), nullable=False
    )
    # The hotline's organisation, for its daily report.
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    category: Mapped[str] = mapped_column(String(16), nullable=False)
    community_org_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    region: Mapped[str | None] = mapped_column(String(6), nullable=True)
    minutes: Mapped[int] = mapped_column(Integer, nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    logged_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    became: Mapped[str | None] = mapped_column(String(16), nullable=True)
    delivery_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("household_deliveries.id", ondelete="RESTRICT"), nullable=True
    )
    case_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("cases.id", ondelete="RESTRICT"), nullable=True
    )
    help_request_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("help_requests.id", ondelete="RESTRICT"), nullable=True
    )
    became_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


messaging = define_messaging_models(Base)
