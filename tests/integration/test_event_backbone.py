"""The backbone's promises: no event without its change, none lost, none applied twice."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.donations.models import Organisation as DonationsOrganisation
from services.donations.models import messaging as donations_messaging
from services.gateway.models import Organisation
from services.gateway.models import messaging as gateway_messaging
from services.gateway.orgs.service import register_organisation
from shared.config import Settings
from shared.events import new_event
from shared.inbox import Outcome
from shared.runtime import ServiceRuntime
from tests.support.auth import register
from tests.support.orgs import HOSPITAL, count, read_model_org
from tests.support.stack import Stack, build_stack, eventually


class Refusing:
    """A publisher whose broker connection is gone."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, service: str, message: dict[str, Any]) -> None:
        self.calls += 1
        raise ConnectionError("broker unreachable")


class Recording:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sent: list[tuple[str, str]] = []

    def __call__(self, service: str, message: dict[str, Any]) -> None:
        self.sent.append((service, message["id"]))
        self.inner(service, message)


def test_registration_that_rolls_back_publishes_no_event(stack: Stack) -> None:
    gateway = stack.runtime("gateway")
    recording = Recording(gateway.outbox.publisher)
    gateway.outbox.publisher = recording

    with pytest.raises(RuntimeError), gateway.unit_of_work() as session:
        register_organisation(session=session, outbox=gateway.outbox, data=HOSPITAL)
        raise RuntimeError("the request failed after the write")

    assert count(gateway, Organisation) == 0
    assert count(gateway, gateway_messaging.outbox) == 0
    assert recording.sent == []

    # The next, successful registration is relayed at once, to every subscriber (the
    # gateway itself hears it for webhooks).
    with gateway.unit_of_work() as session:
        org = register_organisation(session=session, outbox=gateway.outbox, data=HOSPITAL)
    assert sorted(service for service, _ in recording.sent) == [
        "community",
        "dispatch",
        "donations",
        "gateway",
    ]
    assert (
        count(gateway, gateway_messaging.outbox, gateway_messaging.outbox.published_at.is_not(None))
        == 1
    )
    assert {event_id for _, event_id in recording.sent} == {str(r) for r in _outbox_ids(gateway)}
    assert org.id is not None


def _outbox_ids(rt: ServiceRuntime) -> list[uuid.UUID]:
    with rt.session_factory() as session:
        return list(session.scalars(select(gateway_messaging.outbox.id)))


def test_relay_dies_before_publishing_and_the_sweep_delivers_once(stack: Stack) -> None:
    gateway = stack.runtime("gateway")
    donations = stack.runtime("donations")
    real_publisher = gateway.outbox.publisher
    refusing = Refusing()
    gateway.outbox.publisher = refusing

    org_id = register(stack.client(), **HOSPITAL).org_id
    assert refusing.calls == 1
    assert (
        count(gateway, gateway_messaging.outbox, gateway_messaging.outbox.published_at.is_(None))
        == 1
    )

    # The broker is back; beat's periodic sweep runs on the gateway's real worker.
    gateway.outbox.publisher = real_publisher
    stack.start_worker("gateway")
    stack.start_worker("donations")
    gateway.celery.send_task("gateway.sweep_outbox", queue="gateway")
    eventually(lambda: read_model_org(donations, org_id))
    # Stamped once sent to every subscriber: donations may apply it before the sweep
    # has sent it to the others and stamped it.
    eventually(
        lambda: (
            count(
                gateway, gateway_messaging.outbox, gateway_messaging.outbox.published_at.is_(None)
            )
            == 0
        )
    )

    # A second sweep finds nothing left to send.
    assert gateway.outbox.sweep() == 0
    assert count(donations, donations_messaging.inbox) == 1


def test_event_published_but_not_stamped_is_sent_again_and_applied_once(stack: Stack) -> None:
    gateway = stack.runtime("gateway")
    donations = stack.runtime("donations")
    # The relay sends, then dies before it can stamp the row as published.
    stamp = gateway.outbox._stamp
    gateway.outbox._stamp = lambda sent, failed: None  # type: ignore[method-assign]
    org_id = register(stack.client(), **HOSPITAL).org_id
    gateway.outbox._stamp = stamp  # type: ignore[method-assign]

    assert gateway.outbox.sweep() == 1  # the same event goes out a second time
    stack.start_worker("donations")
    event_id = _outbox_ids(gateway)[0]
    eventually(
        lambda: (
            count(
                donations,
                donations_messaging.deliveries,
                donations_messaging.deliveries.event_id == str(event_id),
            )
            == 1
            and _attempts(donations, event_id) == 2
        )
    )
    assert read_model_org(donations, org_id).name == HOSPITAL["name"]
    assert count(donations, donations_messaging.inbox) == 1


