"""The catch-up (shared/catchup.py): an event the broker took and lost after it was
published still reaches its subscriber and takes effect once; a copy sent again of an
event already applied changes nothing; an event written before another but committed
after it is not skipped; an operator sees each producer's lag at each subscriber."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from services.cli import main
from services.gateway.models import messaging as gateway_messaging
from services.gateway.orgs.service import register_organisation
from services.invariants import check
from shared.catchup import Behind
from shared.config import SERVICES, Settings
from shared.events import new_event
from shared.runtime import ServiceRuntime
from tests.support.faults import deliveries_of
from tests.support.orgs import HOSPITAL, read_model_org
from tests.support.stack import Stack, build_stack, eventually

# Rounds every 0.3 s, each asking about events published at least 0.3 s before; an
# unanswered question is asked again after 0.6 s (so on a slow machine an event may
# be sent again twice: the inbox takes it in once all the same).
BOUND = 3.0


@pytest.fixture
def quick_stack(settings: Settings) -> Iterator[Stack]:
    with build_stack(settings.with_overrides(event_delivery_bound=BOUND)) as stack:
        for service in SERVICES:
            stack.start_worker(service)
        yield stack


class Losing:
    """A broker that takes the messages for one subscriber and loses them: the send
    succeeds, nothing arrives (a Redis list popped as the connection is cut, a
    flushed or failed-over Redis, a deleted broker file)."""

    def __init__(self, inner: Any, victim: str) -> None:
        self.inner = inner
        self.victim = victim
        self.lost: list[str] = []

    def __call__(self, service: str, message: dict[str, Any]) -> None:
        if service == self.victim:
            self.lost.append(message["id"])
            return
        self.inner(service, message)

    def many(self, service: str, messages: list[dict[str, Any]]) -> None:
        if service == self.victim:
            self.lost.extend(message["id"] for message in messages)
            return
        self.inner.many(service, messages)


def _register(gateway: ServiceRuntime, name: str) -> uuid.UUID:
    with gateway.unit_of_work() as session:
        org = register_organisation(
            session=session, outbox=gateway.outbox, data={**HOSPITAL, "name": name}
        )
    return org.id


def _catching_up(gateway: ServiceRuntime, done: Any) -> Any:
    """Run the gateway's rounds, as beat would, until ``done``."""

    def round_then_check() -> Any:
        assert gateway.catch_up is not None
        gateway.catch_up.ask()
        return done()

    return eventually(round_then_check, timeout=60, interval=0.1)


def _standing(rt: ServiceRuntime, subscriber: str) -> Behind:
    assert rt.catch_up is not None
    return next(b for b in rt.catch_up.behind() if b.subscriber == subscriber)


def _outcomes(rt: ServiceRuntime, event_or_aggregate: Any) -> list[str]:
    """The inbox's outcomes for an event (by its id, or its aggregate's)."""
    assert rt.models is not None
    inbox = rt.models.inbox
    key = str(event_or_aggregate)
    with rt.session_factory() as session:
        return list(
            session.scalars(
                select(inbox.outcome).where(
                    (inbox.aggregate_id == key) | (inbox.event_id == uuid.UUID(key))
                )
            )
        )


def _awaiting(gateway: ServiceRuntime, event_id: Any) -> str | None:
    outbox = gateway_messaging.outbox
    with gateway.session_factory() as session:
        value: str | None = session.scalar(
            select(outbox.awaiting).where(outbox.id == uuid.UUID(str(event_id)))
        )
        return value


