"""Named places: an organisation's warehouses, loading bays and collection points.

The gateway keeps them (``services.gateway.places``) and announces each change as
``place.saved``; donations and dispatch keep a copy (``PlaceView``), from which a
pledge's origin or a need's location naming a place is filled in
(``resolve_location``). The same place is the same origin or destination, however
the pledge or need came in (API, form, spreadsheet): shipments are planned by place.

A place holds an address, a region code, coordinates when known, a contact person
and phone, opening hours and access notes ("closed-off compound: call the gate"),
which the logistics company carrying goods there is shown with the shipment.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from marshmallow import Schema, fields, validate
from sqlalchemy import Boolean, Float, String, Uuid, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from shared.catalog.regions import RegionCode
from shared.contacts import PlaceContactSchema, contact_of
from shared.db import UTCDateTime, utcnow
from shared.errors import RuleBroken
from shared.events import Event
from shared.events.supply import PLACE_KINDS

__all__ = ["PLACE_KINDS", "PlaceView", "place_event_handlers", "resolve_location"]


class PlaceView:
    """Columns of a service's ``places`` read model."""

    if TYPE_CHECKING:

        def __init__(self, **columns: Any) -> None: ...

    __tablename__ = "places"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    kind: Mapped[str] = mapped_column(String(24), nullable=False)
    address: Mapped[str] = mapped_column(String(500), nullable=False)
    region: Mapped[str] = mapped_column(String(6), nullable=False)
    lat: Mapped[float | None] = mapped_column(Float, nullable=True)
    lon: Mapped[float | None] = mapped_column(Float, nullable=True)
    contact_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    contact_phone: Mapped[str | None] = mapped_column(String(32), nullable=True)
    opening_hours: Mapped[str | None] = mapped_column(String(200), nullable=True)
    access_notes: Mapped[str | None] = mapped_column(String(500), nullable=True)
    archived: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    source_version: Mapped[int] = mapped_column(nullable=False)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


def place_payload(place: Any) -> dict[str, Any]:
    """A place (the gateway's or a read model's) as ``place.saved`` carries it."""
    return {
        "id": place.id,
        "org_id": place.org_id,
        "name": place.name,
        "kind": place.kind,
        "address": place.address,
        "region": place.region,
        "lat": place.lat,
        "lon": place.lon,
        "contact": contact_of(place.contact_name, place.contact_phone),
        "opening_hours": place.opening_hours,
        "access_notes": place.access_notes,
        "archived": bool(place.archived),
    }


def place_event_handlers(model: type[PlaceView]) -> dict[str, Any]:
    """Handlers that keep ``model`` in step with the gateway's places."""

    def on_saved(session: Session, event: Event) -> None:
        data = event.data()
        place = session.get(model, data["id"])
        if place is not None and place.source_version >= event.aggregate_version:
            return  # an older state than the one we hold
        if place is None:
            place = model(id=data["id"])
            session.add(place)
        contact = data.get("contact") or {}
        place.org_id = data["org_id"]
        place.name = data["name"]
        place.kind = data["kind"]
        place.address = data["address"]
        place.region = data["region"]
        place.lat = data.get("lat")
        place.lon = data.get("lon")
        place.contact_name = contact.get("name")
        place.contact_phone = contact.get("phone")
        place.opening_hours = data.get("opening_hours")
        place.access_notes = data.get("access_notes")
        place.archived = bool(data.get("archived"))
        place.source_version = event.aggregate_version
        place.synced_at = utcnow()

    return {"place.saved": on_saved}