def _attempts(rt: ServiceRuntime, event_id: uuid.UUID) -> int:
    with rt.session_factory() as session:
        row = session.get(donations_messaging.deliveries, str(event_id))
        return row.attempts if row else 0


def _org_event(org_id: uuid.UUID, name: str, version: int) -> dict[str, Any]:
    return new_event(
        "org.registered",
        {"id": org_id, "name": name, "kind": "hospital", "region": "420103"},
        producer="gateway",
        aggregate_id=org_id,
        aggregate_version=version,
    ).to_message()


def test_same_event_twice_changes_the_read_model_once(stack: Stack) -> None:
    donations = stack.runtime("donations")
    org_id = uuid.uuid4()
    message = _org_event(org_id, "Jinyintan Hospital", 1)

    assert donations.inbox.handle(message) is Outcome.APPLIED
    assert donations.inbox.handle(message) is Outcome.DUPLICATE
    assert count(donations, donations_messaging.inbox) == 1
    assert read_model_org(donations, org_id).name == "Jinyintan Hospital"

    # The same again through the broker and a real worker.
    stack.start_worker("donations")
    for _ in range(2):
        donations.celery.send_task("donations.handle_event", args=[message], queue="donations")
    eventually(lambda: _attempts(donations, uuid.UUID(message["id"])) >= 1)
    later = _org_event(uuid.uuid4(), "Marker", 1)
    donations.celery.send_task("donations.handle_event", args=[later], queue="donations")
    eventually(lambda: read_model_org(donations, later["payload"]["id"]))
    assert count(donations, donations_messaging.inbox) == 2
    assert count(donations, donations_messaging.dead_letters) == 0


def test_older_version_after_newer_is_recorded_and_ignored(stack: Stack) -> None:
    donations = stack.runtime("donations")
    org_id = uuid.uuid4()
    newer = _org_event(org_id, "Wuhan Red Cross Hospital (renamed)", 2)
    older = _org_event(org_id, "Wuhan Red Cross Hospital", 1)

    assert donations.inbox.handle(newer) is Outcome.APPLIED
    assert donations.inbox.handle(older) is Outcome.STALE

    org = read_model_org(donations, org_id)
    assert org.name == "Wuhan Red Cross Hospital (renamed)"
    assert org.source_version == 2
    with donations.session_factory() as session:
        outcomes = dict(
            session.execute(
                select(
                    donations_messaging.inbox.aggregate_version, donations_messaging.inbox.outcome
                )
            ).all()
        )
    assert outcomes == {2: "applied", 1: "stale"}


def test_invalid_event_is_dead_lettered_and_the_queue_moves_on(stack: Stack) -> None:
    donations = stack.runtime("donations")
    bad = _org_event(uuid.uuid4(), "Bad Payload Hospital", 1)
    bad["payload"]["kind"] = "spaceport"
    del bad["payload"]["region"]
    good = _org_event(uuid.uuid4(), "Good Hospital", 1)

    stack.start_worker("donations")
    donations.celery.send_task("donations.handle_event", args=[bad], queue="donations")
    donations.celery.send_task("donations.handle_event", args=["not an event"], queue="donations")
    donations.celery.send_task("donations.handle_event", args=[good], queue="donations")

    eventually(lambda: read_model_org(donations, good["payload"]["id"]))
    eventually(lambda: count(donations, donations_messaging.dead_letters) == 2)
    with donations.session_factory() as session:
        letter = session.scalars(
            select(donations_messaging.dead_letters).where(
                donations_messaging.dead_letters.event_id == bad["id"]
            )
        ).one()
    assert letter.reason == "invalid"
    assert set(letter.errors) == {"payload.kind", "payload.region"}
    assert read_model_org(donations, bad["payload"]["id"]) is None
    assert count(donations, donations_messaging.inbox) == 1


