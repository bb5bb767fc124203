"""Who may call what: every endpoint, for every role, on its own organisation's data and
on another's, with the status each must get.

Each row names an endpoint, how to build its path and body, and the expected status per
actor; a pair ``(own, other)`` when the answer depends on whose data it is. Later
features add their rows to ``ROWS``. All mismatches are reported together.
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from services.gateway.orgs.service import register_organisation
from tests.support.auth import PASSWORD, Account, admin, coordinator, login, register, verified
from tests.support.orgs import read_model_org
from tests.support.stack import Stack, eventually
from tests.support.supply import one_line

ACTORS = (
    "anonymous",
    "donor",
    "recipient",
    "pending_recipient",
    "logistics",
    "coordinator",
    "admin",
)
SIGNED_IN = ACTORS[1:]
COORDINATORS = ("coordinator", "admin")

Expected = int | tuple[int, int]


def everyone(status: int, anonymous: int = 401) -> dict[str, Expected]:
    return {actor: (anonymous if actor == "anonymous" else status) for actor in ACTORS}


def only(allowed: dict[str, Expected], others: int = 403) -> dict[str, Expected]:
    """``allowed`` for the named actors, ``others`` for the rest, 401 when anonymous."""
    return {actor: allowed.get(actor, 401 if actor == "anonymous" else others) for actor in ACTORS}


@dataclass
class World:
    stack: Stack
    client: Any
    accounts: dict[str, Account]
    # A pending hospital no actor belongs to, known to every service.
    other_org: str
    tokens: dict[str, str] = field(default_factory=dict)
    other_token: str = ""
    webhooks: dict[str, str] = field(default_factory=dict)
    other_webhook: str = ""
    stranger: Account | None = None
    # The donor's pledge and another donor's.
    donor_pledge: str = ""
    other_pledge: str = ""

    recipient_need: str = ""
    other_need: str = ""
    stranger_hospital: Account | None = None
    # A shipment from the donor to the recipient, and one to another verified hospital.
    recipient_shipment: str = ""
    other_shipment: str = ""
    # From the donor to the recipient, on their way: one carried by the logistics
    # actor's company ("own"), one by another company ("other").
    carried_shipment: str = ""
    rival_shipment: str = ""
    # A community no actor belongs to (its own roles have a matrix of their own in
    # tests/integration/test_community.py), one of its buildings, households and
    # appointments.
    community: str = ""
    building: str = ""
    household: str = ""
    appointment: str = ""
    order_round: str = ""
    # A resident's case the community's committee took in.
    case: str = ""
    # Help from people: a verified helper of a hospital no actor belongs to, a
    # coordinator's scheduling run (approved) and the session it made.
    helper: str = ""
    help_run: str = ""
    help_session: str = ""
    # A request asked without signing in, and the token that follows it.
    help_request: str = ""
    follow_token: str = ""
    # Hotlines: one of each actor's organisation with a call of category "other" on
    # it, and a social-work station's (no actor's) with an emergency call.
    hotlines: dict[str, str] = field(default_factory=dict)
    hotline_calls: dict[str, str] = field(default_factory=dict)
    other_hotline: str = ""
    other_hotline_call: str = ""

    def new_need(self, account: Account) -> str:
        made = self.client.post(
            "/api/v1/needs",
            json={
                "lines": [{"item": "mask", "quantity": "10", "unit": "piece"}],
                "location": {"region": "4201"},
            },
            headers=account.headers,
        )
        assert made.status_code == 201, made.json
        return str(made.json["id"])

    donor_import: str = ""
    other_import: str = ""
    # A place of each actor's organisation, and one of the other organisation.
    places: dict[str, str] = field(default_factory=dict)
    other_place: str = ""

    def new_place(self, account: Account, org_id: str) -> str:
        made = self.client.post(
            f"/api/v1/orgs/{org_id}/places",
            json=_place_body(self, "any"),
            headers=account.headers,
        )
        assert made.status_code == 201, made.json
        return str(made.json["id"])

    def new_import(self, account: Account) -> str:
        sheet = f"item,quantity,unit,origin_region\nmask,{len(self.tokens) + 5},piece,4201\n"
        made = self.client.post(
            "/api/v1/pledges/imports",
            content_type="multipart/form-data",
            data={"file": (io.BytesIO(sheet.encode()), "p.csv")},
            headers=account.headers,
        )
        assert made.status_code == 202, made.json
        return str(made.json["id"])

    def new_pledge(self, account: Account) -> str:
        made = self.client.post("/api/v1/pledges", json=one_line(100), headers=account.headers)
        assert made.status_code == 201, made.json
        return str(made.json["id"])

    def new_webhook(self, account: Account) -> str:
        made = self.client.post(
            "/api/v1/webhooks",
            json={"url": "https://example.org/hook", "event_types": ["org.verified"]},
            headers=account.headers,
        )
        assert made.status_code == 201, made.json
        return str(made.json["id"])

    def fresh_org(self) -> str:
        """A new pending organisation, for rows that change the one they act on."""
        gateway = self.stack.runtime("gateway")
        with self.stack.apps["gateway"].app_context(), gateway.unit_of_work() as session:
            org = register_organisation(
                session=session,
                outbox=gateway.outbox,
                data={
                    "name": f"Clinic {uuid.uuid4().hex[:8]}",
                    "kind": "hospital",
                    "region": "4201",
                },
            )
            return str(org.id)


@dataclass
class Row:
    method: str
    path: str
    expected: dict[str, Expected]
    body: Callable[[World, str], Any] | None = None
    # Which organisation "other" means: the shared one, or a new one for each call.
    fresh_other: bool = False
    # Sign in again for this call (for rows that end the sign-in).
    fresh_session: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _new_user(world: World, actor: str) -> dict[str, Any]:
    return {
        "organisation": {
            "name": f"Org {uuid.uuid4().hex[:8]}",
            "kind": "hospital",
            "region": "4201",
        },
        "user": {
            "email": f"{uuid.uuid4().hex[:10]}@example.org",
            "password": "test-password-2020",
            "name": "New",
        },
    }


def _credentials(world: World, actor: str) -> dict[str, str]:
    account = world.accounts.get(actor)
    if account is None:
        return {"email": "nobody@example.org", "password": "not-a-password"}
    return {"email": account.email, "password": PASSWORD}


def _refresh_token(world: World, actor: str) -> dict[str, str]:
    account = world.accounts.get(actor)
    if account is None:
        return {"refresh_token": "not-a-refresh-token"}
    return {"refresh_token": login(world.client, account.email)["refresh_token"]}


def _place_body(world: World, actor: str) -> dict[str, Any]:
    return {
        "name": f"Warehouse {uuid.uuid4().hex[:8]}",
        "address": "Gate 3, 1 Dock Road",
        "region": "4201",
        "contact": {"name": "Wang", "phone": "13800000000"},
    }


# An organisation's places (and whom to call there): its members and coordinators.
PLACE_ACCESS: dict[str, Expected] = {
    **{actor: (200, 404) for actor in SIGNED_IN},
    **{actor: (200, 200) for actor in COORDINATORS},
    "anonymous": 401,
}


def _pledge_body(world: World, actor: str) -> dict[str, Any]:
    if actor in COORDINATORS:
        return {**one_line(10), "org_id": world.accounts["donor"].org_id}
    return one_line(10)


PLEDGE_ACCESS: dict[str, Expected] = {
    **{actor: (404, 404) for actor in SIGNED_IN},
    "donor": (200, 404),
    **{actor: (200, 200) for actor in COORDINATORS},
    "anonymous": 401,
}


NEED_ACCESS: dict[str, Expected] = {
    **{actor: (404, 404) for actor in SIGNED_IN},
    "recipient": (200, 404),
    **{actor: (200, 200) for actor in COORDINATORS},
    "anonymous": 401,
}


SHIPMENT_ACCESS: dict[str, Expected] = {
    **{actor: (404, 404) for actor in SIGNED_IN},
    "donor": (200, 200),
    "recipient": (200, 200),
    "logistics": (200, 404),
    **{actor: (200, 200) for actor in COORDINATORS},
    "anonymous": 401,
}


def _late_scan() -> dict[str, Any]:
    """A scan from before the shipments' current status, at a moment of its own."""
    from shared.db import utcnow

    at = utcnow() - timedelta(hours=2, microseconds=uuid.uuid4().int % 10**9)
    return {"status": "picked_up", "occurred_at": at.isoformat()}


