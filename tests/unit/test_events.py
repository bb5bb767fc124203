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
