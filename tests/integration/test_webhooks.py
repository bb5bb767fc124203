"""Webhooks: signed deliveries a receiver can verify, retried after failures, logged,
and disabled after repeated failures; the API keeps each organisation to its own."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from services.gateway.models import WebhookDelivery
from services.gateway.models import messaging as gateway_messaging
from services.gateway.webhooks.service import SWEEP_GRACE, fan_out, sweep
from shared import webhook_signature
from shared.config import Settings
from shared.db import utcnow
from shared.events import new_event
from tests.support.auth import Account, admin, coordinator, register, verify
from tests.support.stack import Stack, build_stack, eventually

# Quick retries, so a test sees a delivery through all its attempts in about a second.
FAST_WEBHOOKS = {
    "webhook_backoff": 0.2,
    "webhook_max_attempts": 3,
    "webhook_disable_after": 2,
    "webhook_timeout": 5.0,
}


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    with build_stack(settings.with_overrides(**FAST_WEBHOOKS)) as s:
        yield s


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    """An organisation's endpoint: records each POST and answers the statuses queued
    in ``statuses``, then ``default``."""

    def __init__(self) -> None:
        self.url = ""
        self.statuses: list[int] = []
        self.default = 200
        self.requests: list[Received] = []
        self._lock = threading.Lock()

    def __call__(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        received = Received(dict(request.headers), request.get_data(), time.monotonic())
        with self._lock:
            self.requests.append(received)
            status = self.statuses.pop(0) if self.statuses else self.default
        answer = Response("ok" if status < 300 else "receiver broke", status=status)
        return answer(environ, start_response)

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    server = make_server("127.0.0.1", 0, receiver, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_port}/hooks/aidlink"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def subscribe(
    client: Any, account: Account, url: str, event_types: tuple[str, ...] = ("org.verified",)
) -> dict[str, Any]:
    response = client.post(
        "/api/v1/webhooks",
        json={"url": url, "event_types": list(event_types), "description": "our intake system"},
        headers=account.headers,
    )
    assert response.status_code == 201, response.json
    body: dict[str, Any] = response.json
    return body


def delivery_log(client: Any, account: Account, webhook_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/webhooks/{webhook_id}/deliveries", headers=account.headers)
    assert response.status_code == 200, response.json
    items: list[dict[str, Any]] = response.json["items"]
    return items


def finished(log: list[dict[str, Any]], count: int) -> list[dict[str, Any]] | None:
    done = [d for d in log if d["status"] != "pending"]
    return done if len(done) >= count else None


def test_delivery_is_signed_with_the_secret_shown_at_creation(
    stack: Stack, receiver: Receiver
) -> None:
    stack.start_worker("gateway")
    client = stack.client()
    coord = coordinator(client, admin(stack.apps["gateway"], client))
    hospital = register(client, kind="hospital")
    hook = subscribe(client, hospital, receiver.url)
    secret = hook["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40

    verify(client, coord, hospital.org_id, evidence="licence 91420100MA4K checked")

    [request] = eventually(receiver.received)
    signature = request.headers["X-Aidlink-Signature"]
    assert webhook_signature.verify(secret, request.body, signature)
    assert not webhook_signature.verify("whsec_" + "x" * 43, request.body, signature)
    body = json.loads(request.body)
    assert body["type"] == "org.verified"
    assert body["data"]["id"] == hospital.org_id
    assert body["data"]["evidence"] == "licence 91420100MA4K checked"
    assert body["occurred_at"]
    assert request.headers["X-Aidlink-Event"] == "org.verified"
    assert request.headers["X-Aidlink-Delivery"] == body["id"]
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("aidlink-webhooks/")

    [logged] = eventually(lambda: finished(delivery_log(client, hospital, hook["id"]), 1))
    assert logged["id"] == body["id"]
    assert logged["event_id"] == body["event_id"]
    assert logged["status"] == "succeeded"
    assert logged["attempts"] == 1
    assert logged["last_status_code"] == 200
    assert logged["delivered_at"] is not None
    assert len(receiver.received()) == 1


def test_delivery_answered_500_is_retried_and_the_log_shows_it(
    stack: Stack, receiver: Receiver
) -> None:
    stack.start_worker("gateway")
    receiver.statuses = [500]
    client = stack.client()
    coord = coordinator(client, admin(stack.apps["gateway"], client))
    hospital = register(client, kind="hospital")
    hook = subscribe(client, hospital, receiver.url)

    verify(client, coord, hospital.org_id)

    [logged] = eventually(lambda: finished(delivery_log(client, hospital, hook["id"]), 1))
    assert logged["status"] == "succeeded"
    assert logged["attempts"] == 2
    assert logged["last_status_code"] == 200
    assert logged["last_error"] is None
    first, second = receiver.received()
    # The same delivery both times, signed afresh each time, after the backoff.
    assert first.headers["X-Aidlink-Delivery"] == second.headers["X-Aidlink-Delivery"]
    assert first.body == second.body
    assert [first.headers["X-Aidlink-Attempt"], second.headers["X-Aidlink-Attempt"]] == ["1", "2"]
    assert webhook_signature.verify(
        hook["secret"], second.body, second.headers["X-Aidlink-Signature"]
    )
    assert second.at - first.at >= 0.15
    shown = client.get(f"/api/v1/webhooks/{hook['id']}", headers=hospital.headers).json
    assert shown["active"] is True
    assert shown["consecutive_failures"] == 0


def _gateway_took_in(stack: Stack, event_type: str, org_id: str) -> bool:
    """Whether the gateway's inbox has taken in the latest ``event_type`` of ``org_id``."""
    rt = stack.runtime("gateway")
    outbox, inbox = gateway_messaging.outbox, gateway_messaging.inbox
    with rt.session_factory() as session:
        latest = session.scalars(
            select(outbox.id)
            .where(outbox.type == event_type, outbox.aggregate_id == org_id)
            .order_by(outbox.created_at.desc())
            .limit(1)
        ).first()
        return latest is not None and session.get(inbox, latest) is not None