def _need_body(world: World, actor: str) -> dict[str, Any]:
    body = {
        "lines": [{"item": "mask", "quantity": "10", "unit": "piece"}],
        "location": {"region": "4201"},
    }
    if actor in COORDINATORS:
        return {**body, "org_id": world.accounts["recipient"].org_id}
    return body


ROWS: list[Row] = [
    # Public
    Row("GET", "/api/v1/openapi.json", everyone(200, anonymous=200)),
    Row("GET", "/api/v1/docs", everyone(200, anonymous=200)),
    # Registration and sign-in
    Row("POST", "/api/v1/auth/register", everyone(201, anonymous=201), body=_new_user),
    Row("POST", "/api/v1/auth/login", everyone(200), body=_credentials),
    Row("POST", "/api/v1/auth/refresh", everyone(200), body=_refresh_token),
    Row("GET", "/api/v1/auth/me", everyone(200)),
    Row("POST", "/api/v1/auth/logout", everyone(204), fresh_session=True),
    # The directory
    Row("GET", "/api/v1/orgs", everyone(200)),
    # Verified organisations' names in each language they registered: public.
    Row("GET", "/api/v1/orgs/names?id={org}", everyone(200, anonymous=200)),
    Row(
        "POST",
        "/api/v1/orgs",
        only({"coordinator": 201, "admin": 201}),
        body=lambda w, a: {
            "name": f"Ward {uuid.uuid4().hex[:6]}",
            "kind": "hospital",
            "region": "4201",
        },
    ),
    # Own organisation: visible to its members; another, pending one: coordinators only.
    Row(
        "GET",
        "/api/v1/orgs/{org}",
        {
            **{actor: (200, 404) for actor in SIGNED_IN},
            **{actor: (200, 200) for actor in COORDINATORS},
            "anonymous": 401,
        },
    ),
    # Verification: coordinators, never on their own organisation.
    Row(
        "POST",
        "/api/v1/orgs/{org}/verify",
        only({"coordinator": (403, 200), "admin": (403, 200)}),
        body=lambda w, a: {"evidence": "licence checked"},
        fresh_other=True,
    ),
    Row(
        "POST",
        "/api/v1/orgs/{org}/suspend",
        only({"coordinator": (403, 200), "admin": (403, 200)}),
        body=lambda w, a: {"reason": "licence revoked"},
        fresh_other=True,
    ),
    # A person's data: the person and coordinators export it; coordinators erase it.
    # Only a person's (these organisations are not individuals: 422).
    Row(
        "GET",
        "/api/v1/orgs/{org}/personal-data",
        {
            **{actor: (422, 404) for actor in SIGNED_IN},
            **{actor: (422, 422) for actor in COORDINATORS},
            "anonymous": 401,
        },
    ),
    Row(
        "POST",
        "/api/v1/orgs/{org}/erase",
        only({"coordinator": (422, 422), "admin": (422, 422)}),
        body=lambda w, a: {"reason": "asked in person"},
    ),
    # Its members (names, e-mail addresses, roles): its admins (every actor here is the
    # first user of its organisation, so one) and coordinators read them; its admins,
    # and the installation's admins, change them.
    *(
        Row(
            "GET",
            f"/api/v1/orgs/{{org}}/{what}",
            {
                **{actor: (200, 403) for actor in SIGNED_IN},
                **{actor: (200, 200) for actor in COORDINATORS},
                "anonymous": 401,
            },
        )
        for what in ("members", "invitations")
    ),
    Row(
        "POST",
        "/api/v1/orgs/{org}/invitations",
        {**{actor: (201, 403) for actor in SIGNED_IN}, "admin": (201, 201), "anonymous": 401},
        body=lambda w, a: {"email": f"{uuid.uuid4().hex[:10]}@example.org", "roles": ["org_admin"]},
    ),
    *(
        Row(
            method,
            path,
            {**{actor: (404, 403) for actor in SIGNED_IN}, "admin": (404, 404), "anonymous": 401},
            body=body,
        )
        for method, path, body in (
            ("DELETE", "/api/v1/orgs/{org}/invitations/{flag}", None),
            ("PUT", "/api/v1/orgs/{org}/members/{flag}", lambda w, a: {"roles": ["org_admin"]}),
            ("DELETE", "/api/v1/orgs/{org}/members/{flag}", None),
        )
    ),
    # Joining with an invitation's token: whoever holds it (this one is no token).
    Row(
        "POST",
        "/api/v1/auth/invitations/preview",
        everyone(422, anonymous=422),
        body=lambda w, a: {"token": "inv_not-a-token"},
    ),
    Row(
        "POST",
        "/api/v1/auth/invitations/accept",
        everyone(422, anonymous=422),
        body=lambda w, a: {"token": "inv_not-a-token", "password": PASSWORD},
    ),
    # Named places.
    Row("GET", "/api/v1/orgs/{org}/places", PLACE_ACCESS),
    Row(
        "POST",
        "/api/v1/orgs/{org}/places",
        {
            key: ((201, 404) if v == (200, 404) else (201, 201) if v == (200, 200) else v)
            for key, v in PLACE_ACCESS.items()
        },
        body=_place_body,
    ),
    Row("GET", "/api/v1/orgs/{org}/places/{place}", PLACE_ACCESS),
    Row(
        "PATCH",
        "/api/v1/orgs/{org}/places/{place}",
        PLACE_ACCESS,
        body=lambda w, a: {"opening_hours": "08:00-20:00"},
        headers={"If-Match": "*"},
    ),
    # Duplicate review: coordinators.
    Row("GET", "/api/v1/duplicates", only({"coordinator": 200, "admin": 200})),
    Row("POST", "/api/v1/duplicates/scan", only({"coordinator": 200, "admin": 200})),
    Row(
        "GET",
        "/api/v1/orgs/{org}/duplicates",
        only({"coordinator": (200, 200), "admin": (200, 200)}),
    ),
    Row(
        "POST",
        "/api/v1/orgs/{org}/duplicates/scan",
        only({"coordinator": (200, 200), "admin": (200, 200)}),
    ),
    # A flag that does not exist: coordinators learn so, others may not ask.
    Row(
        "POST",
        "/api/v1/duplicates/{flag}/dismiss",
        only({"coordinator": 404, "admin": 404}),
        body=lambda w, a: {"note": "not the same"},
    ),
    Row(
        "POST",
        "/api/v1/duplicates/{flag}/merge",
        only({"coordinator": 404, "admin": 404}),
        body=lambda w, a: {"keep": w.other_org},
    ),
    # Webhooks: each organisation's own; coordinators may manage anyone's.
    Row("GET", "/api/v1/webhooks", everyone(200)),
    Row(
        "POST",
        "/api/v1/webhooks",
        everyone(201),
        body=lambda w, a: {"url": "https://example.org/hook", "event_types": ["org.verified"]},
    ),
    Row(
        "GET",
        "/api/v1/webhooks/{webhook}",
        {
            **{actor: (200, 404) for actor in SIGNED_IN},
            **{actor: (200, 200) for actor in COORDINATORS},
            "anonymous": 401,
        },
    ),
    Row(
        "PATCH",
        "/api/v1/webhooks/{webhook}",
        {
            **{actor: (200, 404) for actor in SIGNED_IN},
            **{actor: (200, 200) for actor in COORDINATORS},
            "anonymous": 401,
        },
        body=lambda w, a: {"description": "changed"},
    ),
    Row(
        "GET",
        "/api/v1/webhooks/{webhook}/deliveries",
        {
            **{actor: (200, 404) for actor in SIGNED_IN},
            **{actor: (200, 200) for actor in COORDINATORS},
            "anonymous": 401,
        },
    ),
    # A delivery that does not exist.
    Row(
        "POST",
        "/api/v1/webhooks/{webhook}/deliveries/{flag}/retry",
        {**{actor: (404, 404) for actor in SIGNED_IN}, "anonymous": 401},
    ),
    # The catalogue: public.
    Row("GET", "/api/v1/catalog/items", everyone(200, anonymous=200)),
    # Pledges: "own" is the donor's pledge, "other" another donor's. Donors see their
    # own, coordinators all; others are answered as if the pledge did not exist.
    Row("GET", "/api/v1/pledges", only({"donor": 200, "coordinator": 200, "admin": 200})),
    Row(
        "GET",
        "/api/v1/pledges/export.csv",
        only({"donor": 200, "coordinator": 200, "admin": 200}),
    ),
    Row(
        "POST",
        "/api/v1/pledges",
        only({"donor": 201, "coordinator": 201, "admin": 201}),
        body=_pledge_body,
    ),
    Row("GET", "/api/v1/pledges/{pledge}", PLEDGE_ACCESS),
    # Spreadsheet imports: donors and coordinators. A JSON body carries no file, so
    # whoever may import is told so (422) and the others are refused (403).
    Row(
        "GET",
        "/api/v1/pledges/imports",
        only({"donor": 200, "coordinator": 200, "admin": 200}),
    ),
    Row(
        "POST",
        "/api/v1/pledges/imports",
        only({"donor": 422, "coordinator": 422, "admin": 422}),
        body=lambda w, a: {"mode": "valid_rows"},
    ),
    Row("GET", "/api/v1/pledges/imports/template.xlsx", everyone(200)),
    Row("GET", "/api/v1/pledges/imports/{job}", PLEDGE_ACCESS),
    Row(
        "PATCH",
        "/api/v1/pledges/{pledge}",
        PLEDGE_ACCESS,
        body=lambda w, a: {"notes": "updated"},
        headers={"If-Match": "*"},
    ),
    Row(
        "POST",
        "/api/v1/pledges/{pledge}/cancel",
        PLEDGE_ACCESS,
        body=lambda w, a: {"reason": "matrix"},
        fresh_other=True,
    ),
    # Needs: "own" is the recipient's need, "other" another recipient's.
    Row(
        "GET",
        "/api/v1/needs",
        only({"recipient": 200, "pending_recipient": 200, **dict.fromkeys(COORDINATORS, 200)}),
    ),
    Row(
        "POST",
        "/api/v1/needs",
        only({"recipient": 201, "pending_recipient": 201, **dict.fromkeys(COORDINATORS, 201)}),
        body=_need_body,
    ),
    Row("GET", "/api/v1/needs/{need}", NEED_ACCESS),
    Row(
        "PATCH",
        "/api/v1/needs/{need}",
        NEED_ACCESS,
        body=lambda w, a: {"notes": "updated"},
        headers={"If-Match": "*"},
    ),
    Row("POST", "/api/v1/needs/{need}/reconfirm", NEED_ACCESS),
    Row(
        "POST",
        "/api/v1/needs/{need}/cancel",
        NEED_ACCESS,
        body=lambda w, a: {"reason": "matrix"},
        fresh_other=True,
    ),
    # Matching: coordinators only.
    Row("GET", "/api/v1/matching/runs", only({"coordinator": 200, "admin": 200})),
    Row(
        "POST",
        "/api/v1/matching/runs",
        only({"coordinator": 201, "admin": 201}),
        body=lambda w, a: {"dry_run": True, "items": ["mask"]},
    ),
    Row("GET", "/api/v1/matching/runs/{flag}", only({"coordinator": 404, "admin": 404})),
    Row(
        "POST",
        "/api/v1/matching/runs/{flag}/approve",
        only({"coordinator": 404, "admin": 404}),
    ),
    Row(
        "POST",
        "/api/v1/matching/runs/{flag}/edits",
        only({"coordinator": 404, "admin": 404}),
        body=lambda w, a: {
            "changes": [
                {
                    "pledge_line_id": str(uuid.uuid4()),
                    "need_line_id": str(uuid.uuid4()),
                    "quantity": 1,
                }
            ]
        },
    ),
    # Allocations: their donors and recipients, and coordinators; logistics sees none.
    Row(
        "GET",
        "/api/v1/allocations",
        only(
            {
                "donor": 200,
                "recipient": 200,
                "pending_recipient": 200,
                **dict.fromkeys(COORDINATORS, 200),
            }
        ),
    ),
    Row("GET", "/api/v1/allocations/{flag}", everyone(404)),
    Row(
        "POST",
        "/api/v1/allocations/{flag}/cancel",
        only({"coordinator": 404, "admin": 404}),
        body=lambda w, a: {"reason": "road closed"},
    ),
    # Receipts: "own" is a shipment to the recipient (not delivered yet, so a receipt is
    # a 409 for whoever may confirm it), "other" one to another hospital; both come from
    # the donor, who sees but does not confirm them.
    Row(
        "POST",
        "/api/v1/shipments/{shipment}/receipt",
        {
            **{actor: (404, 404) for actor in SIGNED_IN},
            "recipient": (409, 404),
            "donor": (403, 403),
            **{actor: (409, 409) for actor in COORDINATORS},
            "anonymous": 401,
        },
        body=lambda w, a: {
            "lines": [
                {"shipment_line_id": str(uuid.uuid4()), "accepted": 10, "damaged": 0, "short": 0}
            ]
        },
    ),
    Row(
        "GET",
        "/api/v1/shipments/{shipment}/receipts",
        {
            **{actor: (404, 404) for actor in SIGNED_IN},
            "recipient": (200, 404),
            "donor": (200, 200),
            **{actor: (200, 200) for actor in COORDINATORS},
            "anonymous": 401,
        },
    ),
    # Traces: a pledge's for its donor, a need's for its recipient; coordinators all.
    Row("GET", "/api/v1/pledges/{pledge}/trace", PLEDGE_ACCESS),
    Row("GET", "/api/v1/needs/{need}/trace", NEED_ACCESS),
    # The transparency ledger and its exports: public, no login.
    Row("GET", "/api/v1/transparency/ledger", everyone(200, anonymous=200)),
    Row("GET", "/api/v1/transparency/export.csv", everyone(200, anonymous=200)),
    Row("GET", "/api/v1/transparency/export.json", everyone(200, anonymous=200)),
    Row("GET", "/api/v1/transparency/export.xlsx", everyone(200, anonymous=200)),
    # Shipments: the donor and the recipient see both, the logistics company only the one
    # it carries; updates are for that company and coordinators. A late scan (before
    # the shipment's status) is recorded whoever sends it, so each call answers alike.
    Row("GET", "/api/v1/shipments", everyone(200)),
    Row("GET", "/api/v1/shipments/{carried}", SHIPMENT_ACCESS),
    Row(
        "PATCH",
        "/api/v1/shipments/{carried}",
        {
            **SHIPMENT_ACCESS,
            **{a: (403, 403) for a in ("donor", "recipient")},
            "logistics": (403, 404),
        },
        body=lambda w, a: {"tracking_ref": f"SF{uuid.uuid4().hex[:10]}"},
        headers={"If-Match": "*"},
    ),
    Row(
        "POST",
        "/api/v1/shipments/{carried}/events",
        {
            **SHIPMENT_ACCESS,
            **{a: (403, 403) for a in ("donor", "recipient")},
            "logistics": (201, 404),
            **{a: (201, 201) for a in COORDINATORS},
        },
        body=lambda w, a: _late_scan(),
    ),
    Row(
        "POST",
        "/api/v1/shipments/events:batch",
        only({"logistics": 200, **dict.fromkeys(COORDINATORS, 200)}),
        body=lambda w, a: {"events": [{"shipment_id": w.carried_shipment, **_late_scan()}]},
    ),
    Row(
        "POST",
        "/api/v1/shipments",
        only(dict.fromkeys(COORDINATORS, 422)),
        body=lambda w, a: {"allocation_ids": [str(uuid.uuid4())]},
    ),
    # The audit log: coordinators.
    Row("GET", "/api/v1/audit", only({"coordinator": 200, "admin": 200})),
    # API tokens: each user's own.
    Row("GET", "/api/v1/tokens", everyone(200)),
    Row(
        "POST",
        "/api/v1/tokens",
        everyone(201),
        body=lambda w, a: {"name": "integration", "scopes": ["orgs:read"]},
    ),
    Row(
        "GET",
        "/api/v1/tokens/{token}",
        {**{actor: (200, 404) for actor in SIGNED_IN}, "admin": (200, 200), "anonymous": 401},
    ),
    # The services' own records of an organisation: its members and coordinators.
    *(
        Row(
            "GET",
            f"/api/v1/{service}/orgs/{{org}}{tail}",
            {
                **{actor: (200, 403) for actor in SIGNED_IN},
                **{actor: (200, 200) for actor in COORDINATORS},
                "anonymous": 401,
            },
        )
        for service in ("donations", "dispatch", "community")
        for tail in ("", "/personal-data")
    ),
]

