"""Use cases of hotlines: an organisation's hotlines; the calls their operators log;
an emergency call made, in one step, a household delivery from the caller's
community's stock or a case in that community; a counselling call made a request for
help; and the daily figures per hotline and per organisation.

Who does what: any signed-in member of the hotline's organisation is its operator
(logs calls, reads them, takes an emergency or a booking further); coordinators read
everything and change nothing but hotlines; anyone else is answered as if the hotline
did not exist.

A call row holds no caller's name or number. What an emergency or a booking needs of
the person (a door, a phone, a name, what they need) goes where the household, the
case or the request for help keeps it, under their rules; nothing here logs it or
sends it in an event.
"""

from __future__ import annotations

import logging
import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.community.cases import service as cases
from services.community.distribution import service as distribution
from services.community.hotlines import domain
from services.community.models import (
    Building,
    Case,
    HelpRequest,
    Hotline,
    HotlineCall,
    Household,
    HouseholdDelivery,
    Organisation,
)
from services.community.residents import service as residents
from services.community.residents.domain import Standing
from services.community.sessions import service as sessions
from shared.catalog.community import community_item
from shared.db import move_once, utcnow
from shared.errors import Conflict, Forbidden, NotFound, RuleBroken
from shared.identity import ORG_ADMIN, Identity
from shared.pagination import paginate

log = logging.getLogger(__name__)


# Hotlines --------------------------------------------------------------------------------


def _member_of(identity: Identity, org_id: uuid.UUID) -> bool:
    return identity.authenticated and identity.org_id == org_id


def create_hotline(session: Session, identity: Identity, data: dict[str, Any]) -> Hotline:
    """A hotline of an organisation: its admins' for their own verified organisation,
    or a coordinator's for any organisation they name."""
    org_id = data.get("org_id")
    if identity.is_coordinator:
        if org_id is None:
            raise RuleBroken(
                "Name the organisation that runs the hotline.",
                errors={"org_id": ["A coordinator names the organisation."]},
            )
    else:
        if identity.org_id is None or ORG_ADMIN not in identity.roles:
            raise Forbidden(
                "An organisation's admins set up its hotlines (or a coordinator).",
                slug="forbidden",
            )
        if org_id is not None and org_id != identity.org_id:
            raise Forbidden("Set up hotlines of your own organisation only.", slug="forbidden")
        if identity.org_status != "verified":
            raise Forbidden(
                "Hotlines are run by verified organisations.", slug="organisation-not-verified"
            )
        org_id = identity.org_id
    if session.get(Organisation, org_id) is None:
        raise RuleBroken(
            f"No organisation {org_id}.",
            errors={"org_id": ["No such organisation is known to the community service."]},
        )
    hotline = Hotline(
        id=uuid.uuid4(),
        org_id=org_id,
        name=data["name"].strip(),
        phone=data["phone"].strip(),
        languages=list(dict.fromkeys(data["languages"])),
        region=data["region"],
        created_by=identity.user_id,
    )
    session.add(hotline)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(
            f"The organisation already has a hotline called {hotline.name!r}.",
            slug="hotline-exists",
            errors={"name": ["Already a hotline of this organisation."]},
        ) from None
    log.info("hotline %s of organisation %s set up", hotline.id, org_id)
    return hotline


def list_hotlines(session: Session, identity: Identity) -> list[Hotline]:
    """Every hotline for coordinators; an organisation's own for its members."""
    stmt = select(Hotline).order_by(Hotline.created_at, Hotline.id)
    if not identity.is_coordinator:
        if identity.org_id is None:
            return []
        stmt = stmt.where(Hotline.org_id == identity.org_id)
    return list(session.scalars(stmt))


def get_hotline(session: Session, identity: Identity, hotline_id: uuid.UUID) -> Hotline:
    """A hotline its organisation's members and coordinators read; to anyone else it
    does not exist."""
    hotline = session.get(Hotline, hotline_id)
    if hotline is None or not (identity.is_coordinator or _member_of(identity, hotline.org_id)):
        raise NotFound(f"No hotline {hotline_id}.", slug="hotline-not-found")
    return hotline


