"""Webhooks: ``/api/v1/webhooks``.

An organisation subscribes a URL to the event types it wants. When the gateway's
inbox takes in an event of such a type that concerns the organisation, it writes a
*delivery* per matching subscription in the same transaction, and after the commit
queues ``gateway.deliver_webhook`` for each. The task POSTs the event, signed with
the subscription's secret (see :mod:`shared.webhook_signature`):

- a 2xx answer ends the delivery (``succeeded``) and clears the subscription's count
  of failed deliveries;
- anything else (another status, a redirect, a timeout, a refused connection) is
  tried again after ``webhook_backoff * 2 ** (attempt - 1)`` seconds, with jitter, up
  to ``webhook_max_attempts`` attempts; then the delivery is ``failed``;
- ``webhook_disable_after`` failed deliveries in a row disable the subscription
  (audited, actor ``system``); a member re-enables it with ``PATCH active=true``.

Each attempt is claimed in the database before the POST (attempt counted, the next
attempt time pushed past the request's timeout), so a task delivered twice, or
re-queued by beat's ``gateway.sweep_webhooks`` after a lost message, never sends a
delivery that has succeeded, nor two attempts at once. Delivery is at least once: a
worker that dies after the receiver answered but before the outcome was saved sends
that delivery again, with the same ``X-Aidlink-Delivery`` id, by which receivers
de-duplicate. Deliveries are not ordered; ``occurred_at`` says when each event
happened.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import logging
import random
import secrets
import socket
import time
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from services.gateway.audit import service as audit
from services.gateway.models import WebhookDelivery, WebhookSubscription
from shared.config import Settings
from shared.db import utcnow
from shared.errors import RuleBroken
from shared.events import Event, subscribers_of
from shared.events.registry import REGISTRY
from shared.pending import Pending
from shared.privacy import donor_hidden, without_donor
from shared.runtime import ServiceRuntime
from shared.webhook_signature import SIGNATURE_HEADER, sign

log = logging.getLogger(__name__)


# Event types an organisation may subscribe to: those that concern an organisation.
WEBHOOK_EVENT_TYPES: tuple[str, ...] = (
    "org.registered",
    "org.verified",
    "org.suspended",
    "org.merged",
    "pledge.created",
    "pledge.amended",
    "pledge.cancelled",
    "reservation.accepted",
    "reservation.rejected",
    "reservation.released",
    "need.posted",
    "need.updated",
    "need.expired",
    "need.fulfilled",
    "need.cancelled",
    "need.reconfirm_due",
    "shipment.created",
    "shipment.status_changed",
    "shipment.overdue",
    "receipt.confirmed",
)

# Payload keys naming an organisation an event concerns, in every event type...
ORG_ID_KEYS: tuple[str, ...] = ("org_id", "donor_org_id", "recipient_org_id", "logistics_org_id")
# ...and in the organisation's own events (org.*), whose subject is ``id``.
OWN_EVENT_ORG_KEYS: tuple[str, ...] = ("id", "merged_into")

DELIVER_TASK = "gateway.deliver_webhook"
SWEEP_TASK = "gateway.sweep_webhooks"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
USER_AGENT = "aidlink-webhooks/1"
EVENT_HEADER = "X-Aidlink-Event"
DELIVERY_HEADER = "X-Aidlink-Delivery"
ATTEMPT_HEADER = "X-Aidlink-Attempt"
DELIVERY_STATUSES = ("pending", "succeeded", "failed")

# Longest wait between two attempts, whatever the backoff setting says. Kept well under
# the broker's visibility timeout: a retry waits on the broker as a countdown.
BACKOFF_CAP = 900.0
# A pending delivery due this long ago with no attempt made is presumed lost (its task
# message gone with a broker or worker) and queued again by the sweep.
SWEEP_GRACE = 60.0
# An attempt in progress holds its delivery this long beyond the request timeout.
ATTEMPT_LEASE = 30.0
# A task may start this early on its delivery's next attempt time (clock skew).
EARLY_SLACK = 1.0

# The deliveries a transaction scheduled, queued once it commits.
PENDING_DELIVERIES = Pending("aidlink.webhooks.pending")

for _type in WEBHOOK_EVENT_TYPES:
    REGISTRY.latest_version(_type)  # raises for a type the registry does not know
    if "gateway" not in subscribers_of(_type):
        raise RuntimeError(f"the gateway must subscribe to {_type} to deliver its webhooks")


WEBHOOK_AUDIT_FIELDS = (
    "org_id",
    "url",
    "event_types",
    "description",
    "active",
    "consecutive_failures",
    "disabled_at",
    "disabled_reason",
)
DELIVERY_AUDIT_FIELDS = ("subscription_id", "event_id", "event_type", "status", "attempts")


# Subscriptions ------------------------------------------------------------------------


def resolve_target(url: str) -> tuple[str | None, list[str]]:
    """Resolve ``url``'s host once: ``(reason, [])`` if it may not be called from
    inside the installation (it resolves to a loopback, private, link-local or
    otherwise internal address), else ``(None, addresses)``: the addresses to connect
    to, in the resolver's order, so that a name that resolves elsewhere a moment later
    (DNS rebinding) is not followed there."""
    host = urlsplit(url).hostname
    if not host:
        return "The URL names no host.", []
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return f"The host {host!r} does not resolve.", []
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for address in addresses:
        if not address.is_global or address.is_multicast:
            return f"The host {host!r} resolves to an internal address ({address}).", []
    if not addresses:
        return f"The host {host!r} does not resolve.", []
    return None, list(dict.fromkeys(str(a) for a in addresses))


def private_target(url: str) -> str | None:
    """Why ``url`` may not be called from inside the installation, or None."""
    return resolve_target(url)[0]


class _PinnedAdapter(HTTPAdapter):
    """Connects to the address checked, while TLS still verifies the certificate
    (and sends SNI) for the URL's host name."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        super().__init__(max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **kw: Any
    ) -> None:
        kw["server_hostname"] = self.hostname
        kw["assert_hostname"] = self.hostname
        super().init_poolmanager(connections, maxsize, block, **kw)


