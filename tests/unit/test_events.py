"""The envelope and payload schemas every service relies on, without any I/O."""

from __future__ import annotations

import uuid

import pytest

from shared.events import REGISTRY, Event, EventError, new_event, subscribers_of
from shared.observability import correlation_id_var


def _registered(**payload: object) -> Event:
    body = {
        "id": uuid.uuid4(),
        "name": "Jinyintan Hospital",
        "kind": "hospital",
        "region": "420107",
        **payload,
    }
    return new_event(
        "org.registered", body, producer="gateway", aggregate_id=body["id"], aggregate_version=1
    )


def test_event_round_trips_through_its_message_form() -> None:
    token = correlation_id_var.set("story-1")
    try:
        event = _registered()
    finally:
        correlation_id_var.reset(token)
    message = event.to_message()

    assert message["type"] == "org.registered"
    assert message["version"] == 1
    assert message["correlation_id"] == "story-1"
    assert isinstance(message["payload"]["id"], str)  # JSON-safe
    again = Event.from_message(message)
    assert again == event
    assert again.data()["id"] == uuid.UUID(message["payload"]["id"])


def test_producer_cannot_write_an_event_its_consumers_would_refuse() -> None:
    with pytest.raises(EventError) as excinfo:
        _registered(kind="spaceport")
    assert set(excinfo.value.errors) == {"payload.kind"}


def test_envelope_errors_name_each_field() -> None:
    message = _registered().to_message()
    del message["aggregate_version"]
    message["occurred_at"] = "yesterday"
    with pytest.raises(EventError) as excinfo:
        Event.from_message(message)
    assert set(excinfo.value.errors) == {"aggregate_version", "occurred_at"}


def test_unknown_type_or_version_is_refused() -> None:
    message = _registered().to_message()
    with pytest.raises(EventError, match="no schema"):
        Event.from_message({**message, "type": "org.exploded"})
    with pytest.raises(EventError, match="version 9"):
        Event.from_message({**message, "version": 9})


def test_a_schema_registered_twice_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="twice"):
        REGISTRY.register("org.registered", 1, REGISTRY._schema("org.registered", 1))


def test_org_registered_goes_to_every_read_model() -> None:
    assert subscribers_of("org.registered") == ("donations", "dispatch", "gateway", "community")
    assert subscribers_of("nothing.happened") == ()


def test_the_message_form_is_what_the_envelope_schema_dumps() -> None:
    from shared.events.envelope import EnvelopeSchema

    for event in (_registered(), _registered(name="火神山医院")):
        assert event.to_message() == EnvelopeSchema().dump(event)


def _proposed(quantity: object = 5, deadline: object = None) -> dict[str, object]:
    ids = ("allocation_id", "pledge_id", "pledge_line_id", "need_id", "need_line_id")
    return {
        **{key: str(uuid.uuid4()) for key in ids},
        "recipient_org_id": str(uuid.uuid4()),
        "quantity": quantity,
        "deadline": deadline,
    }


def test_events_of_one_batch_are_validated_by_the_first_and_the_shape_of_the_rest() -> None:
    from shared.events import new_events

    payloads = [_proposed(q) for q in (5, 10, 15)]
    ids = [p["allocation_id"] for p in payloads]
    events = new_events(
        "allocation.proposed",
        payloads,
        producer="dispatch",
        aggregate_ids=ids,
        aggregate_version=1,
        version=1,
    )
    assert [e.payload["quantity"] for e in events] == [5, 10, 15]
    assert [e.aggregate_id for e in events] == ids
    # Each event passes what a consumer checks.
    for event in events:
        assert Event.from_message(event.to_message()) == event

    def refused(batch: list[dict[str, object]]) -> set[str]:
        with pytest.raises(EventError) as excinfo:
            new_events(
                "allocation.proposed",
                batch,
                producer="dispatch",
                aggregate_ids=[p["allocation_id"] for p in batch],
                aggregate_version=1,
                version=1,
            )
        return set(excinfo.value.errors)

    # The first is checked by the schema itself,
    assert refused([_proposed(quantity=0)]) == {"payload.quantity"}
    # the others by their fields and the JSON type of each value,
    assert refused([_proposed(), _proposed(quantity="7")]) == {"payload[1].quantity"}
    extra = {**_proposed(), "note": "x"}
    assert refused([_proposed(), extra]) == {"payload[1]"}
    # and None only where the schema allows it.
    assert refused([_proposed(), {**_proposed(), "quantity": None}]) == {"payload[1].quantity"}
    later = "2026-12-05T00:00:00+00:00"
    assert (
        len(
            new_events(
                "allocation.proposed",
                [_proposed(deadline=later), _proposed(deadline=None)],
                producer="dispatch",
                aggregate_ids=[uuid.uuid4(), uuid.uuid4()],
                aggregate_version=1,
                version=1,
            )
        )
        == 2
    )


def test_events_carrying_many_items_are_checked_item_by_item_without_the_schema_for_each() -> None:
    """allocation.proposed version 2: the first event's first allocation goes through
    the schema, every other allocation of every event is checked by its fields' JSON
    types, and each error names the event, the item and the field."""
    from shared.events import new_events

    def refused(*batches: list[dict[str, object]]) -> set[str]:
        with pytest.raises(EventError) as excinfo:
            new_events(
                "allocation.proposed",
                [{"allocations": batch} for batch in batches],
                producer="dispatch",
                aggregate_ids=[uuid.uuid4() for _ in batches],
                aggregate_version=1,
                version=2,
            )
        return set(excinfo.value.errors)

    good = [_proposed(q) for q in (5, 10)]
    events = new_events(
        "allocation.proposed",
        [{"allocations": good}, {"allocations": [_proposed(7, "2026-12-06T00:00:00+00:00")]}],
        producer="dispatch",
        aggregate_ids=[uuid.uuid4(), uuid.uuid4()],
        aggregate_version=1,
        version=2,
    )
    # What a consumer checks (every item through the schema) passes too.
    assert [Event.from_message(e.to_message()) for e in events] == events
    # The first item by the schema itself,
    assert refused([_proposed(quantity=0), *good]) == {"payload.allocations"}
    # every other by its shape, named to the item,
    assert refused(good, [_proposed(), _proposed(quantity="7")]) == {
        "payload[1].allocations[1].quantity"
    }
    assert refused(good, [{**_proposed(), "note": "x"}]) == {"payload[1].allocations[0]"}
    assert refused(good, [{**_proposed(), "quantity": None}]) == {
        "payload[1].allocations[0].quantity"
    }
    # an event with none, or more than an event may carry, refused.
    assert refused(good, []) == {"payload[1].allocations"}
    assert refused(good, [_proposed()] * 501) == {"payload[1].allocations"}
