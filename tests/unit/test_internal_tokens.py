"""The gateway's internal tokens: one per caller and service for half its life, and a
service checks a token's signature once but its expiry on every use."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import jwt
import pytest

from shared import identity as identity_module
from shared.identity import (
    ANONYMOUS,
    INTERNAL_ISSUER,
    Identity,
    InvalidToken,
    internal_token,
    sign_internal,
    verify_internal,
)

KEY = "k" * 40
OTHER_KEY = "o" * 40
COORDINATOR = Identity(
    user_id=uuid.uuid4(), roles=frozenset({"coordinator"}), via="session", org_status="verified"
)


def _clock(monkeypatch: pytest.MonkeyPatch, *, ahead: float) -> None:
    """Move the module's clock ``ahead`` seconds."""
    monkeypatch.setattr(identity_module, "time", SimpleNamespace(time=lambda: time.time() + ahead))


def test_a_token_verified_again_gives_the_same_caller() -> None:
    token = sign_internal(COORDINATOR, KEY, "donations", 60)
    assert verify_internal(token, KEY, "donations") == COORDINATOR
    assert verify_internal(token, KEY, "donations") == COORDINATOR


def test_a_token_once_accepted_is_refused_after_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = sign_internal(COORDINATOR, KEY, "donations", 30)
    assert verify_internal(token, KEY, "donations") == COORDINATOR
    _clock(monkeypatch, ahead=30 + 4)  # within the leeway of five seconds
    assert verify_internal(token, KEY, "donations") == COORDINATOR
    _clock(monkeypatch, ahead=30 + 6)
    with pytest.raises(InvalidToken, match="expired"):
        verify_internal(token, KEY, "donations")


def test_a_token_accepted_by_one_service_or_key_is_refused_by_another() -> None:
    token = sign_internal(COORDINATOR, KEY, "donations", 60)
    assert verify_internal(token, KEY, "donations") == COORDINATOR
    with pytest.raises(InvalidToken, match=r"[Aa]udience"):
        verify_internal(token, KEY, "dispatch")
    with pytest.raises(InvalidToken, match=r"[Ss]ignature"):
        verify_internal(token, OTHER_KEY, "donations")


def test_a_tampered_token_is_refused_every_time() -> None:
    token = sign_internal(ANONYMOUS, KEY, "dispatch", 60)
    verify_internal(token, KEY, "dispatch")
    header, _, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["roles"] = ["admin"]
    forged_body = jwt.encode(claims, "x" * 40, algorithm="HS256").split(".")[1]
    forged = f"{header}.{forged_body}.{signature}"
    for _ in range(2):
        with pytest.raises(InvalidToken):
            verify_internal(forged, KEY, "dispatch")


def test_a_token_without_an_expiry_is_refused() -> None:
    token = jwt.encode(
        {"iss": INTERNAL_ISSUER, "aud": "dispatch", "iat": int(time.time())},
        KEY,
        algorithm="HS256",
    )
    with pytest.raises(InvalidToken, match="exp"):
        verify_internal(token, KEY, "dispatch")


def test_the_gateway_signs_one_token_per_caller_and_service_for_half_its_life(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = internal_token(COORDINATOR, KEY, "donations", 60)
    assert internal_token(COORDINATOR, KEY, "donations", 60) == first
    assert internal_token(COORDINATOR, KEY, "dispatch", 60) != first
    assert internal_token(ANONYMOUS, KEY, "donations", 60) != first
    assert verify_internal(first, KEY, "donations") == COORDINATOR

    _clock(monkeypatch, ahead=29)
    assert internal_token(COORDINATOR, KEY, "donations", 60) == first
    _clock(monkeypatch, ahead=31)
    renewed = internal_token(COORDINATOR, KEY, "donations", 60)
    assert renewed != first
    assert verify_internal(renewed, KEY, "donations") == COORDINATOR