# A community's data: its own members alone (none of the actors here), coordinators to
# read its buildings, and its residents' data only with a reason, which is recorded.
COMMUNITY = "/api/v1/community/{community}"
REASON = {"X-Access-Reason": "A household reported without food for two days"}


def _household_body(world: World, actor: str) -> dict[str, Any]:
    return {"building_id": world.building, "room": uuid.uuid4().hex[:8], "people": 1}


ROWS += [
    # A community's export holds its residents' data: for its committee's admins, and
    # for coordinators with a reason, which the community service records.
    Row("GET", "/api/v1/orgs/{community}/personal-data", only({})),
    Row(
        "GET",
        "/api/v1/orgs/{community}/personal-data",
        only(dict.fromkeys(COORDINATORS, 200)),
        headers=REASON,
    ),
    Row("GET", f"{COMMUNITY}/me", only(dict.fromkeys(COORDINATORS, 200))),
    Row("GET", f"{COMMUNITY}/buildings", only(dict.fromkeys(COORDINATORS, 200))),
    Row("POST", f"{COMMUNITY}/buildings", only({}), body=lambda w, a: {"name": "Building 9"}),
    Row("GET", f"{COMMUNITY}/appointments", only({})),
    Row(
        "POST",
        f"{COMMUNITY}/appointments",
        only({}),
        body=lambda w, a: {"user_id": str(uuid.uuid4()), "role": "committee"},
    ),
    Row("GET", f"{COMMUNITY}/households", only({})),
    Row("GET", f"{COMMUNITY}/households", only(dict.fromkeys(COORDINATORS, 200)), headers=REASON),
    Row("POST", f"{COMMUNITY}/households", only({}), body=_household_body, headers=REASON),
    Row("GET", f"{COMMUNITY}/households/{{household}}", only({})),
    Row(
        "GET",
        f"{COMMUNITY}/households/{{household}}",
        only(dict.fromkeys(COORDINATORS, 200)),
        headers=REASON,
    ),
    Row(
        "PATCH",
        f"{COMMUNITY}/households/{{household}}",
        only({}),
        body=lambda w, a: {"people": 3},
        headers={**REASON, "If-Match": "*"},
    ),
    Row("DELETE", f"{COMMUNITY}/households/{{household}}", only({}), headers=REASON),
    Row("GET", "/api/v1/community/catalog", everyone(200)),
    Row("GET", f"{COMMUNITY}/rounds", only(dict.fromkeys(COORDINATORS, 200))),
    Row("POST", f"{COMMUNITY}/rounds", only({}), body=lambda w, a: {"title": "Week 2"}),
    Row("GET", f"{COMMUNITY}/rounds/{{round}}/orders?building_id={{building}}", only({})),
    Row(
        "GET",
        f"{COMMUNITY}/rounds/{{round}}/orders?building_id={{building}}",
        only(dict.fromkeys(COORDINATORS, 200)),
        headers=REASON,
    ),
    Row(
        "POST",
        f"{COMMUNITY}/rounds/{{round}}/orders",
        only({}),
        body=lambda w, a: {"building_id": w.building, "rows": []},
        headers=REASON,
    ),
    Row("GET", f"{COMMUNITY}/rounds/{{round}}/totals", only(dict.fromkeys(COORDINATORS, 200))),
    Row("POST", f"{COMMUNITY}/rounds/{{round}}/confirm", only({}), body=lambda w, a: {}),
    Row("GET", f"{COMMUNITY}/stock", only(dict.fromkeys(COORDINATORS, 200))),
    Row("GET", f"{COMMUNITY}/reach", everyone(200, anonymous=200)),
    Row("POST", f"{COMMUNITY}/distributions", only({}), body=lambda w, a: {"rule": "per_person"}),
    Row("GET", f"{COMMUNITY}/deliveries", only({})),
    Row("GET", f"{COMMUNITY}/deliveries", only(dict.fromkeys(COORDINATORS, 200)), headers=REASON),
    Row(
        "POST",
        f"{COMMUNITY}/deliveries/{{flag}}/outcome",
        only(dict.fromkeys(COORDINATORS, 404)),
        body=lambda w, a: {"status": "delivered"},
    ),
    Row(
        "POST",
        f"{COMMUNITY}/write-offs",
        only({}),
        body=lambda w, a: {"item": "vegetables", "quantity": 1, "reason": "spoiled"},
    ),
    Row("DELETE", f"{COMMUNITY}/appointments/{{appointment}}", only({})),
]

