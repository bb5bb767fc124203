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
        """The JSON-safe form sent over the broker and kept in the outbox."""
        return dict(_ENVELOPE.dump(self))

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
