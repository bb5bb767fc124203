"""Which shipments a community's delivered units came from (first in, first out), kept
as goods arrive: a delivery's snapshot names the few goods its units came from, never
every shipment the community received; a correction moves the goods after it in line
and names the shares it changed; dispatch keeps each share from the latest snapshot
that named it, whatever order the snapshots arrive in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from services.community.distribution import service as distribution
from services.community.models import (
    HouseholdDelivery,
    Organisation,
    ReachSnapshot,
    ReceivedGoods,
)
from shared.config import Settings
from shared.events import Event, new_event


def _community(rt: Any, model: Any) -> uuid.UUID:
    """A verified community committee in a service's copy of the organisations."""
    org = uuid.uuid4()
    with rt.unit_of_work() as session:
        session.add(
            model(
                id=org,
                name="Baibuting",
                kind="community_committee",
                region="420102",
                status="verified",
                source_version=1,
            )
        )
    return org


def _receipt(
    org_id: uuid.UUID,
    shipment_id: uuid.UUID,
    accepted: int,
    *,
    sequence: int = 1,
    corrects: uuid.UUID | None = None,
) -> Event:
    receipt_id = uuid.uuid4()
    return new_event(
        "receipt.confirmed",
        {
            "receipt_id": receipt_id,
            "shipment_id": shipment_id,
            "sequence": sequence,
            "corrects": corrects,
            "recipient_org_id": org_id,
            "donor_org_id": uuid.uuid4(),
            "donor_anonymous": False,
            "confirmed_at": datetime.now(UTC),
            "lines": [
                {
                    "shipment_line_id": uuid.uuid4(),
                    "allocation_id": uuid.uuid4(),
                    "pledge_line_id": uuid.uuid4(),
                    "need_line_id": uuid.uuid4(),
                    "item": "vegetables",
                    "quantity": 1000,
                    "accepted": accepted,
                    "damaged": 1000 - accepted,
                    "short": 0,
                }
            ],
        },
        producer="dispatch",
        aggregate_id=receipt_id,
        aggregate_version=1,
    )


def _deliver(session: Any, org_id: uuid.UUID, units: int) -> list[tuple[uuid.UUID, int]]:
    """A delivery of ``units`` counted as a volunteer's outcome counts it; the shares
    its snapshot names, as (shipment, units from it)."""
    delivery = HouseholdDelivery(
        id=uuid.uuid4(), org_id=org_id, household_id=uuid.uuid4(), items={"vegetables": units}
    )
    distribution._count_delivery(session, delivery, datetime.now(UTC))
    session.flush()
    return [
        (share["shipment_id"], share["quantity"])
        for share in distribution.delivery_shares(session, org_id, delivery.items)
    ]