# Residents' cases: their notes are the community's (coordinators read them only with a
# reason, and never change them); counts of them are open to coordinators.
ROWS += [
    Row("GET", f"{COMMUNITY}/cases", only({})),
    Row("GET", f"{COMMUNITY}/cases", only(dict.fromkeys(COORDINATORS, 200)), headers=REASON),
    Row(
        "POST",
        f"{COMMUNITY}/cases",
        only({}),
        body=lambda w, a: {"kind": "counselling", "summary": "Needs someone to talk to"},
        headers=REASON,
    ),
    Row("GET", f"{COMMUNITY}/cases/summary", only(dict.fromkeys(COORDINATORS, 200))),
    Row("GET", f"{COMMUNITY}/cases/{{case}}", only({})),
    Row(
        "GET",
        f"{COMMUNITY}/cases/{{case}}",
        only(dict.fromkeys(COORDINATORS, 200)),
        headers=REASON,
    ),
    Row(
        "POST",
        f"{COMMUNITY}/cases/{{case}}/assign",
        only({}),
        body=lambda w, a: {"auto": True},
        headers=REASON,
    ),
    Row(
        "POST",
        f"{COMMUNITY}/cases/{{case}}/follow-ups",
        only({}),
        body=lambda w, a: {"note": "Called"},
        headers=REASON,
    ),
    Row(
        "POST",
        f"{COMMUNITY}/cases/{{case}}/close",
        only({}),
        body=lambda w, a: {"closing_note": "Done"},
        headers=REASON,
    ),
    Row(
        "POST",
        f"{COMMUNITY}/cases/{{case}}/reopen",
        only({}),
        body=lambda w, a: {"reason": "Needed again"},
        headers=REASON,
    ),
    Row("GET", f"{COMMUNITY}/case-workers", only({})),
    Row(
        "PUT",
        f"{COMMUNITY}/case-workers/{{flag}}/hours",
        only({}),
        body=lambda w, a: {"hours_per_day": 4},
    ),
]

