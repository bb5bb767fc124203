"""Use cases of named places: list, add, change and archive an organisation's places,
each change announced as ``place.saved`` in the same transaction."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.gateway.models import Organisation, Place
from shared.errors import Conflict, NotFound
from shared.events import new_event
from shared.identity import Identity
from shared.outbox import Outbox
from shared.places import normalised_name, place_payload

EDITABLE = (
    "name",
    "kind",
    "address",
    "region",
    "lat",
    "lon",
    "opening_hours",
    "access_notes",
    "archived",
)


def may_see(identity: Identity, org_id: uuid.UUID) -> bool:
    """An organisation's places (and the people to call there) are for its own members
    and coordinators; a logistics company sees them on the shipments it carries."""
    return identity.is_coordinator or identity.org_id == org_id


def organisation_for(session: Session, identity: Identity, org_id: uuid.UUID) -> Organisation:
    org = session.get(Organisation, org_id)
    if org is None or not may_see(identity, org_id):
        raise NotFound(f"No organisation {org_id}.", slug="organisation-not-found")
    return org


def list_places(session: Session, org_id: uuid.UUID, *, archived: bool = False) -> list[Place]:
    query = select(Place).where(Place.org_id == org_id).order_by(Place.name, Place.id)
    if not archived:
        query = query.where(Place.archived.is_(False))
    return list(session.scalars(query))


def get_place(session: Session, org_id: uuid.UUID, place_id: uuid.UUID) -> Place:
    place = session.get(Place, place_id)
    if place is None or place.org_id != org_id:
        raise NotFound(f"No place {place_id} of this organisation.", slug="place-not-found")
    return place


def _refuse_same_name(
    session: Session, org_id: uuid.UUID, name: str, but: uuid.UUID | None = None
) -> None:
    found = session.scalar(
        select(Place).where(Place.org_id == org_id, Place.normalised_name == normalised_name(name))
    )
    if found is not None and found.id != but:
        raise Conflict(
            f"The organisation already has a place named {found.name}.",
            slug="place-name-taken",
            errors={"name": ["Another place of this organisation has this name."]},
            place_id=str(found.id),
        )


def _announce(session: Session, outbox: Outbox, place: Place) -> None:
    session.flush()
    outbox.add(
        session,
        new_event(
            "place.saved",
            place_payload(place),
            producer="gateway",
            aggregate_id=place.id,
            aggregate_version=place.version,
        ),
    )


def add_place(session: Session, outbox: Outbox, org: Organisation, data: dict[str, Any]) -> Place:
    name = data["name"].strip()
    _refuse_same_name(session, org.id, name)
    contact = data.get("contact") or {}
    place = Place(
        id=uuid.uuid4(),
        org_id=org.id,
        name=name,
        normalised_name=normalised_name(name),
        kind=data.get("kind") or "warehouse",
        address=data["address"].strip(),
        region=data["region"],
        lat=data.get("lat"),
        lon=data.get("lon"),
        contact_name=contact.get("name"),
        contact_phone=contact.get("phone"),
        opening_hours=data.get("opening_hours"),
        access_notes=data.get("access_notes"),
        archived=False,
    )
    session.add(place)
    _announce(session, outbox, place)
    return place


def change_place(session: Session, outbox: Outbox, place: Place, data: dict[str, Any]) -> Place:
    if "name" in data:
        data["name"] = data["name"].strip()
        _refuse_same_name(session, place.org_id, data["name"], but=place.id)
        place.normalised_name = normalised_name(data["name"])
    for key in EDITABLE:
        if key in data:
            setattr(place, key, data[key])
    if "contact" in data:
        contact = data["contact"] or {}
        place.contact_name = contact.get("name")
        place.contact_phone = contact.get("phone")
    session.flush()  # the new version
    _announce(session, outbox, place)
    return place
