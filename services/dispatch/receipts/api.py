"""The receipts API: the recipient confirms, line by line, what arrived of a shipment,
and corrects it later if need be."""

from __future__ import annotations

import uuid
from typing import Any

from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy.orm import Session

from services.dispatch.models import Shipment, ShipmentLine
from services.dispatch.receipts import service
from services.dispatch.shipments import service as shipments
from shared.catalog import CatalogError, get_item
from shared.display_fields import DISPLAY_PARAMETER, DisplayQuantities
from shared.identity import Identity, current_identity, forbidden, require_roles
from shared.problems import Problem
from shared.web import db_session, retries_on_conflict, runtime

blp = Blueprint(
    "receipts",
    __name__,
    url_prefix="/api/v1/shipments",
    description="Receipts: what the recipient found in a shipment",
)

MAX_QUANTITY = 2_000_000_000


def _count(description: str) -> fields.Integer:
    return fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=0, max=MAX_QUANTITY),
        metadata={"description": description},
    )


class ReceiptLineInSchema(Schema):
    shipment_line_id = fields.UUID(required=True)
    accepted = _count("Arrived in good order, in the item's base unit")
    damaged = _count("Arrived unusable; goes back to matching")
    short = _count("Did not arrive; goes back to matching")


class ReceiptInSchema(Schema):
    lines = fields.List(
        fields.Nested(ReceiptLineInSchema),
        required=True,
        validate=validate.Length(min=1, max=10_000),
        metadata={"description": "Every line of the shipment, once"},
    )
    corrects = fields.UUID(
        load_default=None,
        allow_none=True,
        metadata={"description": "For a correction: the latest receipt, which it replaces"},
    )
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class ReceiptLineSchema(DisplayQuantities, Schema):
    display_fields = ("accepted", "damaged", "short")

    shipment_line_id = fields.UUID()
    accepted = fields.Integer()
    damaged = fields.Integer()
    short = fields.Integer()

    def display_unit(self, data: dict[str, Any], original: Any) -> str | None:
        """A receipt line's figures are in its shipment line's item."""
        line = db_session().get(ShipmentLine, original.shipment_line_id)
        try:
            return get_item(line.item).base_unit if line is not None else None
        except CatalogError:
            return None


class ReceiptSchema(Schema):
    id = fields.UUID()
    shipment_id = fields.UUID()
    sequence = fields.Integer(metadata={"description": "1 for the first receipt, then 2, 3..."})
    corrects = fields.UUID(attribute="corrects_id", allow_none=True)
    org_id = fields.UUID()
    created_by = fields.UUID(allow_none=True)
    created_at = fields.AwareDateTime()
    note = fields.String(allow_none=True)
    lines = fields.List(fields.Nested(ReceiptLineSchema))


class ReceiptListSchema(Schema):
    receipt_status = fields.String(metadata={"description": "pending, confirmed or corrected"})
    items = fields.List(fields.Nested(ReceiptSchema))


def _shipment(session: Session, shipment_id: uuid.UUID, *, for_update: bool = False) -> Shipment:
    """The shipment, if the caller may see it; someone else's is answered as not found."""
    found = session.get(Shipment, shipment_id, with_for_update=for_update or None)
    if found is None or not shipments.can_see(current_identity(), found):
        raise Problem(404, f"No shipment {shipment_id}.", slug="shipment-not-found")
    return found


def _may_confirm(identity: Identity, shipment: Shipment) -> None:
    """Members of the recipient organisation confirm its receipts; coordinators may
    for them."""
    if identity.is_coordinator:
        return
    if not identity.has_role("recipient") or identity.org_id != shipment.recipient_org_id:
        raise forbidden("Only the recipient organisation confirms what it received.")
    if not identity.org_active:
        raise forbidden(f"Your organisation is {identity.org_status}; it cannot confirm receipts.")


@blp.route("/<uuid:shipment_id>/receipt", methods=["POST"], parameters=[DISPLAY_PARAMETER])
@retries_on_conflict
@blp.arguments(ReceiptInSchema)
@blp.response(201, ReceiptSchema)
@require_roles()
def confirm(data: dict[str, Any], shipment_id: uuid.UUID) -> Any:
    """Confirm what arrived of a delivered shipment, every line once: ``accepted`` +
    ``damaged`` + ``short`` = the line's quantity. Damaged and short quantity goes back
    to matching for the need. Once only: to change it later, send a correction with
    ``corrects`` naming the latest receipt; it replaces that receipt's figures."""
    identity = current_identity()
    rt = runtime()
    with rt.unit_of_work() as session:
        shipment = _shipment(session, shipment_id, for_update=True)
        _may_confirm(identity, shipment)
        receipt = service.confirm_receipt(
            session,
            rt.outbox,
            shipment,
            lines=data["lines"],
            corrects=data.get("corrects"),
            note=data.get("note"),
            org_id=shipment.recipient_org_id,
            actor_id=identity.user_id,
        )
    return receipt


@blp.route("/<uuid:shipment_id>/receipts", methods=["GET"], parameters=[DISPLAY_PARAMETER])
@blp.response(200, ReceiptListSchema)
@require_roles()
def list_receipts(shipment_id: uuid.UUID) -> Any:
    """The shipment's receipt and its corrections, oldest first."""
    session = db_session()
    shipment = _shipment(session, shipment_id)
    found = service.receipts_of(session, shipment.id)
    return {"receipt_status": service.receipt_status(found), "items": found}