def test_an_event_the_broker_lost_reaches_its_subscriber_once(quick_stack: Stack) -> None:
    stack = quick_stack
    gateway = stack.runtime("gateway")
    donations = stack.runtime("donations")
    dispatch = stack.runtime("dispatch")
    losing = Losing(gateway.outbox.publisher, "donations")
    gateway.outbox.publisher = losing

    org_id = _register(gateway, "Wuhan Union Hospital")
    [event_id] = losing.lost
    # Published as far as the outbox can tell, and taken in by dispatch...
    assert gateway.outbox.backlog() == 0
    eventually(lambda: read_model_org(dispatch, org_id))
    assert _awaiting(gateway, event_id) is not None
    # ...but the sweep has nothing to send, and donations never hears of it.
    assert gateway.outbox.sweep() == 0
    assert read_model_org(donations, org_id) is None

    # Rounds as beat runs them: donations says it lacks the event, the gateway's worker
    # sends it again, and the next round finds it confirmed everywhere.
    _catching_up(gateway, lambda: read_model_org(donations, org_id))
    _catching_up(gateway, lambda: _awaiting(gateway, event_id) is None)
    assert _outcomes(donations, event_id) == ["applied"]
    standing = _standing(gateway, "donations")
    assert standing.resent >= 1 and standing.unconfirmed == 0
    assert _standing(gateway, "dispatch").resent == 0
    assert donations.catch_up is not None and dispatch.catch_up is not None
    assert donations.catch_up.recovered()["gateway"][0] == 1
    assert dispatch.catch_up.recovered() == {}

    # The operator's view: the command line, check-invariants and the metrics.
    status = CliRunner().invoke(main, ["events", "status", "--json"], env=stack.settings.to_env())
    assert status.exit_code == 0, status.output
    pairs = {
        (pair["producer"], pair["subscriber"]): pair
        for pair in json.loads(status.stdout)["delivery"]
    }
    to_donations = pairs[("gateway", "donations")]
    assert (to_donations["recovered"], to_donations["resent"]) == (1, standing.resent)
    assert to_donations["behind"] == 0
    assert to_donations["last_sent"]["type"] == "org.registered"
    assert to_donations["last_applied"]["type"] == "org.registered"
    assert (
        pairs[("gateway", "dispatch")]["recovered"],
        pairs[("gateway", "dispatch")]["resent"],
    ) == (0, 0)
    text = CliRunner().invoke(main, ["events", "status"], env=stack.settings.to_env())
    assert "gateway -> donations" in text.output
    assert "recovered     1 event(s) the broker had lost" in text.output

    report = check(stack.settings, settle=10)
    assert report.violations == [], [v.as_dict() for v in report.violations]
    assert {(d.producer, d.subscriber, d.recovered) for d in report.delivery} >= {
        ("gateway", "donations", 1)
    }
    line = CliRunner().invoke(
        main, ["check-invariants", "--settle", "5"], env=stack.settings.to_env()
    )
    assert "recovered by catch-up: gateway->donations 1" in line.output, line.output

    resent = 'aidlink_events_resent_total{producer="gateway",subscriber="donations"}'
    assert f"{resent} {float(standing.resent)}" in (
        stack.client("gateway").get("/metrics").get_data(as_text=True)
    )
    metrics = stack.client("donations").get("/metrics").get_data(as_text=True)
    assert 'aidlink_events_recovered_total{producer="gateway",subscriber="donations"} 1.0' in (
        metrics
    )
    gateway_metrics = stack.client("gateway").get("/metrics").get_data(as_text=True)
    assert 'aidlink_events_unconfirmed{producer="gateway",subscriber="donations"} 0.0' in (
        gateway_metrics
    )

    # An answer that wrongly says donations lacks it (one sent while the event was
    # still on its way, say): the copy is recognised and changes nothing.
    assert gateway.catch_up is not None
    sent_before = deliveries_of(stack, "donations")[event_id]
    gateway.outbox.publisher = losing.inner
    assert gateway.catch_up.on_answer("donations", [], [event_id]) == 0  # confirmed already
    with gateway.unit_of_work() as session:
        session.execute(
            update(gateway_messaging.outbox)
            .where(gateway_messaging.outbox.id == uuid.UUID(event_id))
            .values(awaiting=",donations,")
        )
    assert gateway.catch_up.on_answer("donations", [], [event_id]) == 1
    eventually(lambda: deliveries_of(stack, "donations")[event_id] == sent_before + 1)
    assert _outcomes(donations, event_id) == ["applied"]
    assert read_model_org(donations, org_id).name == "Wuhan Union Hospital"


def test_an_event_written_first_and_committed_last_is_not_skipped(quick_stack: Stack) -> None:
    """On PostgreSQL a transaction that wrote its event first may commit after one
    that wrote later and was already confirmed: nothing in the catch-up moves past it,
    since each row is asked about until confirmed. On SQLite writers take turns, so
    the later commit carries the earlier time instead."""
    stack = quick_stack
    gateway = stack.runtime("gateway")
    donations = stack.runtime("donations")
    losing = Losing(gateway.outbox.publisher, "donations")

    if gateway.engine.dialect.name == "postgresql":
        slow = gateway.session_factory()
        slow.begin()
        first = register_organisation(
            session=slow, outbox=gateway.outbox, data={**HOSPITAL, "name": "Hankou Hospital"}
        )
        slow.flush()
        later = _register(gateway, "Wuchang Hospital")
        first_id = first.id
    else:
        slow = None
        later = _register(gateway, "Wuchang Hospital")
        first_id = uuid.uuid4()

    # The later event is taken in and confirmed everywhere.
    eventually(lambda: read_model_org(donations, later))
    _catching_up(
        gateway,
        lambda: all(b.unconfirmed == 0 for b in gateway.catch_up.behind()),  # type: ignore[union-attr]
    )

    # Now the first one commits, and the broker loses it on its way to donations.
    gateway.outbox.publisher = losing
    if slow is not None:
        slow.commit()
        slow.close()
    else:
        written = new_event(
            "org.registered",
            {**HOSPITAL, "id": str(first_id), "name": "Hankou Hospital"},
            producer="gateway",
            aggregate_id=first_id,
            aggregate_version=1,
        )
        with gateway.session_factory() as session:
            later_at = session.scalar(
                select(gateway_messaging.outbox.created_at).where(
                    gateway_messaging.outbox.type == "org.registered"
                )
            )
        assert later_at is not None
        earlier = dataclasses.replace(written, occurred_at=later_at - timedelta(seconds=5))
        with gateway.unit_of_work() as session:
            gateway.outbox.add(session, earlier)
    assert len(losing.lost) == 1
    gateway.outbox.publisher = losing.inner

    _catching_up(gateway, lambda: read_model_org(donations, first_id))
    assert _standing(gateway, "donations").resent >= 1
    assert donations.catch_up is not None
    assert donations.catch_up.recovered()["gateway"][0] == 1
    assert _outcomes(donations, first_id) == ["applied"]