def test_event_redelivered_past_the_cap_is_dead_lettered(stack: Stack) -> None:
    donations = stack.runtime("donations")
    message = _org_event(uuid.uuid4(), "Crashing Hospital", 1)
    # Each earlier delivery died before it could record its effect.
    for _ in range(stack.settings.max_deliveries):
        donations.inbox._count_delivery(uuid.UUID(message["id"]))

    assert donations.inbox.handle(message) is Outcome.DEAD_LETTERED
    assert read_model_org(donations, message["payload"]["id"]) is None
    assert (
        count(
            donations,
            donations_messaging.dead_letters,
            donations_messaging.dead_letters.reason == "redelivery_cap",
        )
        == 1
    )


def test_org_registered_through_the_gateway_reaches_both_read_models(stack: Stack) -> None:
    stack.start_worker("donations")
    stack.start_worker("dispatch")
    client = stack.client()

    hospital = register(client, **HOSPITAL)
    org = hospital.org
    assert org["name"] == HOSPITAL["name"]
    assert org["status"] == "pending"

    def arrived(service: str) -> Any:
        answer = client.get(f"/api/v1/{service}/orgs/{org['id']}", headers=hospital.headers)
        return answer.json if answer.status_code == 200 else None

    for service in ("donations", "dispatch"):
        seen = eventually(partial(arrived, service))
        assert seen["name"] == HOSPITAL["name"]
        assert seen["kind"] == "hospital"
        assert seen["region"] == "420103"
        assert seen["source_version"] == 1


def test_events_in_savepoints_wait_for_the_commit_and_die_with_their_savepoint(
    stack: Stack,
) -> None:
    rt = stack.runtime("dispatch")
    seen: list[tuple[str, bool]] = []
    outbox_rows = rt.models.outbox if rt.models is not None else None
    assert outbox_rows is not None

    def publisher(service: str, message: dict[str, Any]) -> None:
        # Is the event's row committed (visible to another connection) when it is sent?
        with rt.session_factory() as other:
            seen.append(
                (message["id"], other.get(outbox_rows, uuid.UUID(message["id"])) is not None)
            )

    rt.outbox.publisher = publisher

    def event() -> Any:
        return new_event(
            "need.updated",
            {
                "id": uuid.uuid4(),
                "org_id": uuid.uuid4(),
                "status": "open",
                "location": {"region": "420103"},
                "expires_at": datetime(2020, 3, 1, tzinfo=UTC),
                "lines": [],
            },
            producer="dispatch",
            aggregate_id=uuid.uuid4(),
            aggregate_version=1,
        )

    kept, undone, released, flushed = event(), event(), event(), event()
    with rt.unit_of_work() as session:
        rt.outbox.add(session, kept)
        session.flush()
        with pytest.raises(RuntimeError), session.begin_nested():
            rt.outbox.add(session, undone)
            raise RuntimeError("this row fails")
        with session.begin_nested():
            rt.outbox.add(session, released)
        # A savepoint whose flush fails (here on a row written twice) is rolled back by
        # the flush, with no rollback event of its own: its events die with it too.
        with pytest.raises(IntegrityError), session.begin_nested():
            rt.outbox.add(session, flushed)
            rt.outbox.add(session, kept)
            session.flush()
        # Released savepoints publish nothing yet.
        assert seen == []
    sent = [event_id for event_id, _committed in seen]
    assert sent == [str(kept.id), str(released.id)]
    assert all(committed for _id, committed in seen)
    with rt.session_factory() as session:
        stored = set(session.scalars(select(outbox_rows.id)))
        unpublished = set(
            session.scalars(select(outbox_rows.id).where(outbox_rows.published_at.is_(None)))
        )
    assert uuid.UUID(str(undone.id)) not in stored
    assert uuid.UUID(str(flushed.id)) not in stored
    assert unpublished == set()


