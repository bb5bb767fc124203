"""The label of every input, by its API path (``N`` for any row number): one table for
the inputs themselves and for the error summary that links to them."""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l

LABELS: dict[str, Any] = {
    # sign-in and registration
    "email": _l("Email"),
    "password": _l("Password"),
    "user.email": _l("Email"),
    "user.password": _l("Password (10 characters or more)"),
    "user.name": _l("Your name"),
    "organisation.name": _l("Legal name, as on the licence"),
    "organisation.name_zh": _l("Name in Chinese"),
    "organisation.name_en": _l("Name in English"),
    "organisation.kind": _l("Kind of organisation"),
    "organisation.region": _l("Region code (2, 4 or 6 digits)"),
    "organisation.address": _l("Address"),
    "organisation.licence_number": _l("Licence or registration number"),
    "organisation.website": _l("Web page"),
    "organisation.contacts.N.name": _l("Contact person"),
    "organisation.contacts.N.phone": _l("Contact phone"),
    # pledges
    "lines": _l("Lines"),
    "lines.N.item": _l("Item"),
    "lines.N.standard": _l("Standard"),
    "lines.N.standards": _l("Accepted standards"),
    "lines.N.quantity": _l("Quantity"),
    "lines.N.unit": _l("Unit"),
    "lines.N.pack_size": _l("Pieces per box"),
    "lines.N.bottle_volume_ml": _l("Bottle volume (ml)"),
    "lines.N.density_g_per_l": _l("Density (g/l)"),
    "lines.N.best_before": _l("Best before"),
    "lines.N.urgency": _l("Urgency"),
    "lines.N.needed_by": _l("Needed by"),
    "lines.N.stock_on_hand": _l("Stock on hand"),
    "lines.N.daily_consumption": _l("Used per day"),
    "origin.region": _l("Region code of the origin"),
    "origin.address": _l("Address the supplies leave from"),
    "available_from": _l("Available from"),
    "notes": _l("Notes"),
    # spreadsheet import
    "file": _l("Spreadsheet (XLSX or CSV)"),
    "mode": _l("If some rows are wrong"),
    "language": _l("Language of the error messages"),
    "origin_region": _l("Default region code of the origin"),
    "origin_address": _l("Default origin address"),
    # needs
    "location.region": _l("Region code"),
    "location.address": _l("Delivery address"),
    "people_served": _l("People served"),
    "beds": _l("Beds"),
    # coordinators
    "evidence": _l("Evidence checked"),
    "reason": _l("Reason"),
    "items": _l("Items"),
    # shipments
    "status": _l("New status"),
    "occurred_at": _l("When it happened"),
    "zone": _l("Time zone"),
    "location": _l("Where"),
    "note": _l("Note"),
    "logistics_org_id": _l("Logistics company"),
    "shipment_id": _l("Shipment"),
    "batch_file": _l("Scanner file (CSV)"),
    "rows": _l("Or paste the rows"),
    "header": _l("Header row"),
    "events": _l("Rows"),
    # receipts
    "lines.N": _l("Line"),
    "lines.N.accepted": _l("Accepted"),
    "lines.N.damaged": _l("Damaged"),
    "lines.N.short": _l("Short (missing)"),
    "lines.N.shipment_line_id": _l("Line"),
    "corrects": _l("Receipt corrected"),
    # the ledger's filters
    "item": _l("Item"),
    "region": _l("Region code or its prefix"),
    "from": _l("First day"),
    "to": _l("Last day"),
}


def pattern(name: str) -> str:
    """``lines.3.quantity`` (and the template row's ``lines.__N__.quantity``) as
    ``lines.N.quantity``."""
    return ".".join("N" if part.isdigit() or part == "__N__" else part for part in name.split("."))


def label(name: str) -> str:
    found = LABELS.get(pattern(name))
    return str(found) if found is not None else name


def input_id(name: str) -> str:
    """An HTML id for the input named ``name``."""
    return "f-" + name.replace(".", "-")