# Help from people: anyone may ask for help (anonymous too, limited per address at the
# gateway); a member of a verified organisation registers as a helper; coordinators
# verify helpers, see the queue and schedule; a session is its helper's alone (none of
# the actors here), the rest answered as if it did not exist.
HELP = "/api/v1/community/help"


def _helper_body(world: World, actor: str) -> dict[str, Any]:
    return {
        "kinds": ["counsellor"],
        "topics": ["anxiety"],
        "languages": ["zh"],
        "daily_limit": 2,
        "qualifications": [{"kind": "counsellor certificate", "evidence": "No. 1"}],
    }


ROWS += [
    Row("GET", f"{HELP}/helpers", everyone(200)),
    Row(
        "POST",
        f"{HELP}/helpers",
        {**everyone(201), "pending_recipient": 403},
        body=_helper_body,
    ),
    Row("GET", f"{HELP}/helpers/{{helper}}", only(dict.fromkeys(COORDINATORS, 200), others=404)),
    Row(
        "POST",
        f"{HELP}/helpers/{{helper}}/verify",
        only(dict.fromkeys(COORDINATORS, 200)),
        body=lambda w, a: {"decision": "verified"},
    ),
    Row(
        "POST",
        f"{HELP}/requests",
        everyone(201, anonymous=201),
        body=lambda w, a: {"topic": "grief", "languages": ["zh"], "contact": "+86 138 0000 0000"},
    ),
    Row("GET", f"{HELP}/requests", everyone(200)),
    Row("POST", f"{HELP}/runs", only(dict.fromkeys(COORDINATORS, 201))),
    Row("GET", f"{HELP}/runs/{{help_run}}", only(dict.fromkeys(COORDINATORS, 200))),
    Row(
        "POST",
        f"{HELP}/runs/{{flag}}/approve",
        only(dict.fromkeys(COORDINATORS, 404)),
    ),
    Row("GET", f"{HELP}/sessions", everyone(200)),
    Row(
        "GET",
        f"{HELP}/sessions/{{help_session}}",
        only(dict.fromkeys(COORDINATORS, 200), others=404),
    ),
    *(
        Row("POST", f"{HELP}/sessions/{{help_session}}/{verb}", only({}, others=404))
        for verb in ("confirm", "decline")
    ),
    Row("GET", f"{HELP}/sessions/{{help_session}}/contact", only({}, others=404)),
    # Closing, notes and connecting are the helper's (their admins read the notes);
    # a coordinator may say a session was missed, once its start has passed (409
    # before); a preview's assignments are the coordinators' (this run is approved).
    Row(
        "POST",
        f"{HELP}/sessions/{{help_session}}/close",
        only({}, others=404),
        body=lambda w, a: {"note": "Talked for an hour", "follow_up": True},
    ),
    Row("GET", f"{HELP}/sessions/{{help_session}}/notes", only({}, others=404)),
    Row(
        "POST",
        f"{HELP}/sessions/{{help_session}}/missed",
        only(dict.fromkeys(COORDINATORS, 409), others=404),
        body=lambda w, a: {"who": "seeker"},
    ),
    Row(
        "POST",
        f"{HELP}/sessions/{{help_session}}/connect",
        only({}, others=404),
        body=lambda w, a: {},
    ),
    Row(
        "PATCH",
        f"{HELP}/runs/{{help_run}}",
        only(dict.fromkeys(COORDINATORS, 409)),
        body=lambda w, a: {"assignments": []},
    ),
    # Who is served first: read by anyone signed in, set by coordinators alone (each
    # coordinator's PUT names the same groups, so the matrix's order does not matter).
    Row("GET", f"{HELP}/rule", everyone(200)),
    Row(
        "PUT",
        f"{HELP}/rule",
        only(dict.fromkeys(COORDINATORS, 200)),
        body=lambda w, a: {"priority_groups": ["medical_staff", "patient"]},
    ),
    # A request followed with its token, signed in or not; any other token: 404.
    Row(
        "GET",
        f"{HELP}/requests/{{help_request}}/status?token={{follow_token}}",
        everyone(200, anonymous=200),
    ),
    Row(
        "GET",
        f"{HELP}/requests/{{help_request}}/status?token=not-its-token",
        everyone(404, anonymous=404),
    ),
]

