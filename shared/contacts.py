"""Whom a driver calls at a pickup or a delivery: a person's name and phone, given with
a pledge's origin or a need's location and shown only to those who need it (the place's
own organisation, coordinators, and the logistics company carrying goods there)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

PHONE = validate.Regexp(r"^\+?[0-9 ()\-]{5,32}$", error="Not a phone number.")


class PlaceContactSchema(Schema):
    name = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=1, max=100)
    )
    phone = fields.String(load_default=None, allow_none=True, validate=PHONE)


def contact_of(name: str | None, phone: str | None) -> dict[str, Any] | None:
    """The contact as answers and events carry it (None when there is none)."""
    if not name and not phone:
        return None
    return {"name": name, "phone": phone}