def test_waiting_for_a_predecessor_does_not_count_toward_the_redelivery_cap(
    stack: Stack,
) -> None:
    """org.verified before its org.registered waits (and is retried by the worker);
    however often it waits, it is not set aside as a poison message."""
    from shared.inbox import OutOfOrder

    donations = stack.runtime("donations")
    org_id = uuid.uuid4()
    verified_msg = new_event(
        "org.verified",
        {"id": org_id, "verified_at": datetime(2020, 1, 30, tzinfo=UTC)},
        producer="gateway",
        aggregate_id=org_id,
        aggregate_version=2,
    ).to_message()
    for _ in range(donations.settings.max_deliveries + 2):
        with pytest.raises(OutOfOrder):
            donations.inbox.handle(verified_msg)
    assert _attempts(donations, uuid.UUID(verified_msg["id"])) == 0
    assert count(donations, donations_messaging.dead_letters) == 0

    assert donations.inbox.handle(_org_event(org_id, "Leishenshan Hospital", 1)) is Outcome.APPLIED
    assert donations.inbox.handle(verified_msg) is Outcome.APPLIED
    assert read_model_org(donations, org_id).status == "verified"


# Several events of one commit travel and take effect together --------------------------------


def _verified_event(org_id: uuid.UUID) -> dict[str, Any]:
    return new_event(
        "org.verified",
        {"id": org_id, "verified_at": datetime(2020, 1, 30, tzinfo=UTC)},
        producer="gateway",
        aggregate_id=org_id,
        aggregate_version=2,
    ).to_message()


class Batching:
    """A publisher that records what it sends, one event or several at once."""

    def __init__(self) -> None:
        self.single: list[tuple[str, str]] = []
        self.batches: list[tuple[str, list[str]]] = []

    def __call__(self, service: str, message: dict[str, Any]) -> None:
        self.single.append((service, message["id"]))

    def many(self, service: str, messages: list[dict[str, Any]]) -> None:
        self.batches.append((service, [m["id"] for m in messages]))


def test_events_of_one_commit_reach_each_subscriber_in_batches_in_their_order(
    stack: Stack,
) -> None:
    gateway = stack.runtime("gateway")
    batching = Batching()
    gateway.outbox.publisher = batching
    gateway.outbox.message_max = 2
    events = [
        new_event(
            "org.registered",
            {"id": org_id, "name": f"Hospital {n}", "kind": "hospital", "region": "420103"},
            producer="gateway",
            aggregate_id=org_id,
            aggregate_version=1,
        )
        for n, org_id in enumerate(uuid.uuid4() for _ in range(3))
    ]
    with gateway.unit_of_work() as session:
        for evt in events:
            gateway.outbox.add(session, evt)

    ids = [str(evt.id) for evt in events]
    # Each subscriber is sent the three events as a batch of two and one event.
    assert sorted(batching.batches) == sorted(
        (service, ids[:2]) for service in ("community", "dispatch", "donations", "gateway")
    )
    assert sorted(batching.single) == sorted(
        (service, ids[2]) for service in ("community", "dispatch", "donations", "gateway")
    )
    assert (
        count(gateway, gateway_messaging.outbox, gateway_messaging.outbox.published_at.is_(None))
        == 0
    )


def _org_registered(org_id: uuid.UUID) -> Any:
    return new_event(
        "org.registered",
        {"id": org_id, "name": "Hospital", "kind": "hospital", "region": "420103"},
        producer="gateway",
        aggregate_id=org_id,
        aggregate_version=1,
    )


def test_a_commit_of_more_events_than_an_in_list_holds_is_stamped_whole(stack: Stack) -> None:
    """The stamp of a large commit's events (a matching run's slice) is one array on
    PostgreSQL and IN lists under the parameter limit elsewhere: every row once."""
    from shared.db import IN_CHUNK

    gateway = stack.runtime("gateway")
    gateway.outbox.publisher = Batching()
    rows = gateway_messaging.outbox
    n = 2 * IN_CHUNK + 7
    with gateway.unit_of_work() as session:
        for _ in range(n):
            gateway.outbox.add(session, _org_registered(uuid.uuid4()))
    assert count(gateway, rows, rows.published_at.is_(None)) == 0
    assert count(gateway, rows, rows.publish_attempts == 1) == n
    # Refused, each row's attempts grow by one and none is stamped.
    with gateway.session_factory() as session:
        ids = list(session.scalars(select(rows.id)))
    gateway.outbox._stamp([], ids)
    assert count(gateway, rows, rows.publish_attempts == 2) == n
    assert count(gateway, rows, rows.published_at.is_(None)) == 0