# Hotlines: an organisation's admins set up its hotlines (coordinators for any
# organisation); its members operate them (log calls, take a call further); coordinators
# read every hotline, call and report but log nothing; anyone else finds nothing. The
# actors' own calls are of category "other": neither an emergency nor a booking (409).
HOTLINES = "/api/v1/community/hotlines"
HOTLINE = f"{HOTLINES}/{{hotline}}"
READS_OWN: dict[str, Expected] = {
    **{actor: (200, 404) for actor in SIGNED_IN},
    **{actor: (200, 200) for actor in COORDINATORS},
    "anonymous": 401,
}


def _operates(own: int) -> dict[str, Expected]:
    return {
        **{actor: (own, 404) for actor in SIGNED_IN},
        **{actor: (own, 403) for actor in COORDINATORS},
        "anonymous": 401,
    }


def _hotline_body(world: World, actor: str) -> dict[str, Any]:
    body = {
        "name": f"Line {uuid.uuid4().hex[:8]}",
        "phone": "027-8888 1234",
        "languages": ["zh"],
        "region": "4201",
    }
    return {**body, "org_id": world.other_org} if actor in COORDINATORS else body


ROWS += [
    Row("GET", HOTLINES, everyone(200)),
    Row("POST", HOTLINES, {**everyone(201), "pending_recipient": 403}, body=_hotline_body),
    Row("GET", f"{HOTLINES}/report?org_id={{org}}", READS_OWN),
    Row("GET", HOTLINE, READS_OWN),
    Row("GET", f"{HOTLINE}/report", READS_OWN),
    Row("GET", f"{HOTLINE}/calls", READS_OWN),
    Row(
        "POST",
        f"{HOTLINE}/calls",
        _operates(201),
        body=lambda w, a: {"category": "information", "minutes": 3},
    ),
    Row("GET", f"{HOTLINE}/calls/{{hotline_call}}", READS_OWN),
    Row(
        "POST",
        f"{HOTLINE}/calls/{{hotline_call}}/emergency",
        _operates(409),
        body=lambda w, a: {"as": "case", "summary": "Needs insulin"},
    ),
    Row(
        "POST",
        f"{HOTLINE}/calls/{{hotline_call}}/booking",
        _operates(409),
        body=lambda w, a: {"topic": "grief", "languages": ["zh"], "contact": "+86 138 0000 0000"},
    ),
]

# Deleting runs last: it ends what the rows above read.
ROWS += [
    Row(
        "DELETE",
        "/api/v1/tokens/{token}",
        {**{actor: (204, 404) for actor in SIGNED_IN}, "admin": (204, 204), "anonymous": 401},
    ),
    Row(
        "DELETE",
        "/api/v1/webhooks/{webhook}",
        {
            **{actor: (204, 404) for actor in SIGNED_IN},
            **{actor: (204, 204) for actor in COORDINATORS},
            "anonymous": 401,
        },
        fresh_other=True,
    ),
]