def operated(session: Session, identity: Identity, hotline_id: uuid.UUID) -> Hotline:
    """A hotline the caller operates (a member of its organisation): coordinators read
    calls but log none; anyone else is answered as if it did not exist."""
    hotline = get_hotline(session, identity, hotline_id)
    if not _member_of(identity, hotline.org_id):
        raise Forbidden(
            "Calls are logged by the hotline's operators, its organisation's members.",
            slug="forbidden",
        )
    if not identity.org_active:
        raise Forbidden("Your organisation is not active.", slug="organisation-not-active")
    return hotline


def dump_hotline(hotline: Hotline) -> dict[str, Any]:
    return {
        "id": hotline.id,
        "org_id": hotline.org_id,
        "name": hotline.name,
        "phone": hotline.phone,
        "languages": hotline.languages,
        "region": hotline.region,
        "version": hotline.version,
        "created_at": hotline.created_at,
    }


# Calls -----------------------------------------------------------------------------------


def _community(session: Session, org_id: uuid.UUID, field: str) -> Organisation:
    org = session.get(Organisation, org_id)
    if org is None or org.kind != residents.COMMUNITY_KIND:
        raise RuleBroken(
            f"No community {org_id}.",
            errors={field: ["Not a community committee known to the community service."]},
        )
    return org


def log_call(
    session: Session, identity: Identity, hotline_id: uuid.UUID, data: dict[str, Any]
) -> HotlineCall:
    """One call as its operator logs it: category, the caller's community or region,
    the minutes it took, when (now unless said; never in the future)."""
    hotline = operated(session, identity, hotline_id)
    now = utcnow()
    at = data.get("at") or now
    if not domain.in_range(at):
        raise RuleBroken(
            "The call's time is out of range.", errors={"at": ["A time of this era, please."]}
        )
    if at > now + domain.CLOCK_SKEW:
        raise RuleBroken(
            "A call is logged once it happened.",
            errors={"at": ["A call cannot be dated in the future."]},
        )
    region = data.get("region")
    community_id = data.get("community_org_id")
    if community_id is not None:
        community = _community(session, community_id, "community_org_id")
        region = region or community.region[:6]
    call = HotlineCall(
        id=uuid.uuid4(),
        hotline_id=hotline.id,
        org_id=hotline.org_id,
        category=data["category"],
        community_org_id=community_id,
        region=region,
        minutes=data["minutes"],
        at=at,
        logged_by=identity.user_id,
    )
    session.add(call)
    session.flush()
    log.info("hotline %s: %s call %s logged", hotline.id, call.category, call.id)
    return call