def test_a_refused_batch_leaves_its_events_and_those_after_it_to_the_sweep(stack: Stack) -> None:
    gateway = stack.runtime("gateway")

    class RefusesDonations(Batching):
        def many(self, service: str, messages: list[dict[str, Any]]) -> None:
            if service == "donations":
                raise ConnectionError("broker unreachable")
            super().many(service, messages)

    gateway.outbox.publisher = RefusesDonations()
    with gateway.unit_of_work() as session:
        for _ in range(2):
            gateway.outbox.add(session, _org_registered(uuid.uuid4()))
    # Not every subscriber has them: both stay for the sweep, which sends them all
    # again (a subscriber that got them recognises the copies).
    assert (
        count(gateway, gateway_messaging.outbox, gateway_messaging.outbox.published_at.is_(None))
        == 2
    )
    sweeping = Batching()
    gateway.outbox.publisher = sweeping
    assert gateway.outbox.sweep(now=datetime(2100, 1, 1, tzinfo=UTC)) == 2
    services = sorted(service for service, _ in sweeping.batches)
    assert services == ["community", "dispatch", "donations", "gateway"]


def test_a_batch_takes_effect_once_and_sets_aside_only_the_event_that_fails(
    stack: Stack,
) -> None:
    donations = stack.runtime("donations")
    first, crashing, second, unknown = (uuid.uuid4() for _ in range(4))
    register = donations.inbox.handlers["org.registered"]

    def crashes_on_one(session: Any, evt: Any) -> None:
        if evt.data()["id"] == crashing:
            session.add(donations_messaging.dead_letters(reason="x", detail="half-written"))
            raise ValueError("handler bug")
        register(session, evt)

    donations.inbox.handlers["org.registered"] = crashes_on_one
    batch = [
        _org_event(first, "Huoshenshan Hospital", 1),
        _org_event(crashing, "Crashing Hospital", 1),
        _verified_event(unknown),  # its org.registered has not arrived
        _org_event(second, "Leishenshan Hospital", 1),
    ]

    handled, again = donations.inbox.handle_many(batch)

    outcomes = {message["id"]: outcome for message, outcome in handled}
    assert outcomes == {
        batch[0]["id"]: Outcome.APPLIED,
        batch[1]["id"]: Outcome.DEAD_LETTERED,
        batch[3]["id"]: Outcome.APPLIED,
    }
    assert again == [batch[2]]
    assert read_model_org(donations, first).name == "Huoshenshan Hospital"
    assert read_model_org(donations, second).name == "Leishenshan Hospital"
    assert read_model_org(donations, crashing) is None
    # The failing event's own writes were undone with its savepoint; its dead letter
    # says why. Waiting for a predecessor did not count as a delivery.
    with donations.session_factory() as session:
        letters = session.scalars(select(donations_messaging.dead_letters)).all()
    assert [(letter.event_id, letter.reason) for letter in letters] == [
        (batch[1]["id"], "handler_failed")
    ]
    assert "handler bug" in letters[0].detail
    assert _attempts(donations, uuid.UUID(batch[2]["id"])) == 0
    assert count(donations, donations_messaging.inbox) == 2

    # The same batch delivered again changes nothing that took effect.
    donations.inbox.handlers["org.registered"] = register
    handled, again = donations.inbox.handle_many(batch)
    outcomes = {message["id"]: outcome for message, outcome in handled}
    assert outcomes[batch[0]["id"]] is Outcome.DUPLICATE
    assert outcomes[batch[3]["id"]] is Outcome.DUPLICATE
    assert outcomes[batch[1]["id"]] is Outcome.APPLIED  # the bug is fixed
    assert again == [batch[2]]
    assert count(donations, donations_messaging.inbox) == 3


def test_a_batch_through_a_real_worker_applies_an_event_that_came_before_its_predecessor(
    stack: Stack,
) -> None:
    donations = stack.runtime("donations")
    stack.start_worker("donations")
    org_id, other = uuid.uuid4(), uuid.uuid4()
    batch = [
        _verified_event(org_id),  # ahead of its org.registered, in the same batch
        _org_event(org_id, "Wuhan Union Hospital", 1),
        _org_event(other, "Wuhan Tongji Hospital", 1),
    ]
    donations.celery.send_task("donations.handle_events", args=[batch], queue="donations")

    eventually(lambda: read_model_org(donations, other))
    org = eventually(
        lambda: (
            found
            if (found := read_model_org(donations, org_id)) and found.status == "verified"
            else None
        )
    )
    assert org.name == "Wuhan Union Hospital"
    assert count(donations, donations_messaging.inbox) == 3
    assert count(donations, donations_messaging.dead_letters) == 0