def _build_world(stack: Stack) -> World:
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    accounts = {
        "admin": boss,
        "coordinator": coordinator(client, boss),
        "donor": verified(client, boss, kind="foundation"),
        "recipient": verified(client, boss, kind="hospital"),
        "pending_recipient": register(client, kind="hospital"),
        "logistics": verified(client, boss, kind="logistics_company"),
    }
    world = World(stack=stack, client=client, accounts=accounts, other_org="")
    world.other_org = world.fresh_org()
    for actor, account in accounts.items():
        made = client.post(
            "/api/v1/tokens",
            json={"name": "mine", "scopes": ["orgs:read"]},
            headers=account.headers,
        )
        assert made.status_code == 201, made.json
        world.tokens[actor] = made.json["id"]
    stranger = register(client, kind="foundation")
    world.stranger = stranger
    for actor, account in accounts.items():
        world.webhooks[actor] = world.new_webhook(account)
    world.other_webhook = world.new_webhook(stranger)
    for actor, account in accounts.items():
        world.places[actor] = world.new_place(account, account.org_id)
    world.other_place = world.new_place(accounts["coordinator"], world.other_org)
    world.other_token = client.post(
        "/api/v1/tokens", json={"name": "theirs", "scopes": ["orgs:read"]}, headers=stranger.headers
    ).json["id"]

    # Every organisation has reached the services' read models.
    orgs = [a.org_id for a in accounts.values()] + [world.other_org]

    def synced(service: str) -> bool:
        rt = stack.runtime(service)
        return all(read_model_org(rt, org) for org in orgs)

    eventually(lambda: synced("donations"), timeout=60)
    eventually(lambda: synced("dispatch"), timeout=60)
    eventually(lambda: synced("community"), timeout=60)
    world.donor_pledge = world.new_pledge(accounts["donor"])
    world.other_pledge = world.new_pledge(stranger)
    world.donor_import = world.new_import(accounts["donor"])
    world.other_import = world.new_import(stranger)
    world.stranger_hospital = register(client, kind="hospital")
    world.recipient_need = world.new_need(accounts["recipient"])
    world.other_need = world.new_need(world.stranger_hospital)
    _ship(world, boss)
    _carry(world, boss)
    _community(world, boss)
    _help(world, boss)
    _hotlines(world, boss)
    return world


def _hotlines(world: World, boss: Account) -> None:
    """A hotline of each actor's organisation (set up by a coordinator, as for any
    organisation) with a call its own user logged, and a social-work station's with an
    emergency call."""
    from tests.support.community import post

    client, office = world.client, world.accounts["coordinator"]
    station = verified(client, boss, kind="civil_affairs_bureau", region="4201")
    eventually(lambda: read_model_org(world.stack.runtime("community"), station.org_id))
    owners = {**world.accounts, "station": station}
    for actor, account in owners.items():
        body = {**_hotline_body(world, "coordinator"), "org_id": account.org_id}
        hotline = post(client, HOTLINES, body, office)["id"]
        category = "emergency" if actor == "station" else "other"
        call = post(
            client, f"{HOTLINES}/{hotline}/calls", {"category": category, "minutes": 2}, account
        )["id"]
        if actor == "station":
            world.other_hotline, world.other_hotline_call = hotline, call
        else:
            world.hotlines[actor], world.hotline_calls[actor] = hotline, call


def _help(world: World, boss: Account) -> None:
    """A helper of a hospital none of the actors belongs to, verified, and a session of
    theirs from a coordinator's approved run."""
    from tests.support.community import post

    client = world.client
    hospital = verified(client, boss, kind="hospital")
    office = world.accounts["coordinator"]
    body = {
        **_helper_body(world, "hospital"),
        "availability": [{"weekday": d, "start": "08:00", "end": "20:00"} for d in range(7)],
    }
    world.helper = post(client, f"{HELP}/helpers", body, hospital)["id"]
    post(client, f"{HELP}/helpers/{world.helper}/verify", {"decision": "verified"}, office, 200)
    post(
        client,
        f"{HELP}/requests",
        {"topic": "anxiety", "languages": ["zh"], "contact": "+86 139 0000 0000"},
        office,
    )
    world.help_run = post(client, f"{HELP}/runs", {}, office)["id"]
    made = post(client, f"{HELP}/runs/{world.help_run}/approve", {}, office, 200)
    world.help_session = made["items"][0]["id"]
    asked = client.post(
        f"{HELP}/requests",
        json={"topic": "grief", "languages": ["zh"], "contact": "+86 139 0000 0001"},
    )
    assert asked.status_code == 201, asked.json
    world.help_request, world.follow_token = asked.json["id"], asked.json["follow_token"]


def _community(world: World, boss: Account) -> None:
    from tests.support.community import post

    client = world.client
    committee = verified(client, boss, kind="community_committee")
    eventually(lambda: read_model_org(world.stack.runtime("community"), committee.org_id))
    world.community = committee.org_id
    base = f"/api/v1/community/{committee.org_id}"
    world.building = post(client, f"{base}/buildings", {"name": "Building 1"}, committee)["id"]
    world.household = post(
        client,
        f"{base}/households",
        {"building_id": world.building, "unit": "1", "room": "101", "people": 2},
        committee,
    )["id"]
    world.order_round = post(client, f"{base}/rounds", {"title": "Week 1"}, committee)["id"]
    world.case = post(
        client,
        f"{base}/cases",
        {"kind": "clinic_access", "summary": "Needs a ride to dialysis", "urgency": "soon"},
        committee,
    )["id"]
    # Last: the committee's own user appointed to a building is no longer its committee.
    world.appointment = post(
        client,
        f"{base}/appointments",
        {"user_id": committee.user_id, "role": "building_leader", "building_id": world.building},
        committee,
    )["id"]