def test_a_delivery_names_the_few_shipments_its_units_came_from(settings: Settings) -> None:
    from services.community.app import create_app

    rt = create_app(settings).extensions["aidlink"]
    org = _community(rt, Organisation)
    handle = distribution.receipt_handler(rt.outbox)
    # Forty shipments of 1,000 g arrive one after the other (the seventh half damaged).
    shipments = [uuid.UUID(int=i + 1) for i in range(40)]
    receipts: dict[uuid.UUID, Event] = {}
    for i, shipment in enumerate(shipments):
        receipts[shipment] = _receipt(org, shipment, 500 if i == 6 else 1000)
        with rt.unit_of_work() as session:
            handle(session, receipts[shipment])
    with rt.unit_of_work() as session:
        assert distribution.line_drift(session, org) == []
        assert distribution._end_of_line(session, org, "vegetables")[0] == 39_500
        # 2,500 g: the first two shipments whole, half the third.
        assert _deliver(session, org, 2500) == [
            (shipments[0], 1000),
            (shipments[1], 1000),
            (shipments[2], 500),
        ]
        # 700 g more: the rest of the third, and 200 of the fourth; not the forty.
        assert _deliver(session, org, 700) == [(shipments[2], 1000), (shipments[3], 200)]
        # Up to the end of the half-damaged seventh, then into the eighth.
        assert _deliver(session, org, 3300) == [
            (shipments[3], 1000),
            (shipments[4], 1000),
            (shipments[5], 1000),
            (shipments[6], 500),
        ]
        assert _deliver(session, org, 300) == [(shipments[7], 300)]
        # As four deliveries' snapshots would have left it (the first naming every
        # share).
        held = session.get(ReachSnapshot, org)
        assert held is not None
        held.sequence, held.whole_sent = 4, True

    def sent() -> list[dict[str, Any]]:
        with rt.session_factory() as session:
            rows = session.scalars(
                select(rt.outbox.row_class).where(
                    rt.outbox.row_class.type == "community.units_distributed"
                )
            ).all()
        return sorted((row.message for row in rows), key=lambda m: m["payload"]["sequence"])

    # The seventh shipment's receipt is corrected to all 1,000 accepted: its share and
    # the eighth's change (the goods after it in line moved on by 500), no other.
    with rt.unit_of_work() as session:
        handle(session, _receipt(org, shipments[6], 1000, sequence=2, corrects=uuid.uuid4()))
    [snapshot] = sent()
    assert snapshot["version"] == 2
    assert snapshot["payload"]["sequence"] == 5
    assert snapshot["payload"]["whole"] is False
    assert [(s["shipment_id"], s["quantity"]) for s in snapshot["payload"]["from_shipments"]] == [
        (str(shipments[6]), 800),
        (str(shipments[7]), 0),
    ]
    with rt.unit_of_work() as session:
        assert distribution.line_drift(session, org) == []
        everything = distribution.delivered_from_shipments(session, org, {"vegetables": 6800})
        assert [(s["shipment_id"], s["quantity"]) for s in everything] == [
            *[(shipments[i], 1000) for i in range(6)],
            (shipments[6], 800),
        ]
    # A new shipment arriving changes no share (nothing was delivered beyond what was
    # received): no snapshot.
    with rt.unit_of_work() as session:
        handle(session, _receipt(org, uuid.UUID(int=99), 1000))
    assert len(sent()) == 1
    # An original receipt arriving after its correction changes nothing; nor for goods
    # received before receipts were numbered here (taken as first receipts).
    with rt.unit_of_work() as session:
        handle(session, _receipt(org, shipments[6], 500))
        assert distribution.line_drift(session, org) == []
        assert distribution._end_of_line(session, org, "vegetables")[0] == 41_000
        goods = session.get(ReceivedGoods, (shipments[6], "vegetables"))
        assert goods is not None and goods.accepted == 1000
        goods.receipt_sequence = 1
    with rt.unit_of_work() as session:
        handle(session, _receipt(org, shipments[6], 500))
        assert distribution._end_of_line(session, org, "vegetables")[0] == 41_000
    assert len(sent()) == 1
    # Asked for them all again (as for a community's first snapshot): the next names
    # every share, whole.
    with rt.unit_of_work() as session:
        held = session.get(ReachSnapshot, org)
        assert held is not None
        held.whole_sent = False
    with rt.unit_of_work() as session:
        handle(session, _receipt(org, shipments[5], 900, sequence=2, corrects=uuid.uuid4()))
    whole = sent()[-1]["payload"]
    assert (whole["sequence"], whole["whole"]) == (6, True)
    assert [(s["shipment_id"], s["quantity"]) for s in whole["from_shipments"]] == [
        *[(str(shipments[i]), 1000) for i in range(5)],
        (str(shipments[5]), 900),
        # The seventh now begins 100 earlier in line: 900 of the 6,800 delivered.
        (str(shipments[6]), 900),
    ]
    rt.dispose()