def list_calls(
    session: Session,
    identity: Identity,
    hotline_id: uuid.UUID,
    *,
    day: date | None,
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    """A hotline's calls, newest first, of one Beijing day if ``day`` is given: its
    operators and coordinators."""
    hotline = get_hotline(session, identity, hotline_id)
    stmt = select(HotlineCall).where(HotlineCall.hotline_id == hotline.id)
    if day is not None:
        start, end = _bounds(day)
        stmt = stmt.where(HotlineCall.at >= start, HotlineCall.at < end)
    page = paginate(
        session, stmt, HotlineCall, cursor=cursor, limit=limit, time_column="at", newest_first=True
    )
    page["items"] = [dump_call(call) for call in page["items"]]
    return page


def get_call(
    session: Session, identity: Identity, hotline_id: uuid.UUID, call_id: uuid.UUID
) -> HotlineCall:
    hotline = get_hotline(session, identity, hotline_id)
    return _call_of(session, hotline, call_id)


def _call_of(session: Session, hotline: Hotline, call_id: uuid.UUID) -> HotlineCall:
    call = session.get(HotlineCall, call_id)
    if call is None or call.hotline_id != hotline.id:
        raise NotFound(f"No call {call_id} on this hotline.", slug="call-not-found")
    return call


def dump_call(call: HotlineCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "hotline_id": call.hotline_id,
        "org_id": call.org_id,
        "category": call.category,
        "community_org_id": call.community_org_id,
        "region": call.region,
        "minutes": call.minutes,
        "at": call.at,
        "day": domain.beijing_day(call.at),
        "logged_by": call.logged_by,
        "became": call.became,
        "delivery_id": call.delivery_id,
        "case_id": call.case_id,
        "help_request_id": call.help_request_id,
        "became_at": call.became_at,
        "version": call.version,
        "created_at": call.created_at,
    }


def _claim(session: Session, call: HotlineCall, became: str) -> None:
    """Mark the call as becoming ``became``, once: of two steps on one call at the same
    moment, the second finds it taken (its row stays locked until the first commits)
    and is refused whole, so a call never makes two deliveries."""
    if not move_once(
        session, call, HotlineCall.became.is_(None), became=became, became_at=utcnow()
    ):
        raise Conflict(
            f"This call already became a {call.became}.",
            slug="call-already-taken-further",
            current_status=call.became,
        )


# An emergency call, in one step ---------------------------------------------------------


def _served_community(
    session: Session, hotline: Hotline, call: HotlineCall, named: uuid.UUID | None
) -> Organisation:
    """The caller's community, which the hotline must serve: the call's, or the one
    named now for a call logged without it."""
    if call.community_org_id is not None and named is not None and named != call.community_org_id:
        raise RuleBroken(
            "The call was logged from another community.",
            errors={"community_org_id": ["Leave it out, or name the call's community."]},
        )
    community_id = call.community_org_id or named
    if community_id is None:
        raise RuleBroken(
            "Say which community the caller lives in.",
            errors={"community_org_id": ["The caller's community is needed for this."]},
        )
    community = _community(session, community_id, "community_org_id")
    if not domain.serves(hotline.region, str(hotline.org_id), community.region, str(community.id)):
        raise Forbidden(
            f"This hotline serves region {hotline.region}; the community is in {community.region}.",
            slug="community-not-served",
            errors={"community_org_id": [f"Outside region {hotline.region}."]},
        )
    call.community_org_id = community.id
    return community


def _for_community(community: Organisation, identity: Identity) -> Standing:
    # The one step acts in the community as its committee would, through the
    # committee's own use cases (its households, its stock, its cases' intake), so the
    # community's rules hold whoever picked up the phone.
    return Standing(org_id=community.id, committee=True, user_id=identity.user_id)


def _wanted_goods(
    session: Session, org_id: uuid.UUID, items: dict[str, int]
) -> tuple[dict[str, int], list[str]]:
    """The goods asked for, by community item code in ordered units, and the relief
    items they are taken from, each checked against the community's stock: an unknown
    item is a 422, one the stock lacks (or has too little of) a 409 naming it."""
    stock = distribution.stock_of(session, org_id)
    wanted: dict[str, int] = {}
    relief: set[str] = set()
    for name, units in items.items():
        item = community_item(name)
        if item is None:
            raise RuleBroken(
                f"No item {name!r} in the community catalogue.",
                errors={f"items.{name}": ["Not an item of the community catalogue."]},
            )
        have = stock.get(item.relief_item, 0) if item.relief_item else 0
        need = units * item.base_per_unit
        if need > have:
            in_units = have // item.base_per_unit
            raise Conflict(
                f"The community's stock lacks {item.names.en.lower()} ({item.code}): "
                f"{units} {item.unit.en} asked for, {in_units} in stock.",
                slug="not-in-stock",
                errors={f"items.{name}": [f"{in_units} {item.unit.en} in stock."]},
                item=item.code,
                in_stock=in_units,
            )
        wanted[item.code] = wanted.get(item.code, 0) + units
        relief.add(str(item.relief_item))
    return wanted, sorted(relief)


def _household_for(session: Session, standing: Standing, data: dict[str, Any]) -> Household:
    """The household named by id, or the one at the door given (made if the community
    has none there yet: one person, living alone unless said)."""
    if data.get("household_id") is not None:
        household = session.get(Household, data["household_id"])
        if household is None or household.org_id != standing.org_id or household.erased:
            raise RuleBroken(
                "No such household in the caller's community.",
                errors={"household_id": ["Not a household of this community."]},
            )
        return household
    door = data.get("household")
    if not door:
        raise RuleBroken(
            "Name the household, or give its door.",
            errors={"household": ["Give household_id, or the building, unit and room."]},
        )
    building: Building | None
    if door.get("building_id") is not None:
        building = session.get(Building, door["building_id"])
        if building is not None and building.org_id != standing.org_id:
            building = None
    else:
        building = session.scalar(
            select(Building).where(
                Building.org_id == standing.org_id, Building.name == (door.get("building") or "")
            )
        )
    if building is None:
        raise RuleBroken(
            "No such building in the caller's community.",
            errors={"household.building": ["Name a building of this community (by name or id)."]},
        )
    unit, room = (door.get("unit") or "").strip(), door["room"].strip()
    there = session.scalar(
        select(Household).where(
            Household.building_id == building.id,
            Household.unit == unit,
            Household.room == room,
            Household.erased.is_(False),
        )
    )
    if there is not None:
        # What the caller just gave (a phone, a note for the door) reaches the
        # volunteers on this delivery: it updates the household's.
        given = {k: door[k] for k in ("phone", "note") if door.get(k)}
        if given:
            residents.change_household(session, standing, there, given)
        return there
    made = residents.add_household(
        session,
        standing,
        {
            "building_id": building.id,
            "unit": unit,
            "room": room,
            "people": door.get("people") or 1,
            "flags": door.get("flags") if door.get("flags") is not None else ["elderly_alone"],
            "note": door.get("note"),
            "phone": door.get("phone"),
        },
    )
    return made


def emergency(
    session: Session,
    identity: Identity,
    hotline_id: uuid.UUID,
    call_id: uuid.UUID,
    data: dict[str, Any],
) -> dict[str, Any]:
    """An emergency call taken further in one step, all or nothing: ``as`` a delivery
    (the household, made or found, and one delivery from the community's stock of the
    goods asked for, for its volunteers) or ``as`` a case (urgent, in the community's
    intake). The call records what it became; a second step on it is a 409."""
    hotline = operated(session, identity, hotline_id)
    call = _call_of(session, hotline, call_id)
    if call.category != "emergency":
        raise Conflict(
            f"This is a {call.category} call; only an emergency call becomes a delivery or a case.",
            slug="not-an-emergency-call",
            current_status=call.category,
        )
    _claim(session, call, data["as"])
    community = _served_community(session, hotline, call, data.get("community_org_id"))
    standing = _for_community(community, identity)
    answer: dict[str, Any] = {}
    if data["as"] == "delivery":
        # Two operators taking calls from one community further at once would both see
        # the same stock: the community's row, locked until the commit, puts them one
        # after the other (on PostgreSQL; SQLite's writers queue anyway).
        session.execute(
            select(Organisation.id).where(Organisation.id == community.id).with_for_update()
        )
        goods, from_stock = _wanted_goods(session, community.id, data.get("items") or {})
        if not goods:
            raise RuleBroken(
                "Say what to bring.", errors={"items": ["At least one item and quantity."]}
            )
        household = _household_for(session, standing, data)
        split = distribution.distribute(
            session,
            standing,
            {
                "rule": "by_hand",
                "items": from_stock,
                "allocations": {str(household.id): goods},
            },
        )
        delivery = session.scalars(
            select(HouseholdDelivery).where(HouseholdDelivery.distribution_id == split.id)
        ).one()
        call.delivery_id = delivery.id
        # Which household it is, and whether the community had it already, stays with
        # the community: the operator's answer says where the delivery goes, so that
        # no door can be probed for whether a household lives there.
        answer = {
            "delivery_id": delivery.id,
            "building_id": delivery.building_id,
            "delivery_items": delivery.items,
        }
    else:
        if data.get("household_id") is None and data.get("household"):
            raise RuleBroken(
                "A case names a household the community already has, by its id.",
                errors={"household": ["Use household_id for a case."]},
            )
        summary = (data.get("summary") or "").strip()
        if not summary:
            raise RuleBroken(
                "Say what the caller needs.",
                errors={"summary": ["What the caller needs, and how to reach them."]},
            )
        case = cases.take_in(
            session,
            standing,
            {
                "kind": data.get("kind") or "medicine_pickup",
                "urgency": data.get("urgency") or domain.CASE_URGENCY,
                "household_id": data.get("household_id"),
                "summary": summary,
            },
        )
        call.case_id = case.id
        answer = {"case_id": case.id, "case_number": case.number, "household_id": case.household_id}
    session.flush()
    log.info("hotline call %s became a %s in %s", call.id, call.became, community.id)
    return {**dump_call(call), **answer}


# A counselling call booked --------------------------------------------------------------


def book(
    session: Session,
    identity: Identity,
    hotline_id: uuid.UUID,
    call_id: uuid.UUID,
    data: dict[str, Any],
) -> tuple[HotlineCall, HelpRequest]:
    """A counselling call made a request for help in the queue, as the public form
    makes one: the seeker is the caller, not the operator, so the request is no
    operator's own. The caller's contact and words live in the request only."""
    hotline = operated(session, identity, hotline_id)
    call = _call_of(session, hotline, call_id)
    if call.category != "counselling":
        raise Conflict(
            f"This is a {call.category} call; only a counselling call is booked into a session.",
            slug="not-a-counselling-call",
            current_status=call.category,
        )
    _claim(session, call, "booking")
    asked = sessions.ask_for_help(session, Identity(), data)
    call.help_request_id = asked.id
    session.flush()
    log.info("hotline call %s booked as help request %s", call.id, asked.id)
    return call, asked


# Daily figures ---------------------------------------------------------------------------


def _facts(session: Session, calls: list[HotlineCall]) -> list[domain.CallFacts]:
    deliveries = {c.delivery_id for c in calls if c.delivery_id}
    case_ids = {c.case_id for c in calls if c.case_id}
    delivered = (
        set(
            session.scalars(
                select(HouseholdDelivery.id).where(
                    HouseholdDelivery.id.in_(deliveries), HouseholdDelivery.status == "delivered"
                )
            )
        )
        if deliveries
        else set()
    )
    closed = (
        set(session.scalars(select(Case.id).where(Case.id.in_(case_ids), Case.status == "closed")))
        if case_ids
        else set()
    )
    return [
        domain.CallFacts(
            category=c.category,
            minutes=c.minutes,
            became=c.became,
            fulfilled=(c.delivery_id in delivered) or (c.case_id in closed),
        )
        for c in calls
    ]


def _bounds(day: date) -> tuple[datetime, datetime]:
    try:
        return domain.day_bounds(day)
    except ValueError:
        raise RuleBroken(
            f"The day {day} is out of range.", errors={"day": ["A day of this era, please."]}
        ) from None


def _calls_of_day(session: Session, day: date, *where: Any) -> list[HotlineCall]:
    start, end = _bounds(day)
    return list(
        session.scalars(
            select(HotlineCall).where(*where, HotlineCall.at >= start, HotlineCall.at < end)
        )
    )


def hotline_report(
    session: Session, identity: Identity, hotline_id: uuid.UUID, day: date
) -> dict[str, Any]:
    """One hotline's figures of a Beijing day: its operators and coordinators."""
    hotline = get_hotline(session, identity, hotline_id)
    calls = _calls_of_day(session, day, HotlineCall.hotline_id == hotline.id)
    return {
        "hotline_id": hotline.id,
        "org_id": hotline.org_id,
        "day": day,
        **domain.figures(_facts(session, calls)),
    }


def organisation_report(
    session: Session, identity: Identity, org_id: uuid.UUID | None, day: date
) -> dict[str, Any]:
    """An organisation's figures of a Beijing day, all its hotlines together and each
    on its own: its members (their own organisation's) and coordinators (any, named
    in ``org_id``)."""
    if org_id is None:
        if identity.is_coordinator:
            raise RuleBroken(
                "Name the organisation.",
                errors={"org_id": ["A coordinator names the organisation."]},
            )
        org_id = identity.org_id
    if org_id is None or not (identity.is_coordinator or _member_of(identity, org_id)):
        raise NotFound(f"No hotlines of organisation {org_id}.", slug="organisation-not-found")
    lines = list(
        session.scalars(
            select(Hotline).where(Hotline.org_id == org_id).order_by(Hotline.name, Hotline.id)
        )
    )
    calls = _calls_of_day(session, day, HotlineCall.org_id == org_id)
    per_hotline = []
    for hotline in lines:
        own = [c for c in calls if c.hotline_id == hotline.id]
        per_hotline.append(
            {
                "hotline_id": hotline.id,
                "name": hotline.name,
                **domain.figures(_facts(session, own)),
            }
        )
    return {
        "org_id": org_id,
        "day": day,
        **domain.figures(_facts(session, calls)),
        "hotlines": per_hotline,
    }
