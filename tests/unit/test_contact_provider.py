"""The contact provider chosen by AIDLINK_HELP_CONTACT_PROVIDER: none by default, the
test provider that records what it is asked, or a factory named by its module."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.community.sessions.contact import (
    ConnectionAsked,
    RecordingProvider,
    provider_of,
)
from shared.config import ConfigError, Settings

PHONE = "+86 137 0000 0001"


def _settings(tmp_path: Path, provider: str) -> Settings:
    return Settings.from_env(
        {"AIDLINK_VAR_DIR": str(tmp_path), "AIDLINK_HELP_CONTACT_PROVIDER": provider}
    )


def _asked(helper: str | None) -> ConnectionAsked:
    start = datetime(2020, 2, 10, 2, tzinfo=UTC)
    return ConnectionAsked(
        session_id=uuid.uuid4(),
        seeker_contact=PHONE,
        helper_contact=helper,
        starts_at=start,
        ends_at=start + timedelta(minutes=50),
    )


def make_recording(settings: Settings) -> RecordingProvider:
    return RecordingProvider(settings)


def test_no_provider_by_default(tmp_path: Path) -> None:
    assert provider_of(_settings(tmp_path, "")) is None
    assert Settings.from_env({"AIDLINK_VAR_DIR": str(tmp_path)}).help_contact_provider == ""


def test_the_test_provider_calls_both_back_showing_neither_number(tmp_path: Path) -> None:
    provider = provider_of(_settings(tmp_path, "test"))
    assert provider is not None and provider.name == "test"
    called = provider.connect(_asked("+86 186 0000 0002"))
    room = provider.connect(_asked(None))
    assert called.kind == "call_back" and called.room_url is None
    assert room.kind == "room" and room.room_url and room.reference in room.room_url
    lines = (tmp_path / "contact-provider-test.jsonl").read_text().splitlines()
    first, second = (json.loads(line) for line in lines)
    shown = {c["side"]: c["shown"] for c in first["calls"]}
    assert shown == {"helper": RecordingProvider.MASKED, "seeker": RecordingProvider.MASKED}
    assert second["calls"] == [{"side": "seeker", "sent": room.room_url, "to": PHONE}]


def test_a_provider_named_by_its_factory(tmp_path: Path) -> None:
    named = provider_of(_settings(tmp_path, f"{__name__}:make_recording"))
    assert isinstance(named, RecordingProvider)
    for wrong in (
        "no-such-provider",
        "no_such_package.provider:factory",
        f"{__name__}:no_such_factory",
        f"{__name__}:PHONE",
    ):
        with pytest.raises(ConfigError, match="AIDLINK_HELP_CONTACT_PROVIDER"):
            provider_of(_settings(tmp_path, wrong))


def test_a_provider_that_cannot_be_made_stops_the_service_at_start_up(tmp_path: Path) -> None:
    """Refused once, as the community service is made, not on every Join."""
    from services.community.app import create_app

    for wrong in ("no-such-provider", "no_such_package.provider:factory"):
        with pytest.raises(ConfigError, match="AIDLINK_HELP_CONTACT_PROVIDER"):
            create_app(_settings(tmp_path, wrong), testing=True)
    app = create_app(_settings(tmp_path, "test"), testing=True)
    assert isinstance(app.extensions["aidlink.help_contact_provider"], RecordingProvider)


def test_note_retention_is_at_least_a_day(tmp_path: Path) -> None:
    env = {"AIDLINK_VAR_DIR": str(tmp_path)}
    assert Settings.from_env(env).help_note_retention_days == 365
    with pytest.raises(ConfigError):
        Settings.from_env({**env, "AIDLINK_HELP_NOTE_RETENTION_DAYS": "0"})
