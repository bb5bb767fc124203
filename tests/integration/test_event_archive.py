"""Retention (shared/event_archive.py): outbox rows every subscriber has and inbox rows
past the retention go to archive files and leave the tables; what a subscriber still
lacks stays, however old; an event that comes again after its inbox row was archived
is still recognised as stale."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, select, update

from services.donations.models import Organisation as DonationsOrganisation
from services.donations.models import messaging as donations_messaging
from services.gateway.models import messaging as gateway_messaging
from shared.db import utcnow
from shared.event_archive import archive_events, read_archive
from shared.events import new_event
from shared.inbox import Outcome
from shared.runtime import ServiceRuntime
from tests.support.orgs import HOSPITAL, count
from tests.support.stack import Stack


def _org_registered(org_id: uuid.UUID) -> dict[str, object]:
    return new_event(
        "org.registered",
        {**HOSPITAL, "id": str(org_id)},
        producer="gateway",
        aggregate_id=org_id,
        aggregate_version=1,
    ).to_message()


def _archive(rt: ServiceRuntime, stack: Stack) -> dict[str, int]:
    assert rt.models is not None
    return archive_events(
        service=rt.name,
        models=rt.models,
        session_factory=rt.session_factory,
        retention_days=30,
        directory=stack.settings.event_archive_path,
    )


def test_old_events_are_archived_and_what_a_subscriber_lacks_is_kept(stack: Stack) -> None:
    gateway = stack.runtime("gateway")
    outbox = gateway_messaging.outbox
    now = utcnow()
    old, recent = now - timedelta(days=40), now - timedelta(days=1)
    rows = {
        "confirmed": (old, old, None),
        "lacked": (old, old, ",donations,"),
        "unpublished": (old, None, None),
        "recent": (recent, recent, None),
    }
    ids = {name: uuid.uuid4() for name in rows}
    with gateway.unit_of_work() as session:
        for name, (created, published, awaiting) in rows.items():
            message = _org_registered(uuid.uuid4())
            session.add(
                outbox(
                    id=ids[name],
                    type="org.registered",
                    aggregate_id=str(message["aggregate_id"]),
                    message={**message, "id": str(ids[name])},
                    created_at=created,
                    published_at=published,
                    publish_attempts=1,
                    awaiting=awaiting,
                )
            )
    # The catch-up would never ask about these made-up rows: it is not running here.
    removed = _archive(gateway, stack)
    assert removed["outbox"] == 1
    with gateway.session_factory() as session:
        left = set(session.scalars(select(outbox.id)))
    assert left == {ids["lacked"], ids["unpublished"], ids["recent"]}
    archived = read_archive(stack.settings.event_archive_path / "gateway", "outbox")
    assert [record["id"] for record in archived] == [str(ids["confirmed"])]
    assert archived[0]["message"]["type"] == "org.registered"
    # A second run finds nothing more.
    assert _archive(gateway, stack)["outbox"] == 0


def test_an_event_that_comes_again_after_its_inbox_row_was_archived_is_stale(
    stack: Stack,
) -> None:
    donations = stack.runtime("donations")
    inbox = donations_messaging.inbox
    deliveries = donations_messaging.deliveries
    org_id = uuid.uuid4()
    message = _org_registered(org_id)
    assert donations.inbox.handle(message) is Outcome.APPLIED
    other = _org_registered(uuid.uuid4())
    assert donations.inbox.handle(other) is Outcome.APPLIED
    long_ago = utcnow() - timedelta(days=31)
    with donations.unit_of_work() as session:
        session.execute(
            update(inbox)
            .where(inbox.event_id == uuid.UUID(str(message["id"])))
            .values(received_at=long_ago)
        )
        session.execute(
            update(deliveries)
            .where(deliveries.event_id == str(message["id"]))
            .values(last_attempt_at=long_ago)
        )

    removed = _archive(donations, stack)
    assert (removed["inbox"], removed["deliveries"]) == (1, 1)
    assert count(donations, inbox) == 1
    archived = read_archive(stack.settings.event_archive_path / "donations", "inbox")
    assert [(r["event_id"], r["outcome"], r["producer"]) for r in archived] == [
        (str(message["id"]), "applied", "gateway")
    ]

    # A copy that lingered in a queue comes back: the aggregate's version remembers it.
    renamed = {**message, "payload": {**message["payload"], "name": "Renamed"}}  # type: ignore[dict-item]
    assert donations.inbox.handle(renamed) is Outcome.STALE
    with donations.session_factory() as session:
        org = session.get(DonationsOrganisation, org_id)
        assert org is not None and org.name == HOSPITAL["name"]
        assert session.scalar(select(func.count()).select_from(inbox)) == 2
