"""The event envelope of DESIGN.md (Events)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from shared.db import utcnow
from shared.events.errors import EventError
from shared.events.registry import REGISTRY
from shared.ids import uuid4s
from shared.observability import causation_id_var, current_correlation_id


class EnvelopeSchema(Schema):
    id = fields.UUID(required=True)
    type = fields.String(required=True, validate=validate.Regexp(r"^[a-z_]+\.[a-z_]+$"))
    version = fields.Integer(required=True, validate=validate.Range(min=1))
    occurred_at = fields.AwareDateTime(required=True, default_timezone=None)
    producer = fields.String(required=True, validate=validate.Length(min=1))
    aggregate_id = fields.String(required=True, validate=validate.Length(min=1))
    aggregate_version = fields.Integer(required=True, validate=validate.Range(min=1))
    correlation_id = fields.String(required=True, validate=validate.Length(min=1))
    causation_id = fields.String(required=True, allow_none=True)
    payload = fields.Dict(required=True)


_ENVELOPE = EnvelopeSchema()


@dataclass(frozen=True)
class Event:
    """One fact that happened to one aggregate, as it travels between services."""

    type: str
    version: int
    producer: str
    aggregate_id: str
    aggregate_version: int
    payload: dict[str, Any]
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    occurred_at: datetime = field(default_factory=utcnow)
    correlation_id: str = field(default_factory=current_correlation_id)
    causation_id: str | None = field(default_factory=causation_id_var.get)

    def to_message(self) -> dict[str, Any]:
        """The JSON-safe form sent over the broker and kept in the outbox: what
        ``EnvelopeSchema`` dumps (a unit test holds the two equal), written out since
        every event of a commit passes here."""
        return {
            "id": str(self.id),
            "type": self.type,
            "version": self.version,
            "occurred_at": self.occurred_at.isoformat(),
            "producer": self.producer,
            "aggregate_id": self.aggregate_id,
            "aggregate_version": self.aggregate_version,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "payload": dict(self.payload),
        }

    @classmethod
    def from_message(cls, data: Any) -> Event:
        """Parse and validate a message: the envelope, then the payload of its type.

        Raises :class:`EventError` naming every offending field.
        """
        if not isinstance(data, dict):
            raise EventError("event is not an object", {"_schema": ["expected a JSON object"]})
        try:
            loaded = _ENVELOPE.load(data)
        except ValidationError as exc:
            raise EventError("invalid event envelope", _as_dict(exc.messages)) from None
        # Validate the payload now, so a bad one is refused before any handler runs;
        # the event keeps the JSON form, and handlers load typed values with data().
        REGISTRY.load_payload(loaded["type"], loaded["version"], loaded["payload"])
        return cls(**loaded)

    def data(self) -> dict[str, Any]:
        """The payload loaded through its schema (UUIDs, datetimes, ...)."""
        return REGISTRY.load_payload(self.type, self.version, self.payload)


def _as_dict(messages: Any) -> dict[str, Any]:
    return messages if isinstance(messages, dict) else {"_schema": messages}


def new_event(
    type: str,
    payload: dict[str, Any],
    *,
    producer: str,
    aggregate_id: Any,
    aggregate_version: int,
    version: int | None = None,
) -> Event:
    """Build an event, validating its payload against the registered schema first.

    A producer never writes an event its consumers would refuse.
    """
    version = version or REGISTRY.latest_version(type)
    dumped = REGISTRY.dump_payload(type, version, payload)
    return Event(
        type=type,
        version=version,
        producer=producer,
        aggregate_id=str(aggregate_id),
        aggregate_version=aggregate_version,
        payload=dumped,
    )


_NONE_TYPE = type(None)


def _json_type(value: Any) -> type:
    return _NONE_TYPE if value is None else type(value)


def new_events(
    type: str,
    payloads: list[dict[str, Any]],
    *,
    producer: str,
    aggregate_ids: list[Any],
    aggregate_version: int,
    version: int | None = None,
) -> list[Event]:
    """Many events of one type, built by one piece of code from the rows of one change
    (a matching plan's proposals), their payloads already in JSON form and checked by
    :func:`check_payloads`.

    Validating tens of thousands of payloads of one shape one by one would cost more
    than writing them: the first is validated against the registered schema as
    :func:`new_event` does, every other one by one ``isinstance`` per value.
    """
    if len(payloads) != len(aggregate_ids):
        raise ValueError("one aggregate id per payload")
    if not payloads:
        return []
    version = version or REGISTRY.latest_version(type)
    check_payloads(type, version, payloads)
    # The events of one change belong to one story: one correlation and cause; every
    # id's random bytes read at once. Each keeps its own time, in the order written
    # (the sweep and the catch-up send them again in that order).
    correlation_id = current_correlation_id()
    causation_id = causation_id_var.get()
    return [
        Event(
            type=type,
            version=version,
            producer=producer,
            aggregate_id=str(aggregate_id),
            aggregate_version=aggregate_version,
            payload=payload,
            id=event_id,
            correlation_id=correlation_id,
            causation_id=causation_id,
        )
        for payload, aggregate_id, event_id in zip(
            payloads, aggregate_ids, uuid4s(len(payloads)), strict=True
        )
    ]


def check_payloads(type: str, version: int, payloads: list[dict[str, Any]]) -> None:
    """Payloads of one type built by one piece of code, in JSON form: the first
    validated against the registered schema and equal to what the schema dumps it to,
    every other one with the same fields and values of the same JSON types (None where
    the schema allows it). Of a type that carries a list of changes
    (``allocation.proposed`` version 2), the first payload is validated with its first
    item alone, and every item of every payload checked the same way against that
    item. Raises :class:`EventError` naming the payload, item and field."""
    if not payloads:
        return
    first = payloads[0]
    field = REGISTRY.carried_field(type, version)
    carried = first.get(field) if field is not None else None
    if field is not None and isinstance(carried, list) and carried:
        # Hundreds of items through the schema would cost more than the rest of
        # the event: the first alone, then the shape of every one.
        _validate(type, version, {**first, field: carried[:1]})
        _same_shapes(type, payloads, REGISTRY.nullable_fields(type, version), "payload")
        item_nullable = REGISTRY.carried_nullable_fields(type, version)
        limit = REGISTRY.carried_limit(type, version)
        for n, payload in enumerate(payloads):
            listed = payload[field]
            where = f"payload[{n}].{field}"
            if not isinstance(listed, list) or not listed:
                raise EventError(f"invalid {type} payload", {where: ["not a list of items"]})
            if limit is not None and len(listed) > limit:
                raise EventError(f"invalid {type} payload", {where: [f"more than {limit} items"]})
            _same_shapes(type, listed, item_nullable, where, first=carried[0])
        return
    _validate(type, version, first)
    _same_shapes(type, payloads, REGISTRY.nullable_fields(type, version), "payload")


def _validate(type: str, version: int, payload: dict[str, Any]) -> None:
    loaded = REGISTRY.load_payload(type, version, payload)
    if REGISTRY.dump_payload(type, version, loaded) != payload:
        raise EventError(
            f"invalid {type} payload", {"payload": ["not in the form the schema dumps"]}
        )


def _same_shapes(
    type: str,
    values: list[Any],
    nullable: frozenset[str],
    where: str,
    first: dict[str, Any] | None = None,
) -> None:
    """Each of ``values`` a dict with the fields of ``first`` (the first of them when
    None) and values of the same JSON types, None where ``nullable`` allows it."""
    model = first if first is not None else values[0]
    shape = {key: _json_type(value) for key, value in model.items()}
    for n, value in enumerate(values):
        if not isinstance(value, dict) or value.keys() != shape.keys():
            raise EventError(
                f"invalid {type} payload", {f"{where}[{n}]": ["fields differ from the first"]}
            )
        for key, each in value.items():
            if _json_type(each) is not shape[key] and not (
                key in nullable and (each is None or shape[key] is _NONE_TYPE)
            ):
                raise EventError(f"invalid {type} payload", {f"{where}[{n}].{key}": ["wrong type"]})