class LocationInSchema(Schema):
    """A pledge's origin or a need's location as the API takes it: a named place of the
    organisation, or an address with its region (``resolve_location``)."""

    place_id = fields.UUID(
        load_default=None,
        allow_none=True,
        metadata={
            "description": "One of the organisation's named places "
            "(/api/v1/orgs/{org_id}/places): its address, region, coordinates and "
            "contact are used (give none of them then)"
        },
    )
    place = fields.String(
        load_default=None,
        allow_none=True,
        load_only=True,
        validate=validate.Length(min=1, max=100),
        metadata={"description": "The same, by the place's name"},
    )
    address = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))
    region = fields.String(
        load_default=None,
        allow_none=True,
        validate=RegionCode(),
        metadata={"description": "Required unless a place is named"},
    )
    lat = fields.Float(load_default=None, allow_none=True, validate=validate.Range(-90, 90))
    lon = fields.Float(load_default=None, allow_none=True, validate=validate.Range(-180, 180))
    contact = fields.Nested(
        PlaceContactSchema,
        load_default=None,
        allow_none=True,
        metadata={"description": "Whom the driver calls there; seen by the carrier"},
    )


# What an erased person's place keeps of its address (its region stays).
ERASED_ADDRESS = "已删除 / Erased"


def erase_places(session: Session, model: Any, org_id: uuid.UUID) -> None:
    """A person's data erased on request: its places keep their region, and no
    address, coordinates or contact (the gateway's places and the services' copies)."""
    for place in session.scalars(select(model).where(model.org_id == org_id)):
        place.address = ERASED_ADDRESS
        place.lat = place.lon = None
        place.contact_name = place.contact_phone = None


def normalised_name(name: str) -> str:
    """A place's name as it is compared: full-width forms folded, case and spaces
    ignored ("1号仓库", "１号 仓库")."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", name)).casefold()


def normalised_address(address: str | None) -> str | None:
    """An address as origins and destinations are compared when no place is named."""
    if not address:
        return None
    # NFKC folds full-width commas and stops into ASCII ones first.
    return re.sub(r"[\s,.。]+", "", unicodedata.normalize("NFKC", address)).casefold() or None


def find_place(
    session: Session, model: type[PlaceView], org_id: uuid.UUID, name: str
) -> PlaceView | None:
    """The organisation's place of that name (as ``normalised_name`` compares)."""
    wanted = normalised_name(name)
    for place in session.scalars(
        select(model).where(model.org_id == org_id, model.archived.is_(False))
    ):
        if normalised_name(place.name) == wanted:
            return place
    return None


LOCATION_FIELDS = ("address", "region", "lat", "lon", "contact")


def resolve_location(
    session: Session,
    model: type[PlaceView],
    org_id: uuid.UUID,
    location: dict[str, Any],
    field: str,
) -> dict[str, Any]:
    """A pledge's origin or a need's location as stored: when it names a place
    (``place_id``, or ``place`` by name), the place's address, region, coordinates
    and contact; otherwise as given, which must then have a region. Refusals name
    ``<field>.place_id``, ``<field>.place`` or ``<field>.region``."""
    place: PlaceView | None = None
    if location.get("place_id") is not None:
        place = session.get(model, location["place_id"])
        if place is None or place.org_id != org_id:
            raise RuleBroken(
                "No such place.",
                errors={
                    f"{field}.place_id": [
                        "Not a place of this organisation (if it was just added, try "
                        "again in a moment)."
                    ]
                },
            )
        if place.archived:
            raise RuleBroken(
                "The place is archived.",
                errors={f"{field}.place_id": ["This place is archived; name another."]},
            )
    elif location.get("place"):
        place = find_place(session, model, org_id, str(location["place"]))
        if place is None:
            raise RuleBroken(
                "No such place.",
                errors={
                    f"{field}.place": [f"The organisation has no place named {location['place']}."]
                },
            )
    if place is None:
        if not location.get("region"):
            raise RuleBroken(
                "Where is it?",
                errors={f"{field}.region": ["Missing data for required field."]},
            )
        return {**location, "place_id": None}
    given = [k for k in LOCATION_FIELDS if location.get(k) not in (None, "")]
    if given:
        raise RuleBroken(
            "A named place brings its own address.",
            errors={
                f"{field}.{k}": ["Given by the place named; leave it out or name no place."]
                for k in given
            },
        )
    return {
        "place_id": place.id,
        "address": place.address,
        "region": place.region,
        "lat": place.lat,
        "lon": place.lon,
        "contact": contact_of(place.contact_name, place.contact_phone),
    }