def test_subscription_failing_every_delivery_is_disabled_and_gets_nothing_more(
    stack: Stack, receiver: Receiver
) -> None:
    stack.start_worker("gateway")
    receiver.default = 500
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    coord = coordinator(client, boss)
    hospital = register(client, kind="hospital")
    hook = subscribe(client, hospital, receiver.url, ("org.verified", "org.suspended"))
    url = f"/api/v1/webhooks/{hook['id']}"

    verify(client, coord, hospital.org_id)
    [first] = eventually(lambda: finished(delivery_log(client, hospital, hook["id"]), 1))
    assert (first["status"], first["attempts"], first["last_status_code"]) == ("failed", 3, 500)
    assert first["last_error"].startswith("HTTP 500")
    assert client.get(url, headers=hospital.headers).json["consecutive_failures"] == 1

    suspended = client.post(
        f"/api/v1/orgs/{hospital.org_id}/suspend",
        json={"reason": "licence under review"},
        headers=coord.headers,
    )
    assert suspended.status_code == 200, suspended.json
    shown = eventually(
        lambda: (lambda s: s if not s["active"] else None)(
            client.get(url, headers=hospital.headers).json
        )
    )
    assert shown["consecutive_failures"] == 2
    assert shown["disabled_at"] is not None
    assert "2 deliveries in a row failed" in shown["disabled_reason"]
    assert "HTTP 500" in shown["disabled_reason"]
    assert len(receiver.received()) == 6
    log = delivery_log(client, hospital, hook["id"])
    assert [(d["event_type"], d["status"], d["attempts"]) for d in log] == [
        ("org.verified", "failed", 3),
        ("org.suspended", "failed", 3),
    ]

    # Disabled by the system, in the audit log; the secret is not there.
    audit = client.get(
        "/api/v1/audit", query_string={"action": "webhook.disable"}, headers=boss.headers
    ).json["items"]
    assert [(a["actor_kind"], a["target_id"]) for a in audit] == [("system", hook["id"])]
    assert audit[0]["before"]["active"] is True and audit[0]["after"]["active"] is False
    assert hook["secret"] not in json.dumps(audit)

    # Another event of a subscribed type: no delivery, nothing sent.
    verify(client, coord, hospital.org_id, evidence="review finished")
    eventually(lambda: _gateway_took_in(stack, "org.verified", hospital.org_id))
    assert len(delivery_log(client, hospital, hook["id"])) == 2
    time.sleep(0.3)
    assert len(receiver.received()) == 6

    # The receiver is mended; re-enabling clears the count, and a failed delivery can
    # be sent again.
    receiver.default = 200
    enabled = client.patch(url, json={"active": True}, headers=hospital.headers)
    assert enabled.status_code == 200, enabled.json
    assert enabled.json["active"] is True
    assert enabled.json["consecutive_failures"] == 0
    assert enabled.json["disabled_at"] is None and enabled.json["disabled_reason"] is None
    retried = client.post(f"{url}/deliveries/{first['id']}/retry", headers=hospital.headers)
    assert retried.status_code == 202, retried.json
    assert retried.json["status"] == "pending"
    again = client.post(f"{url}/deliveries/{first['id']}/retry", headers=hospital.headers)
    assert again.status_code == 409

    def retried_ok() -> dict[str, Any] | None:
        log = delivery_log(client, hospital, hook["id"])
        mine = next(d for d in log if d["id"] == first["id"])
        return mine if mine["status"] == "succeeded" else None

    done = eventually(retried_ok)
    assert done["attempts"] == 1 and done["last_status_code"] == 200
    last = receiver.received()[-1]
    assert last.headers["X-Aidlink-Delivery"] == first["id"]
    assert webhook_signature.verify(hook["secret"], last.body, last.headers["X-Aidlink-Signature"])