def _carry(world: World, boss: Account) -> None:
    """Two shipments on their way from the donor to the recipient: one carried by the
    logistics actor's company, one by a rival company."""
    from services.dispatch.models import Shipment
    from shared.db import utcnow

    rival = verified(world.client, boss, kind="logistics_company")
    ids = []
    with world.stack.runtime("dispatch").unit_of_work() as session:
        for carrier in (world.accounts["logistics"], rival):
            shipment = Shipment(
                id=uuid.uuid4(),
                status="in_transit",
                status_at=utcnow(),
                last_event_at=utcnow(),
                # Planned days ago: the rows scan hours back.
                created_at=utcnow() - timedelta(days=2),
                donor_org_id=uuid.UUID(world.accounts["donor"].org_id),
                recipient_org_id=uuid.UUID(world.accounts["recipient"].org_id),
                logistics_org_id=uuid.UUID(carrier.org_id),
                origin={"region": "4201"},
                destination={"region": "4201"},
                origin_key="matrix-origin",
                destination_key="matrix-destination",
            )
            session.add(shipment)
            ids.append(str(shipment.id))
    world.carried_shipment, world.rival_shipment = ids


def _ship(world: World, boss: Account) -> None:
    """Shipments planned from the donor's pledge to the recipient's need and to another
    verified hospital's, once dispatch knows every pledge (traces are read there)."""
    from services.dispatch.models import ShipmentLine, SupplyLine

    client, dispatch = world.client, world.stack.runtime("dispatch")
    other_hospital = verified(client, boss, kind="hospital")
    other_need = world.new_need(other_hospital)

    def known(pledge_id: str) -> bool:
        with dispatch.session_factory() as session:
            return (
                session.scalar(
                    select(SupplyLine.id)
                    .where(SupplyLine.pledge_id == uuid.UUID(pledge_id))
                    .limit(1)
                )
                is not None
            )

    eventually(lambda: known(world.donor_pledge) and known(world.other_pledge), timeout=60)
    run = client.post(
        "/api/v1/matching/runs",
        json={"dry_run": False, "items": ["mask"]},
        headers=world.accounts["coordinator"].headers,
    )
    assert run.status_code == 201, run.json

    def shipment_of(need_id: str) -> str | None:
        with dispatch.session_factory() as session:
            found = session.scalar(
                select(ShipmentLine.shipment_id).where(ShipmentLine.need_id == uuid.UUID(need_id))
            )
            return str(found) if found else None

    world.recipient_shipment = eventually(lambda: shipment_of(world.recipient_need), timeout=60)
    world.other_shipment = eventually(lambda: shipment_of(other_need), timeout=60)


def _call(world: World, row: Row, actor: str, whose: str) -> int:
    account = world.accounts.get(actor)
    headers: dict[str, str] = {}
    if account is not None:
        token = account.access_token
        if row.fresh_session:
            token = login(world.client, account.email)["access_token"]
        headers["Authorization"] = f"Bearer {token}"
    own_org = account.org_id if account else world.other_org
    if whose == "own":
        org = own_org
        token_id = world.tokens.get(actor, world.other_token)
        webhook_id = world.webhooks.get(actor, world.other_webhook)
    else:
        org = world.fresh_org() if row.fresh_other else world.other_org
        token_id = world.other_token
        webhook_id = world.other_webhook
        if row.fresh_other and "{webhook}" in row.path:
            assert world.stranger is not None
            webhook_id = world.new_webhook(world.stranger)
    pledge_id = world.donor_pledge if whose == "own" else world.other_pledge
    if row.fresh_other and "{pledge}" in row.path:
        assert world.stranger is not None
        owner = world.accounts["donor"] if whose == "own" else world.stranger
        pledge_id = world.new_pledge(owner)
    need_id = world.recipient_need if whose == "own" else world.other_need
    if row.fresh_other and "{need}" in row.path:
        assert world.stranger_hospital is not None
        owner = world.accounts["recipient"] if whose == "own" else world.stranger_hospital
        need_id = world.new_need(owner)
    path = row.path.format(
        org=org,
        token=token_id,
        flag=uuid.uuid4(),
        webhook=webhook_id,
        pledge=pledge_id,
        need=need_id,
        shipment=world.recipient_shipment if whose == "own" else world.other_shipment,
        carried=world.carried_shipment if whose == "own" else world.rival_shipment,
        job=world.donor_import if whose == "own" else world.other_import,
        place=world.places.get(actor, world.other_place) if whose == "own" else world.other_place,
        community=world.community,
        building=world.building,
        household=world.household,
        appointment=world.appointment,
        round=world.order_round,
        case=world.case,
        helper=world.helper,
        help_run=world.help_run,
        help_session=world.help_session,
        help_request=world.help_request,
        follow_token=world.follow_token,
        hotline=world.hotlines.get(actor, world.other_hotline)
        if whose == "own"
        else world.other_hotline,
        hotline_call=world.hotline_calls.get(actor, world.other_hotline_call)
        if whose == "own"
        else world.other_hotline_call,
    )
    headers.update(row.headers)
    body = row.body(world, actor) if row.body else None
    response = world.client.open(path, method=row.method, json=body, headers=headers)
    status = int(response.status_code)
    response.close()
    return status


def test_access_matrix(stack: Stack) -> None:
    stack.start_worker("donations")
    stack.start_worker("dispatch")
    stack.start_worker("community")
    world = _build_world(stack)

    mismatches = []
    calls = 0
    for row in ROWS:
        for actor in ACTORS:
            expected = row.expected[actor]
            cases = (
                [("own", expected[0]), ("other", expected[1])]
                if isinstance(expected, tuple)
                else [("own", expected)]
            )
            for whose, want in cases:
                got = _call(world, row, actor, whose)
                calls += 1
                if got != want:
                    mismatches.append(f"{row} as {actor} on {whose}: expected {want}, got {got}")
    assert not mismatches, "\n".join(mismatches)
    assert calls >= len(ROWS) * len(ACTORS)


def _normalised(path: str) -> str:
    return re.sub(r"<[^>]+>|\{[^}]+\}", "{}", path.split("?")[0])


def test_every_endpoint_has_a_row_in_the_matrix(stack: Stack) -> None:
    """A new endpoint without a row in the matrix fails here."""
    covered = {(row.method, _normalised(row.path)) for row in ROWS}
    missing = []
    for service, app in stack.apps.items():
        for rule in app.url_map.iter_rules():
            path = rule.rule
            if not path.startswith("/api/v1/") or path.startswith("/api/v1/docs/"):
                continue
            if service == "gateway" and path.startswith("/api/v1/<segment>"):
                continue  # the proxy; the services' own rows cover what it forwards
            if service != "gateway" and path == "/api/v1/openapi.json":
                continue  # merged into the gateway's document
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                if (method, _normalised(path)) not in covered:
                    missing.append(f"{service}: {method} {path}")
    assert not missing, "endpoints with no row in the access matrix:\n" + "\n".join(missing)