def test_events_published_just_before_the_broker_restarted_are_sent_again_once(
    stack: Stack,
) -> None:
    """Kombu's Redis transport can lose a message taken off its queue in the instant
    Redis shuts down; the sweep after a restart sends recent events again."""
    from datetime import timedelta

    from sqlalchemy import update

    from shared.db import utcnow

    gateway = stack.runtime("gateway")
    sending = Batching()
    gateway.outbox.publisher = sending
    rows = gateway_messaging.outbox
    ids = []
    for _ in range(3):
        with gateway.unit_of_work() as session:
            org_id = uuid.uuid4()
            evt = new_event(
                "org.registered",
                {"id": org_id, "name": "Hospital", "kind": "hospital", "region": "420103"},
                producer="gateway",
                aggregate_id=org_id,
                aggregate_version=1,
            )
            gateway.outbox.add(session, evt)
            ids.append(evt.id)
    now = utcnow()
    # The first was published long before the restart, the others moments before it.
    with gateway.session_factory() as session, session.begin():
        session.execute(
            update(rows).where(rows.id == ids[0]).values(published_at=now - timedelta(hours=1))
        )

    resent = Batching()
    gateway.outbox.publisher = resent
    gateway.outbox.broker_started = lambda: now + timedelta(seconds=1)
    assert gateway.outbox.sweep() == 2
    assert sorted(resent.batches) == sorted(
        (service, [str(ids[1]), str(ids[2])])
        for service in ("community", "dispatch", "donations", "gateway")
    )
    # The same restart read again (a second later) sends nothing more.
    gateway.outbox.broker_started = lambda: now + timedelta(seconds=2)
    assert gateway.outbox.sweep() == 0
    # A restart long ago, seen by a process that started since, is left alone.
    fresh = stack.runtime("gateway").outbox
    fresh._rewound_for = None
    fresh.broker_started = lambda: now - timedelta(hours=2)
    assert fresh.sweep() == 0
    assert count(gateway, rows, rows.published_at.is_(None)) == 0


