"""API token scopes: which part of the API each opens, checked at the gateway and again
in every service from the identity the gateway forwards (a service does not trust the
gateway alone to have checked)."""

from __future__ import annotations

from collections.abc import Collection

from shared.errors import Forbidden

# Scopes an API token may carry, and the part of the API each opens.
SCOPES: dict[str, str] = {
    "orgs:read": "read organisations and duplicate flags",
    "orgs:write": "register, verify and merge organisations",
    "pledges:read": "read pledges, imports and the catalogue",
    "pledges:write": "create, amend and cancel pledges, import spreadsheets",
    "needs:read": "read needs and allocations",
    "needs:write": "post, amend, reconfirm and cancel needs; run matching",
    "shipments:read": "read shipments and receipts",
    "shipments:write": "update shipments, send scanner batches, confirm receipts",
    "webhooks:read": "read webhook subscriptions and deliveries",
    "webhooks:write": "create, change and delete webhook subscriptions",
    "audit:read": "read the audit log",
    "community:read": "read a community's buildings, households, orders, deliveries and cases",
    "community:write": "keep a community's households, orders, deliveries and cases",
}

# The first path segment under /api/v1 and the scope area it belongs to.
SCOPE_AREA: dict[str, str] = {
    "orgs": "orgs",
    "duplicates": "orgs",
    "donations": "pledges",
    "pledges": "pledges",
    "imports": "pledges",
    "catalog": "pledges",
    "dispatch": "needs",
    "needs": "needs",
    "allocations": "needs",
    "matching": "needs",
    "shipments": "shipments",
    "receipts": "shipments",
    "webhooks": "webhooks",
    "audit": "audit",
    "transparency": "public",
    "community": "community",
}

# Paths an API token may never use: tokens do not sign in, mint tokens or sign out.
SESSION_ONLY_SEGMENTS = frozenset({"auth", "tokens"})


def check_scope(via: str, scopes: Collection[str] | None, path: str, method: str) -> None:
    """An API token (``via`` "token", carrying ``scopes``) opens only the parts of the
    API its scopes name."""
    if via != "token":
        return
    parts = path.split("/")
    segment = parts[3] if len(parts) > 3 and parts[1:3] == ["api", "v1"] else ""
    if segment in SESSION_ONLY_SEGMENTS:
        raise Forbidden("API tokens cannot be used here; sign in instead.", slug="forbidden")
    area = SCOPE_AREA.get(segment, segment)
    if segment in ("donations", "dispatch", "community") and len(parts) > 4 and parts[4] == "orgs":
        # A service's own record of an organisation (and all it holds of it).
        area = "orgs"
    if area == "public":
        return
    needed = f"{area}:{'read' if method in ('GET', 'HEAD', 'OPTIONS') else 'write'}"
    if needed not in (scopes or ()):
        raise Forbidden(
            f"This API token lacks the scope '{needed}'.",
            slug="insufficient-scope",
            required_scope=needed,
        )