AT = datetime(2020, 2, 1, 8, 0, tzinfo=UTC)


def test_an_event_handed_over_twice_makes_one_delivery(stack: Stack, receiver: Receiver) -> None:
    client = stack.client()
    hospital = register(client, kind="hospital")
    hook = subscribe(client, hospital, receiver.url, ("org.suspended",))
    evt = new_event(
        "org.suspended",
        {"id": hospital.org_id, "suspended_at": AT},
        producer="gateway",
        aggregate_id=hospital.org_id,
        aggregate_version=5,
    )
    rt = stack.runtime("gateway")
    with rt.unit_of_work() as session:
        assert len(fan_out(session, evt)) == 1
    with rt.unit_of_work() as session:
        assert fan_out(session, evt) == []
    # An event about another organisation, or of a type not chosen, makes none.
    other = new_event(
        "org.suspended",
        {"id": uuid.uuid4(), "suspended_at": AT},
        producer="gateway",
        aggregate_id=uuid.uuid4(),
        aggregate_version=2,
    )
    unchosen = new_event(
        "org.verified",
        {"id": hospital.org_id, "verified_at": AT},
        producer="gateway",
        aggregate_id=hospital.org_id,
        aggregate_version=6,
    )
    with rt.unit_of_work() as session:
        assert fan_out(session, other) == []
        assert fan_out(session, unchosen) == []
    with rt.session_factory() as session:
        rows = list(session.scalars(select(WebhookDelivery)))
    assert [(r.subscription_id, r.event_id) for r in rows] == [(uuid.UUID(hook["id"]), str(evt.id))]