class Held:
    """A publisher whose broker answers only once ``release`` is set."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.sent: list[tuple[str, str]] = []
        self.threads: set[str] = set()

    def __call__(self, service: str, message: dict[str, Any]) -> None:
        self.many(service, [message])

    def many(self, service: str, messages: list[dict[str, Any]]) -> None:
        assert self.release.wait(30)
        self.threads.add(threading.current_thread().name)
        self.sent.extend((service, m["id"]) for m in messages)
        self.inner.many(service, messages)


def test_the_background_relay_answers_before_the_broker_and_publishes_every_commit(
    stack: Stack,
) -> None:
    gateway = stack.runtime("gateway")
    outbox = gateway.outbox
    held = Held(outbox.publisher)
    outbox.publisher = held
    outbox.relay_in_background()

    # The broker hangs, yet each commit returns at once: nothing waits on it.
    for i in range(3):
        with gateway.unit_of_work() as session:
            register_organisation(
                session=session, outbox=outbox, data={**HOSPITAL, "name": f"Ward {i} Hospital"}
            )
    unpublished = gateway_messaging.outbox.published_at.is_(None)
    assert held.sent == []
    assert count(gateway, gateway_messaging.outbox, unpublished) == 3
    assert not outbox.flush(timeout=0.2)

    held.release.set()
    assert outbox.flush(timeout=30)
    assert held.threads == {"outbox-relay"}
    with gateway.session_factory() as session:
        written = [
            str(event_id)
            for event_id in session.scalars(
                select(gateway_messaging.outbox.id).order_by(gateway_messaging.outbox.created_at)
            )
        ]
    assert len(written) == 3
    for service in ("community", "dispatch", "donations", "gateway"):
        # Every event to each subscriber, in the order of the commits.
        assert [e for s, e in held.sent if s == service] == written
    assert count(gateway, gateway_messaging.outbox, unpublished) == 0
    # And the events reach the consumers.
    stack.start_worker("donations")
    eventually(lambda: count(stack.runtime("donations"), DonationsOrganisation) == 3)


def test_work_of_many_commits_relays_alongside_and_ends_once_all_is_relayed(
    stack: Stack,
) -> None:
    """A matching run's slices: each commit's events go to a relay thread while the
    work goes on to its next commit; leaving the block waits until every event is
    published and stamped, then the thread ends and commits relay inline again."""
    gateway = stack.runtime("gateway")
    outbox = gateway.outbox
    held = Held(outbox.publisher)
    outbox.publisher = held
    unpublished = gateway_messaging.outbox.published_at.is_(None)
    release = threading.Timer(0.5, held.release.set)
    with outbox.relaying_alongside():
        # Nested (two pieces of such work in one process) share the one thread.
        with outbox.relaying_alongside():
            for i in range(3):
                with gateway.unit_of_work() as session:
                    register_organisation(
                        session=session,
                        outbox=outbox,
                        data={**HOSPITAL, "name": f"Ward {i} Hospital"},
                    )
            # The broker hangs, yet every commit returned: the thread waits on it.
            assert held.sent == []
            assert count(gateway, gateway_messaging.outbox, unpublished) == 3
            relay = outbox._background
            assert relay is not None and relay.thread is not None and relay.thread.is_alive()
            release.start()
        assert outbox._background is not None  # the outer work is still going
    # Out of the block only once all of it was relayed, by the thread.
    assert count(gateway, gateway_messaging.outbox, unpublished) == 0
    assert held.threads == {"outbox-relay"}
    assert outbox._background is None
    relay.thread.join(10)
    assert not relay.thread.is_alive()
    # Commits relay inline again.
    with gateway.unit_of_work() as session:
        register_organisation(
            session=session, outbox=outbox, data={**HOSPITAL, "name": "Ward 9 Hospital"}
        )
    assert count(gateway, gateway_messaging.outbox, unpublished) == 0
    assert held.threads == {"outbox-relay", threading.current_thread().name}


def test_relaying_alongside_is_undone_even_when_its_wait_is_interrupted(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A time limit or a signal during the final wait still takes the relay thread out:
    the process does not go on relaying from a thread it never asked for."""
    gateway = stack.runtime("gateway")
    outbox = gateway.outbox

    def interrupted(timeout: float = 5.0) -> bool:
        raise TimeoutError("the task's soft time limit")

    with pytest.raises(TimeoutError), outbox.relaying_alongside():
        with gateway.unit_of_work() as session:
            outbox.add(session, _org_registered(uuid.uuid4()))
        relay = outbox._background
        monkeypatch.setattr(outbox, "flush", interrupted)
    assert outbox._background is None and outbox._alongside == 0
    assert relay is not None and relay.thread is not None
    relay.thread.join(10)
    assert not relay.thread.is_alive()


def test_a_process_already_relaying_from_a_thread_keeps_its_thread(stack: Stack) -> None:
    gateway = stack.runtime("gateway")
    outbox = gateway.outbox
    outbox.relay_in_background()
    relay = outbox._background
    with outbox.relaying_alongside():
        assert outbox._background is relay
    assert outbox._background is relay


def test_the_background_relay_leaves_what_the_broker_refused_to_the_sweep(stack: Stack) -> None:
    gateway = stack.runtime("gateway")
    refusing = Refusing()
    gateway.outbox.publisher = refusing
    gateway.outbox.relay_in_background()
    with gateway.unit_of_work() as session:
        register_organisation(session=session, outbox=gateway.outbox, data=HOSPITAL)
    assert gateway.outbox.flush(timeout=30)
    assert refusing.calls >= 1
    rows = gateway_messaging.outbox
    assert count(gateway, rows, rows.published_at.is_(None)) == 1
    assert gateway.outbox.backlog() == 1