def pinned_request(url: str, address: str) -> tuple[str, dict[str, str], HTTPAdapter]:
    """The URL to send to (``url`` with its host replaced by ``address``, any
    credentials kept), the Host header it needs, and the adapter that checks TLS
    against the original name (in its IDNA form)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").encode("idna").decode("ascii")
    port = parts.port
    literal = f"[{address}]" if ":" in address else address
    named = f"[{host}]" if ":" in host else host
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (f"{userinfo}@" if userinfo else "") + (f"{literal}:{port}" if port else literal)
    host_header = f"{named}:{port}" if port else named
    return urlunsplit(parts._replace(netloc=netloc)), {"Host": host_header}, _PinnedAdapter(host)


def check_target(settings: Settings, url: str) -> None:
    """Refuse a subscription URL that points inside the installation, unless the
    installation allows it (AIDLINK_WEBHOOK_ALLOW_PRIVATE, e.g. for a field laptop)."""
    if settings.webhook_allow_private:
        return
    reason = private_target(url)
    if reason:
        raise RuleBroken(reason, errors={"url": [reason]})


def new_webhook_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _event_types(values: list[str]) -> list[str]:
    """The chosen types once each, in the order of :data:`WEBHOOK_EVENT_TYPES`."""
    return [t for t in WEBHOOK_EVENT_TYPES if t in values]


# Fan-out: from events to deliveries ---------------------------------------------------


def orgs_concerned(evt: Event) -> set[uuid.UUID]:
    """The organisations an event concerns, whose subscriptions may receive it."""
    data = evt.data()
    found: set[uuid.UUID] = set()
    keys = ORG_ID_KEYS + (OWN_EVENT_ORG_KEYS if evt.type.startswith("org.") else ())
    for key in keys:
        value = data.get(key)
        if value is not None:
            found.add(uuid.UUID(str(value)))
    return found


def delivery_payload(evt: Event, org_id: uuid.UUID | None = None) -> dict[str, Any]:
    """What a delivery of ``evt`` to ``org_id``'s subscription sends, less the delivery's
    own id. An anonymous donor is named only to itself (see shared.privacy)."""
    data = evt.payload
    if isinstance(data, dict) and donor_hidden(
        anonymous=bool(data.get("donor_anonymous")),
        donor_org_id=data.get("donor_org_id"),
        viewer_org_id=org_id,
        viewer_is_coordinator=False,
    ):
        data = without_donor(data)
    return {
        "event_id": str(evt.id),
        "type": evt.type,
        "occurred_at": evt.occurred_at.isoformat(),
        "data": data,
    }


def fan_out(session: Session, evt: Event) -> list[WebhookDelivery]:
    """In the inbox's transaction: a delivery of ``evt`` for each active subscription
    to its type of an organisation it concerns, queued once the transaction commits."""
    orgs = orgs_concerned(evt)
    if not orgs:
        return []
    candidates = session.scalars(
        select(WebhookSubscription)
        .where(WebhookSubscription.org_id.in_(orgs), WebhookSubscription.active.is_(True))
        .order_by(WebhookSubscription.created_at, WebhookSubscription.id)
    ).all()
    subs = [sub for sub in candidates if evt.type in (sub.event_types or ())]
    if not subs:
        return []
    already = set(
        session.scalars(
            select(WebhookDelivery.subscription_id).where(
                WebhookDelivery.event_id == str(evt.id),
                WebhookDelivery.subscription_id.in_([sub.id for sub in subs]),
            )
        )
    )
    now = utcnow()
    deliveries = []
    for sub in subs:
        if sub.id in already:
            continue
        delivery = WebhookDelivery(
            id=uuid.uuid4(),
            subscription_id=sub.id,
            event_id=str(evt.id),
            event_type=evt.type,
            payload=delivery_payload(evt, sub.org_id),
            status="pending",
            attempts=0,
            created_at=now,
            next_attempt_at=now,
        )
        session.add(delivery)
        deliveries.append(delivery)
    session.flush()
    for delivery in deliveries:
        schedule(session, delivery.id)
    return deliveries


def schedule(session: Session, delivery_id: uuid.UUID, countdown: float = 0.0) -> None:
    """Queue an attempt at ``delivery_id`` once ``session``'s transaction commits."""
    PENDING_DELIVERIES.append(session, (str(delivery_id), countdown))


