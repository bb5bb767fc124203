"""Contact without exposing anyone: a helper and a seeker connected by a provider (a
masked-number call-back from a telephony service, or a room from a video service), so
that neither sees the other's number.

The provider is chosen by ``AIDLINK_HELP_CONTACT_PROVIDER``: empty for none (the
helper then sees the seeker's contact within the session's window, see
``service.reveal_contact``), ``test`` for :class:`RecordingProvider`, or
``package.module:factory``, a callable that takes the settings and gives a
:class:`ContactProvider`. A provider is given both numbers and answers only what the
helper may see: the kind of connection and, for a room, its link.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from shared.config import ConfigError, Settings

SETTING = "AIDLINK_HELP_CONTACT_PROVIDER"

Kind = Literal["call_back", "room"]


class ContactProviderError(Exception):
    """The provider could not connect the two sides (its service is down, a number is
    unreachable); nothing was recorded."""


@dataclass(frozen=True, slots=True)
class ConnectionAsked:
    """What a provider is asked: connect the session's two sides. ``helper_contact``
    is the number the helper gave for this call (a room needs none)."""

    session_id: uuid.UUID
    seeker_contact: str
    helper_contact: str | None
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True, slots=True)
class Connected:
    """What the provider did: ``call_back`` (both sides are being called, each shown a
    masked number) or ``room`` (a link for the helper; the seeker is sent theirs).
    ``reference`` is the provider's id of the call or room."""

    kind: Kind
    reference: str
    room_url: str | None = None


class ContactProvider(Protocol):
    """A service that connects two people without giving either the other's number."""

    name: str

    def connect(self, asked: ConnectionAsked) -> Connected:
        """Connect both sides of a session; raise :class:`ContactProviderError` when it
        cannot."""
        ...


class RecordingProvider:
    """The test provider: records each connection it is asked for, one JSON line in
    ``<var>/contact-provider-test.jsonl`` (who was called and the number each side was
    shown), and calls no one. With a helper's number it makes a call-back, else a room.
    """

    name = "test"
    MASKED = "+86 950 0000 0000"
    _lock = threading.Lock()

    def __init__(self, settings: Settings) -> None:
        self.path = Path(settings.var_dir) / "contact-provider-test.jsonl"

    def connect(self, asked: ConnectionAsked) -> Connected:
        reference = hashlib.sha256(f"{asked.session_id}:{uuid.uuid4()}".encode()).hexdigest()[:16]
        if asked.helper_contact:
            kind: Kind = "call_back"
            calls = [
                {"side": "helper", "dialled": asked.helper_contact, "shown": self.MASKED},
                {"side": "seeker", "dialled": asked.seeker_contact, "shown": self.MASKED},
            ]
            room_url = None
        else:
            kind = "room"
            room_url = f"https://rooms.example.invalid/{reference}"
            calls = [{"side": "seeker", "sent": room_url, "to": asked.seeker_contact}]
        line = {
            "session_id": str(asked.session_id),
            "kind": kind,
            "reference": reference,
            "calls": calls,
        }
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(line) + "\n")
        return Connected(kind=kind, reference=reference, room_url=room_url)


def provider_of(settings: Settings) -> ContactProvider | None:
    """The configured provider, or None. Resolved once, when the service starts: a
    name that is not ``test`` nor a factory that can be imported and called is a
    :class:`~shared.config.ConfigError` naming the setting, so that the service does
    not start rather than fail each connection."""
    name = settings.help_contact_provider
    if not name:
        return None
    if name == "test":
        return RecordingProvider(settings)
    module, _, attr = name.partition(":")
    if not module or not attr:
        raise ConfigError(
            f"{SETTING} must be empty, 'test' or 'package.module:factory', not {name!r}"
        )
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"{SETTING}: {name!r} names no factory that can be imported ({exc})"
        ) from None
    if not callable(factory):
        raise ConfigError(f"{SETTING}: {name!r} is not a callable factory")
    provider: ContactProvider = factory(settings)
    return provider
