"""Rules of shipments: every transition allowed or refused, late updates, what an
applied status does to the allocations, and when a shipment is overdue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.dispatch.shipments import domain

T0 = datetime(2020, 2, 3, 8, 0, tzinfo=UTC)

# Every transition that may happen through the API or a batch; anything else is refused.
ALLOWED = {
    "planned": {
        "ready_for_pickup",
        "picked_up",
        "in_transit",
        "out_for_delivery",
        "delivered",
        "cancelled",
    },
    "ready_for_pickup": {"picked_up", "in_transit", "out_for_delivery", "delivered", "cancelled"},
    "picked_up": {
        "picked_up",
        "in_transit",
        "out_for_delivery",
        "delivered",
        "held",
        "delayed",
        "damaged",
        "lost",
        "returned",
    },
    **{
        status: {
            "in_transit",
            "out_for_delivery",
            "delivered",
            "held",
            "delayed",
            "damaged",
            "lost",
            "returned",
        }
        for status in ("in_transit", "out_for_delivery", "held", "delayed", "damaged")
    },
    "delivered": set(),
    "received": set(),
    "lost": set(),
    "returned": set(),
    "cancelled": set(),
}
PAIRS = [(current, requested) for current in domain.STATUSES for requested in domain.STATUSES]


def test_the_table_covers_every_status() -> None:
    assert set(domain.TRANSITIONS) == set(domain.STATUSES) == set(ALLOWED)
    assert {"received", "lost", "returned", "cancelled"} == domain.FINAL_STATUSES
    for status in domain.FINAL_STATUSES:
        assert domain.TRANSITIONS[status] == frozenset()


@pytest.mark.parametrize(("current", "requested"), PAIRS)
@pytest.mark.parametrize("source", ["api", "batch"])
def test_each_transition_through_the_api_or_a_batch(
    current: str, requested: str, source: str
) -> None:
    why = domain.refusal(current, requested, source)
    decision = domain.decide(current, T0, requested, T0 + timedelta(hours=1), source)
    if requested in ALLOWED[current]:
        assert why is None
        assert decision == domain.Decision("apply")
    else:
        assert why
        assert decision.outcome == "refused"
        assert decision.refused == why


@pytest.mark.parametrize("current", domain.STATUSES)
def test_only_a_receipt_makes_a_shipment_received_and_only_once_delivered(current: str) -> None:
    later = T0 + timedelta(hours=1)
    by_receipt = domain.decide(current, T0, "received", later, "receipt")
    assert (by_receipt.outcome == "apply") == (current == "delivered")
    for source in ("api", "batch", "system"):
        refused = domain.decide(current, T0, "received", later, source)
        assert refused.outcome == "refused"
        assert "receipt" in (refused.refused or "")


def test_only_consolidation_plans() -> None:
    assert domain.decide("planned", T0, "planned", T0, "api").outcome == "refused"
    assert "consolidation" in (domain.refusal("planned", "planned", "batch") or "")


def test_cancelling_is_refused_once_picked_up_naming_why() -> None:
    assert domain.refusal("ready_for_pickup", "cancelled", "api") is None
    why = domain.refusal("in_transit", "cancelled", "api")
    assert why and "in_transit" in why and "not yet picked up" in why


def test_an_unknown_status_is_refused() -> None:
    assert domain.decide("planned", T0, "teleported", T0, "api").outcome == "refused"


# Late updates ----------------------------------------------------------------------------


def test_an_update_that_happened_before_the_current_status_is_late_not_refused() -> None:
    # in_transit cannot become picked_up, but a picked_up scan from before is late.
    late = domain.decide("in_transit", T0, "picked_up", T0 - timedelta(minutes=5), "batch")
    assert late == domain.Decision("late")
    # Even after a final status: kept in the history, the status unmoved.
    assert domain.decide("lost", T0, "in_transit", T0 - timedelta(hours=3), "api").outcome == (
        "late"
    )


def test_an_update_at_or_after_the_current_status_is_checked() -> None:
    assert domain.decide("in_transit", T0, "picked_up", T0, "api").outcome == "refused"
    assert domain.decide("in_transit", T0, "delivered", T0, "api").outcome == "apply"


def test_nothing_is_late_against_a_plan() -> None:
    assert not domain.is_late("planned", T0, T0 - timedelta(days=1))
    assert domain.decide("planned", T0, "picked_up", T0 - timedelta(days=1), "api") == (
        domain.Decision("apply")
    )


def test_a_late_receipt_by_someone_else_is_still_refused() -> None:
    assert domain.decide("delivered", T0, "received", T0 - timedelta(hours=1), "api").outcome == (
        "refused"
    )


def test_updates_from_the_future_beyond_the_skew() -> None:
    skew = timedelta(minutes=5)
    assert not domain.too_far_ahead(T0 + timedelta(minutes=4), T0, skew)
    assert domain.too_far_ahead(T0 + timedelta(minutes=6), T0, skew)


# Effects ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "new", "expected"),
    [
        ("planned", "ready_for_pickup", ()),
        ("planned", "picked_up", (domain.SHIP,)),
        ("ready_for_pickup", "in_transit", (domain.SHIP,)),
        ("planned", "delivered", (domain.SHIP, domain.DELIVER)),
        ("picked_up", "in_transit", ()),
        ("in_transit", "held", ()),
        ("held", "in_transit", ()),
        ("out_for_delivery", "delivered", (domain.DELIVER,)),
        ("delivered", "received", ()),
        ("in_transit", "lost", (domain.LOSE,)),
        ("damaged", "returned", (domain.RETURN,)),
        ("planned", "cancelled", (domain.CANCEL,)),
    ],
)
def test_effects_of_an_applied_status(previous: str, new: str, expected: tuple[str, ...]) -> None:
    assert domain.effects(previous, new) == expected


# Overdue ------------------------------------------------------------------------------------


def test_overdue_after_no_update_for_the_stale_time() -> None:
    day = timedelta(hours=24)
    assert domain.overdue_reason("in_transit", T0, None, T0 + day, day) is not None
    assert domain.overdue_reason("in_transit", T0, None, T0 + day / 2, day) is None
    assert (domain.overdue_reason("delivered", T0, None, T0 + day, day) or "").startswith(
        domain.STALE
    )
    for final in domain.FINAL_STATUSES:
        assert domain.overdue_reason(final, T0, T0, T0 + 10 * day, day) is None


def test_overdue_past_the_eta_until_delivered() -> None:
    day = timedelta(hours=24)
    eta = T0 + timedelta(hours=2)
    now = T0 + timedelta(hours=3)
    assert (domain.overdue_reason("in_transit", T0, eta, now, day) or "").startswith(
        domain.PAST_ETA
    )
    assert domain.overdue_reason("delivered", T0, eta, now, day) is None
    assert domain.overdue_reason("in_transit", T0, now + day, now, day) is None