def test_the_api_hides_the_secret_keeps_to_the_organisation_and_names_bad_fields(
    stack: Stack, receiver: Receiver
) -> None:
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    coord = coordinator(client, boss)
    hospital = register(client, kind="hospital")
    donor = register(client, kind="foundation")
    hook = subscribe(client, hospital, receiver.url, ("org.verified", "org.suspended"))
    secret = hook["secret"]
    url = f"/api/v1/webhooks/{hook['id']}"
    assert hook["event_types"] == ["org.verified", "org.suspended"]
    assert hook["org_id"] == hospital.org_id and hook["active"] is True

    # Shown once: never in a later read, nor in the audit log.
    listed = client.get("/api/v1/webhooks", headers=hospital.headers)
    single = client.get(url, headers=hospital.headers)
    changed = client.patch(url, json={"description": "new intake"}, headers=hospital.headers)
    for response in (listed, single, changed):
        assert response.status_code == 200, response.json
        assert secret not in response.get_data(as_text=True)
        assert "secret" not in response.get_data(as_text=True)
    assert [h["id"] for h in listed.json["items"]] == [hook["id"]]
    assert changed.json["description"] == "new intake"

    # Another organisation sees nothing of it and changes nothing.
    assert client.get("/api/v1/webhooks", headers=donor.headers).json["items"] == []
    for method, path, body in (
        ("get", url, None),
        ("patch", url, {"active": False}),
        ("delete", url, None),
        ("get", f"{url}/deliveries", None),
        ("post", f"{url}/deliveries/{uuid.uuid4()}/retry", None),
    ):
        response = getattr(client, method)(path, json=body, headers=donor.headers)
        assert response.status_code == 404, (method, path, response.json)
    forbidden = client.get(
        "/api/v1/webhooks", query_string={"org_id": hospital.org_id}, headers=donor.headers
    )
    assert forbidden.status_code == 403
    assert client.get(url, headers=hospital.headers).json["active"] is True
    # A coordinator may look.
    seen = client.get(
        "/api/v1/webhooks", query_string={"org_id": hospital.org_id}, headers=coord.headers
    )
    assert [h["id"] for h in seen.json["items"]] == [hook["id"]]

    # Bad input names the field.
    for invalid, field in (
        ({"url": "ftp://example.org/hook", "event_types": ["org.verified"]}, "url"),
        ({"url": "not a url", "event_types": ["org.verified"]}, "url"),
        ({"url": receiver.url, "event_types": ["org.exploded"]}, "event_types.0"),
        ({"url": receiver.url, "event_types": []}, "event_types"),
        ({"url": receiver.url}, "event_types"),
    ):
        response = client.post("/api/v1/webhooks", json=invalid, headers=hospital.headers)
        assert response.status_code == 422, invalid
        assert response.mimetype == "application/problem+json"
        assert field in response.json["errors"], response.json
    bad_patch = client.patch(url, json={"event_types": ["pledge.made"]}, headers=hospital.headers)
    assert bad_patch.status_code == 422
    assert "event_types.0" in bad_patch.json["errors"]

    # Pausing and re-enabling.
    paused = client.patch(url, json={"active": False}, headers=hospital.headers).json
    assert paused["active"] is False and paused["disabled_reason"]
    resumed = client.patch(url, json={"active": True}, headers=hospital.headers).json
    assert resumed["active"] is True and resumed["disabled_reason"] is None

    # An API token needs webhooks:write to change subscriptions.
    token = client.post(
        "/api/v1/tokens",
        json={"name": "intake reader", "scopes": ["webhooks:read"]},
        headers=hospital.headers,
    ).json["token"]
    as_token = {"Authorization": f"Bearer {token}"}
    assert client.get(url, headers=as_token).status_code == 200
    refused = client.post(
        "/api/v1/webhooks",
        json={"url": receiver.url, "event_types": ["org.verified"]},
        headers=as_token,
    )
    assert refused.status_code == 403

    # Deleted: gone, and every change is in the audit log.
    assert client.delete(url, headers=hospital.headers).status_code == 204
    assert client.get(url, headers=hospital.headers).status_code == 404
    audit = client.get(
        "/api/v1/audit", query_string={"target_id": hook["id"]}, headers=boss.headers
    ).json["items"]
    assert [a["action"] for a in audit] == [
        "webhook.create",
        "webhook.update",
        "webhook.update",
        "webhook.update",
        "webhook.delete",
    ]
    assert secret not in json.dumps(audit)


