"""Versioned payload schemas per event type, and which services consume each type.

Adding an event type means: a payload schema here, registered under its type and
version, and its consumers in ``SUBSCRIBERS``. A new incompatible payload is a new
version registered beside the old one, so events already in flight still load.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from shared.events.errors import EventError

ORGANISATION_KINDS = (
    "foundation",
    "company",
    "fund",
    # A person giving in their own name, who may ask not to be named publicly.
    "individual",
    "hospital",
    "field_hospital",
    "community_committee",
    "civil_affairs_bureau",
    "care_home",
    "logistics_company",
    "coordinator_office",
)


ORGANISATION_STATUSES = ("pending", "verified", "suspended", "merged")


class OrgRegisteredV1(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    name_zh = fields.String(load_default=None, allow_none=True)
    name_en = fields.String(load_default=None, allow_none=True)
    kind = fields.String(required=True, validate=validate.OneOf(ORGANISATION_KINDS))
    region = fields.String(required=True, validate=validate.Length(min=1, max=32))
    address = fields.String(load_default=None, allow_none=True)
    status = fields.String(load_default="pending", validate=validate.OneOf(ORGANISATION_STATUSES))


class OrgVerifiedV1(Schema):
    id = fields.UUID(required=True)
    verified_at = fields.AwareDateTime(required=True)
    verified_by = fields.UUID(load_default=None, allow_none=True)
    evidence = fields.String(load_default=None, allow_none=True)


class OrgSuspendedV1(Schema):
    id = fields.UUID(required=True)
    suspended_at = fields.AwareDateTime(required=True)
    reason = fields.String(load_default=None, allow_none=True)


class OrgMergedV1(Schema):
    id = fields.UUID(required=True, metadata={"description": "The organisation merged away"})
    merged_into = fields.UUID(required=True, metadata={"description": "The one kept"})
    merged_at = fields.AwareDateTime(required=True)


class OrgErasedV1(Schema):
    """A person's data was erased on request: services drop what they hold of it
    (names, addresses, coordinates), keeping quantities so every total still adds up."""

    id = fields.UUID(required=True, metadata={"description": "The organisation (a person)"})
    name = fields.String(required=True, metadata={"description": "What it is called now"})
    erased_at = fields.AwareDateTime(required=True)
    user_ids = fields.List(
        fields.UUID(),
        load_default=list,
        metadata={"description": "Its users, whose kept answers the services forget too"},
    )


class OrgMemberRemovedV1(Schema):
    """A user is no longer a member of an organisation: the services end what they
    gave them there (a community's appointments)."""

    org_id = fields.UUID(required=True)
    user_id = fields.UUID(required=True)
    removed_at = fields.AwareDateTime(required=True)


class OrgResidentsErasedV1(Schema):
    """A community's residents' data was erased on request: the community service
    blanks its households and cases, keeping the counts. The organisation itself (not
    a person) keeps its record."""

    id = fields.UUID(required=True, metadata={"description": "The community organisation"})
    erased_at = fields.AwareDateTime(required=True)


class EventRegistry:
    """Maps ``(type, version)`` to the marshmallow schema of its payload."""

    def __init__(self) -> None:
        self._schemas: dict[tuple[str, int], Schema] = {}
        self._carries: dict[tuple[str, int], str] = {}

    def register(
        self, type: str, version: int, schema: Schema, *, carries: str | None = None
    ) -> None:
        """``carries``: the payload's list field whose items are each the change one
        event of another version told of (``allocation.proposed`` version 2's
        ``allocations``): what one such event asks of its subscriber, see
        :meth:`weight`."""
        key = (type, version)
        if key in self._schemas:
            raise ValueError(f"event {type} v{version} is registered twice")
        if carries is not None and carries not in schema.fields:
            raise ValueError(f"event {type} v{version} has no field {carries!r}")
        self._schemas[key] = schema
        if carries is not None:
            self._carries[key] = carries

    def carried_field(self, type: str, version: int) -> str | None:
        """The list field whose items an event of ``type`` and ``version`` carries."""
        return self._carries.get((type, version))

    def carried_limit(self, type: str, version: int) -> int | None:
        """How many items an event of ``type`` and ``version`` may carry at most."""
        field = self._carries.get((type, version))
        if field is None:
            return None
        limits = [
            v.max
            for v in self._schema(type, version).fields[field].validators
            if isinstance(v, validate.Length) and v.max is not None
        ]
        return min(limits) if limits else None

    def carried_nullable_fields(self, type: str, version: int) -> frozenset[str]:
        """The fields of a carried item that may be None."""
        field = self._carries.get((type, version))
        if field is None:
            return frozenset()
        inner = getattr(self._schema(type, version).fields[field], "inner", None)
        nested = getattr(inner, "schema", None)
        if nested is None:
            return frozenset()
        return frozenset(name for name, f in nested.fields.items() if f.allow_none)

    def weight(self, message: Any) -> int:
        """What an event message asks of its subscriber, counted in changes: as many
        as the items of the list it carries, else one. A relay sizes its task
        messages by it, so that a subscriber's transaction stays as large as it was
        with one change an event."""
        if not isinstance(message, dict):
            return 1
        version = message.get("version")
        field = (
            self._carries.get((str(message.get("type")), version))
            if isinstance(version, int)
            else None
        )
        carried = (message.get("payload") or {}).get(field) if field is not None else None
        return max(1, len(carried)) if isinstance(carried, list) else 1

    def types(self) -> list[str]:
        return sorted({t for t, _ in self._schemas})

    def latest_version(self, type: str) -> int:
        versions = [v for t, v in self._schemas if t == type]
        if not versions:
            raise EventError("unknown event type", {"type": [f"no schema for {type!r}"]})
        return max(versions)

    def _schema(self, type: str, version: int) -> Schema:
        try:
            return self._schemas[(type, version)]
        except KeyError:
            raise EventError(
                "unknown event type", {"type": [f"no schema for {type!r} version {version}"]}
            ) from None

    def load_payload(self, type: str, version: int, payload: Any) -> dict[str, Any]:
        try:
            return dict(self._schema(type, version).load(payload))
        except ValidationError as exc:
            raise EventError(f"invalid {type} payload", _prefixed(exc.messages)) from None

    def nullable_fields(self, type: str, version: int) -> frozenset[str]:
        """The payload fields that may be None."""
        schema = self._schema(type, version)
        return frozenset(name for name, f in schema.fields.items() if f.allow_none)

    def dump_payload(self, type: str, version: int, payload: dict[str, Any]) -> dict[str, Any]:
        schema = self._schema(type, version)
        dumped = dict(schema.dump(payload))
        # Dumping does not validate; loading the dumped form does, exactly as a
        # consumer will.
        self.load_payload(type, version, dumped)
        return dumped


def _prefixed(messages: Any) -> dict[str, Any]:
    if isinstance(messages, dict):
        return {f"payload.{key}": value for key, value in messages.items()}
    return {"payload": messages}


REGISTRY = EventRegistry()
REGISTRY.register("org.registered", 1, OrgRegisteredV1())
REGISTRY.register("org.verified", 1, OrgVerifiedV1())
REGISTRY.register("org.suspended", 1, OrgSuspendedV1())
REGISTRY.register("org.merged", 1, OrgMergedV1())
REGISTRY.register("org.erased", 1, OrgErasedV1())
REGISTRY.register("org.member_removed", 1, OrgMemberRemovedV1())
REGISTRY.register("org.residents_erased", 1, OrgResidentsErasedV1())

# Which services' queues receive each event type. The producer's relay sends one
# message per subscriber, to that subscriber's queue.
SUBSCRIBERS: dict[str, tuple[str, ...]] = {
    "org.registered": ("donations", "dispatch", "gateway", "community"),
    "org.verified": ("donations", "dispatch", "gateway", "community"),
    "org.suspended": ("donations", "dispatch", "gateway", "community"),
    "org.merged": ("donations", "dispatch", "gateway", "community"),
    "org.erased": ("donations", "dispatch", "community"),
    "org.member_removed": ("community",),
    "org.residents_erased": ("community",),
}


def subscribers_of(type: str) -> tuple[str, ...]:
    return SUBSCRIBERS.get(type, ())