def enqueue(rt: ServiceRuntime, delivery_id: str, countdown: float = 0.0) -> bool:
    """Send the task for one attempt; a failure is logged and left to the sweep."""
    try:
        rt.celery.send_task(
            DELIVER_TASK,
            args=[delivery_id],
            queue=rt.name,
            countdown=countdown if countdown > 0 else None,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
        )
    except Exception:
        log.exception("could not queue webhook delivery %s; the sweep will", delivery_id)
        return False
    return True


# Delivery -----------------------------------------------------------------------------


class Attempt(enum.StrEnum):
    """What one run of the delivery task did."""

    SUCCEEDED = "succeeded"
    RETRY_SCHEDULED = "retry_scheduled"
    FAILED = "failed"
    SUBSCRIPTION_DISABLED = "subscription_disabled"
    NOT_FOUND = "not_found"
    FINISHED = "already_finished"
    NOT_DUE = "not_due"
    SUPERSEDED = "superseded"


def backoff_delay(base: float, attempt: int, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 for the first)."""
    raw = base * 2 ** (max(attempt, 1) - 1)
    jitter = random.uniform(0.8, 1.2)  # noqa: S311 - spreads retries, not a secret
    return float(min(cap, raw * jitter))


def deliver(rt: ServiceRuntime, delivery_id: uuid.UUID) -> Attempt:
    """Make the next attempt at one delivery, if it is due, and record its outcome."""
    settings = rt.settings
    claimed = _claim(rt, delivery_id)
    if isinstance(claimed, Attempt):
        return claimed
    attempt, url, secret, body, event_type = claimed
    status_code, error = _post(settings, url, secret, body, event_type, delivery_id, attempt)
    return _record(rt, delivery_id, attempt, status_code, error)


def _claim(
    rt: ServiceRuntime, delivery_id: uuid.UUID
) -> Attempt | tuple[int, str, str, bytes, str]:
    """Count the attempt and hold the delivery for its duration, in a transaction of
    its own, so no other task sends it meanwhile."""
    now = utcnow()
    with rt.unit_of_work() as session:
        delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
        if delivery is None:
            return Attempt.NOT_FOUND
        if delivery.status != "pending":
            return Attempt.FINISHED
        if delivery.next_attempt_at is not None and delivery.next_attempt_at > now + timedelta(
            seconds=EARLY_SLACK
        ):
            # Another task holds it, or a later attempt is already on the broker.
            return Attempt.NOT_DUE
        sub = session.get(WebhookSubscription, delivery.subscription_id)
        if sub is None or not sub.active:
            delivery.status = "failed"
            delivery.last_error = "subscription disabled"
            delivery.next_attempt_at = None
            return Attempt.SUBSCRIPTION_DISABLED
        delivery.attempts += 1
        delivery.last_attempt_at = now
        delivery.next_attempt_at = now + timedelta(
            seconds=rt.settings.webhook_timeout + ATTEMPT_LEASE
        )
        body = json.dumps(
            {"id": str(delivery.id), **delivery.payload}, separators=(",", ":"), ensure_ascii=False
        ).encode()
        return delivery.attempts, sub.url, sub.secret, body, delivery.event_type


def _post(
    settings: Settings,
    url: str,
    secret: str,
    body: bytes,
    event_type: str,
    delivery_id: uuid.UUID,
    attempt: int,
) -> tuple[int | None, str | None]:
    """POST one attempt; returns the status code (None without an answer) and, unless
    it succeeded, what went wrong."""
    routes: list[tuple[str, dict[str, str], HTTPAdapter]] = [(url, {}, HTTPAdapter(max_retries=0))]
    if not settings.webhook_allow_private:
        # Checked again at each attempt (a name may resolve elsewhere by now), and the
        # connection goes to an address checked, not to a second resolution: each in
        # turn until one answers.
        try:
            reason, addresses = resolve_target(url)
            if reason or not addresses:
                return None, f"refused: {reason}"
            routes = [pinned_request(url, address) for address in addresses]
        except (ValueError, UnicodeError) as exc:
            return None, f"refused: the URL cannot be sent to ({type(exc).__name__})"
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: event_type,
        DELIVERY_HEADER: str(delivery_id),
        ATTEMPT_HEADER: str(attempt),
        SIGNATURE_HEADER: sign(secret, body, int(time.time())),
    }
    started = time.monotonic()
    status: int | None = None
    for index, (target, extra, adapter) in enumerate(routes):
        try:
            with requests.Session() as http:
                # No proxy from the environment: the connection goes to the address
                # checked.
                http.trust_env = False
                http.mount("http://", adapter)
                http.mount("https://", adapter)
                # The answer's body is never read: only its status and how long it
                # took reach the subscriber.
                with http.post(
                    target,
                    data=body,
                    headers={**extra, **headers},
                    timeout=settings.webhook_timeout,
                    allow_redirects=False,
                    stream=True,
                ) as response:
                    status = response.status_code
            break
        except requests.ConnectionError as exc:
            if index + 1 < len(routes):
                continue  # that address did not take the connection: the next one
            return None, f"{type(exc).__name__} after {_ms(started)} ms"
        except (requests.RequestException, ValueError, UnicodeError, OSError) as exc:
            # Any failure to send is a failed attempt, retried and counted like the
            # others.
            return None, f"{type(exc).__name__} after {_ms(started)} ms"
    if status is None:
        return None, f"no answer after {_ms(started)} ms"
    if 200 <= status < 300:
        return status, None
    detail = f"HTTP {status} after {_ms(started)} ms"
    if 300 <= status < 400:
        detail += " (redirects are not followed)"
    return status, detail


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _record(
    rt: ServiceRuntime,
    delivery_id: uuid.UUID,
    attempt: int,
    status_code: int | None,
    error: str | None,
) -> Attempt:
    settings = rt.settings
    with rt.unit_of_work() as session:
        delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
        if delivery is None or delivery.status != "pending" or delivery.attempts != attempt:
            return Attempt.SUPERSEDED
        now = utcnow()
        delivery.last_status_code = status_code
        if error is None:
            delivery.status = "succeeded"
            delivery.delivered_at = now
            delivery.last_error = None
            delivery.next_attempt_at = None
            session.execute(
                update(WebhookSubscription)
                .where(
                    WebhookSubscription.id == delivery.subscription_id,
                    WebhookSubscription.consecutive_failures != 0,
                )
                .values(consecutive_failures=0, version=WebhookSubscription.version + 1)
                .execution_options(synchronize_session=False)
            )
            return Attempt.SUCCEEDED
        delivery.last_error = error
        if attempt < settings.webhook_max_attempts:
            delay = backoff_delay(settings.webhook_backoff, attempt)
            delivery.next_attempt_at = now + timedelta(seconds=delay)
            schedule(session, delivery.id, delay)
            return Attempt.RETRY_SCHEDULED
        delivery.status = "failed"
        delivery.next_attempt_at = None
        _count_failed_delivery(session, settings, delivery.subscription_id, error)
        return Attempt.FAILED


def _count_failed_delivery(
    session: Session, settings: Settings, subscription_id: uuid.UUID, error: str
) -> None:
    """One more failed delivery in a row; enough of them disable the subscription."""
    sub = session.get(WebhookSubscription, subscription_id, with_for_update=True)
    if sub is None or not sub.active:
        return
    before = audit.snapshot(sub, *WEBHOOK_AUDIT_FIELDS)
    sub.consecutive_failures += 1
    if sub.consecutive_failures < settings.webhook_disable_after:
        return
    sub.active = False
    sub.disabled_at = utcnow()
    sub.disabled_reason = (
        f"Disabled after {sub.consecutive_failures} deliveries in a row failed all "
        f"{settings.webhook_max_attempts} attempts; the last: {error}"
    )[:500]
    session.flush()
    log.warning("webhook subscription %s disabled: %s", sub.id, sub.disabled_reason)
    audit.record(
        session,
        "webhook.disable",
        "webhook_subscription",
        sub.id,
        before=before,
        after=audit.snapshot(sub, *WEBHOOK_AUDIT_FIELDS),
    )


def sweep(rt: ServiceRuntime, now: datetime | None = None, grace: float = SWEEP_GRACE) -> int:
    """Queue again the pending deliveries whose attempt is overdue by more than
    ``grace`` seconds (their task was lost); returns how many."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=grace)
    with rt.unit_of_work() as session:
        stmt = (
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.status == "pending",
                or_(
                    WebhookDelivery.next_attempt_at <= cutoff,
                    WebhookDelivery.next_attempt_at.is_(None),
                ),
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(500)
        )
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        ids = list(session.scalars(stmt))
        if ids:
            # Due now: the next sweep leaves them to these tasks for another grace period.
            session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(ids))
                .values(next_attempt_at=now)
                .execution_options(synchronize_session=False)
            )
    for delivery_id in ids:
        enqueue(rt, str(delivery_id))
    if ids:
        log.warning("webhook sweep queued %d overdue delivery attempt(s) again", len(ids))
    return len(ids)