def test_a_batch_handler_takes_a_types_run_of_events_at_once_and_skips_the_stale(
    stack: Stack,
) -> None:
    donations = stack.runtime("donations")
    register = donations.inbox.handlers["org.registered"]
    calls: list[list[str]] = []

    def together(session: Any, events: list[Any]) -> None:
        calls.append([str(e.id) for e in events])
        for evt in events:
            register(session, evt)

    donations.inbox.batch_handlers["org.registered"] = together
    one, two = uuid.uuid4(), uuid.uuid4()
    older = _org_event(one, "Wuhan Union Hospital", 1)
    batch = [
        _org_event(one, "Wuhan Union Hospital (west)", 2),
        older,  # older than the event before it: stale
        _org_event(two, "Tongji Hospital", 1),
        _verified_event(two),  # another type: on its own
    ]

    handled, again = donations.inbox.handle_many(batch)

    assert again == []
    assert calls == [[batch[0]["id"], batch[2]["id"]]]
    assert {message["id"]: outcome for message, outcome in handled} == {
        batch[0]["id"]: Outcome.APPLIED,
        batch[1]["id"]: Outcome.STALE,
        batch[2]["id"]: Outcome.APPLIED,
        batch[3]["id"]: Outcome.APPLIED,
    }
    assert read_model_org(donations, one).name == "Wuhan Union Hospital (west)"
    assert read_model_org(donations, two).status == "verified"
    assert count(donations, donations_messaging.inbox) == 4
    # Delivered again: each a duplicate, the handler not called.
    handled, _ = donations.inbox.handle_many(batch)
    assert {outcome for _, outcome in handled} == {Outcome.DUPLICATE}
    assert len(calls) == 1


def test_a_batch_handler_that_fails_leaves_its_events_to_the_one_event_handler(
    stack: Stack,
) -> None:
    donations = stack.runtime("donations")

    def half_written_then_fails(session: Any, events: list[Any]) -> None:
        session.add(donations_messaging.dead_letters(reason="x", detail="half-written"))
        raise ValueError("batch handler bug")

    donations.inbox.batch_handlers["org.registered"] = half_written_then_fails
    orgs = [uuid.uuid4() for _ in range(3)]
    batch = [_org_event(org, f"Fangcang Shelter {i}", 1) for i, org in enumerate(orgs)]

    handled, again = donations.inbox.handle_many(batch)

    assert again == []
    assert [outcome for _, outcome in handled] == [Outcome.APPLIED] * 3
    assert [read_model_org(donations, org).name for org in orgs] == [
        f"Fangcang Shelter {i}" for i in range(3)
    ]
    # Nothing of the failed attempt was kept.
    assert count(donations, donations_messaging.dead_letters) == 0
    assert count(donations, donations_messaging.inbox) == 3


@pytest.mark.backend
def test_each_service_keeps_as_many_connections_as_it_is_told(settings: Settings) -> None:
    """AIDLINK_DB_POOL_SIZE reaches every service's engine: a web server's threads
    (8 in the Procfile) past the pool would each open and close a connection."""
    with build_stack(settings.with_overrides(db_pool_size=9)) as stack:
        for service in ("donations", "dispatch", "community", "gateway"):
            pool = stack.runtime(service).engine.pool
            assert pool.size() == 9, service  # type: ignore[attr-defined]


def test_first_heard_records_each_aggregate_once_and_leaves_out_those_heard_of_before(
    stack: Stack,
) -> None:
    """An event carrying the first event of many aggregates (``allocation.proposed``
    version 2): version 1 of each aggregate not heard of is recorded, in one statement
    per chunk; one with a version already recorded (a cancellation came first) is left
    out, and nothing is recorded twice. More aggregates than a chunk holds."""
    rt = stack.runtime("donations")
    inbox = rt.inbox
    versions = donations_messaging.versions
    overtaken = str(uuid.uuid4())
    with rt.unit_of_work() as session:
        session.add(versions(aggregate_id=overtaken, last_version=2))
    keys = [str(uuid.uuid4()) for _ in range(1200)]
    given = [keys[0], overtaken, *keys[1:]]
    with rt.unit_of_work() as session:
        assert inbox.first_heard(session, given) == keys
    with rt.unit_of_work() as session:
        assert inbox.first_heard(session, [keys[5], str(uuid.uuid4())])[0] != keys[5]
        recorded: dict[str, int] = {
            key: version
            for key, version in session.execute(
                select(versions.aggregate_id, versions.last_version)
            )
        }
    assert recorded[overtaken] == 2
    assert all(recorded[key] == 1 for key in keys)
    # A consumer that wants every event (not ordered) hears them all, records nothing.
    unordered = rt.inbox
    unordered.ordered = False
    try:
        with rt.unit_of_work() as session:
            assert unordered.first_heard(session, [overtaken, keys[0]]) == [overtaken, keys[0]]
    finally:
        unordered.ordered = True