def test_dispatch_keeps_each_share_from_the_newest_snapshot_that_named_it(
    settings: Settings,
) -> None:
    from services.dispatch.app import create_app
    from services.dispatch.models import CommunityReach, LedgerState
    from services.dispatch.models import Organisation as DispatchOrganisation
    from services.dispatch.transparency import community
    from shared.events.community import reach_aggregate_id
    from shared.inbox import Outcome

    rt = create_app(settings).extensions["aidlink"]
    org = _community(rt, DispatchOrganisation)
    a, b, c = (uuid.UUID(int=i) for i in (1, 2, 3))
    receipt = uuid.uuid4()

    def snapshot(
        sequence: int, shares: list[tuple[uuid.UUID, int]], version: int = 2, whole: bool = False
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "org_id": org,
            "sequence": sequence,
            "households_reached": sequence,
            "people_served": 3 * sequence,
            "vulnerable_households_reached": 0,
            "units_delivered": [{"item": "vegetables", "quantity": 100 * sequence, "unit": "g"}],
            "from_shipments": [
                {"shipment_id": s, "receipt_id": receipt, "item": "vegetables", "quantity": q}
                for s, q in shares
            ],
        }
        if version == 2:
            payload["whole"] = whole
        return new_event(
            "community.units_distributed",
            payload,
            producer="community",
            aggregate_id=reach_aggregate_id(org),
            aggregate_version=sequence,
            version=version,
        ).to_message()

    def shares() -> dict[tuple[str, str], int]:
        with rt.session_factory() as session:
            return community.shares_of(session, org)

    def vegetables(**named: int) -> dict[tuple[str, str], int]:
        ids = {"a": a, "b": b, "c": c}
        return {(str(ids[k]), "vegetables"): q for k, q in named.items()}

    # The inbox hands these snapshots over in any order: each share is kept from the
    # newest snapshot that named it, the counts from the newest snapshot.
    assert rt.inbox.handle(snapshot(4, [(b, 1000), (c, 100)])) is Outcome.APPLIED
    assert shares() == vegetables(b=1000, c=100)
    # The whole third, late: its share of a, which only it named, is kept; b stays as
    # the fourth said.
    assert rt.inbox.handle(snapshot(3, [(a, 1000), (b, 400)], whole=True)) is Outcome.APPLIED
    assert shares() == vegetables(a=1000, b=1000, c=100)
    assert rt.inbox.handle(snapshot(6, [(c, 300)])) is Outcome.APPLIED
    assert rt.inbox.handle(snapshot(5, [(a, 1200)])) is Outcome.APPLIED
    assert shares() == vegetables(a=1200, b=1000, c=300)
    # An older copy that says nothing newer of any share changes nothing, the public
    # ledger's version included.
    with rt.session_factory() as session:
        version = session.scalar(select(LedgerState.version))
    assert rt.inbox.handle(snapshot(2, [(b, 50)], whole=True)) is Outcome.APPLIED
    assert shares() == vegetables(a=1200, b=1000, c=300)
    with rt.session_factory() as session:
        assert session.scalar(select(LedgerState.version)) == version
    with rt.session_factory() as session:
        held = session.get(CommunityReach, org)
        assert held is not None
        assert (held.sequence, held.households_reached) == (6, 6)
        # A donor whose line went on shipments a and c: 1,500 delivered from them,
        # never more than the community accepted of them.
        found = community.shares_from(session, [a, c])
        figures = community.trace_figures(held, "vegetables", [a, c], 2000, found)
        assert figures["delivered_from_these_shipments"] == 1500
        figures = community.trace_figures(held, "vegetables", [a, c], 900, found)
        assert figures["delivered_from_these_shipments"] == 900
    # A whole snapshot (or version 1, as sent before) is taken whenever it is newer,
    # past a gap: the shares it does not name are none.
    assert rt.inbox.handle(snapshot(9, [(a, 1200), (c, 600)], version=1)) is Outcome.APPLIED
    assert shares() == vegetables(a=1200, c=600)
    assert rt.inbox.handle(snapshot(11, [(b, 70)], whole=True)) is Outcome.APPLIED
    assert shares() == vegetables(b=70)
    # Older than that whole snapshot, a late one says nothing of any share: those it
    # names were named again by the whole one, or none at it, row or no row.
    d = uuid.UUID(int=4)
    assert rt.inbox.handle(snapshot(10, [(c, 999), (d, 5)])) is Outcome.APPLIED
    assert shares() == vegetables(b=70)
    rt.dispose()