def test_delivery_whose_task_was_lost_is_sent_by_the_sweep(
    stack: Stack, receiver: Receiver
) -> None:
    client = stack.client()
    hospital = register(client, kind="hospital")
    hook = subscribe(client, hospital, receiver.url)
    rt = stack.runtime("gateway")
    due = utcnow() - timedelta(seconds=SWEEP_GRACE + 5)
    lost = uuid.uuid4()
    # A delivery written, but whose task never reached the broker.
    with rt.session_factory() as session, session.begin():
        session.add(
            WebhookDelivery(
                id=lost,
                subscription_id=uuid.UUID(hook["id"]),
                event_id=str(uuid.uuid4()),
                event_type="org.verified",
                payload={"event_id": "e", "type": "org.verified", "occurred_at": "", "data": {}},
                status="pending",
                attempts=0,
                created_at=due,
                next_attempt_at=due,
            )
        )
    stack.start_worker("gateway")
    rt.celery.send_task("gateway.sweep_webhooks", queue="gateway")

    [request] = eventually(receiver.received)
    assert request.headers["X-Aidlink-Delivery"] == str(lost)
    [logged] = eventually(lambda: finished(delivery_log(client, hospital, hook["id"]), 1))
    assert (logged["status"], logged["attempts"]) == ("succeeded", 1)
    # Nothing is overdue any more.
    assert sweep(rt) == 0


def test_a_recipient_hears_of_its_shipments_and_receipts_by_webhook(
    stack: Stack, receiver: Receiver
) -> None:
    from tests.support.shipping import (
        assign_carrier,
        backdate_shipments,
        list_shipments,
        reserved,
        shipment_event,
    )
    from tests.support.world import saga_world

    people = saga_world(stack, carriers=True)
    stack.start_worker("gateway")
    client = stack.client()
    hospital = people["hospital"]
    subscribe(
        client,
        hospital,
        receiver.url,
        ("shipment.created", "shipment.status_changed", "receipt.confirmed"),
    )
    reserved(
        stack,
        people,
        {"mask": 100},
        [("hospital", {"mask": 100}, {"region": "420103", "address": "ward 3"})],
    )
    [shipment] = list_shipments(client, people["coordinator"])
    backdate_shipments(stack)  # planned days ago: the story scans hours back
    assign_carrier(client, shipment, people)
    start = datetime.now(UTC) - timedelta(hours=2)
    for hours, status in enumerate(("picked_up", "delivered")):
        shipment_event(
            client, shipment["id"], people["carrier"], status, start + timedelta(hours=hours)
        )
    line = shipment["lines"][0]
    confirmed = client.post(
        f"/api/v1/shipments/{shipment['id']}/receipt",
        json={
            "lines": [{"shipment_line_id": line["id"], "accepted": 100, "damaged": 0, "short": 0}]
        },
        headers=hospital.headers,
    )
    assert confirmed.status_code == 201, confirmed.json

    def heard() -> list[tuple[str, str | None]] | None:
        bodies = [json.loads(r.body) for r in receiver.received()]
        seen = [(b["type"], b["data"].get("status")) for b in bodies]
        return seen if ("receipt.confirmed", None) in seen and len(seen) >= 5 else None

    seen = eventually(heard, timeout=60)
    assert ("shipment.created", "planned") in seen
    assert {s for t, s in seen if t == "shipment.status_changed"} >= {
        "picked_up",
        "delivered",
        "received",
    }
    for request in receiver.received():
        assert request.headers["X-Aidlink-Event"] in (
            "shipment.created",
            "shipment.status_changed",
            "receipt.confirmed",
        )
