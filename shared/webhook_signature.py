"""Signatures of webhook deliveries, for the sender and for receivers.

Every delivery carries ``X-Aidlink-Signature: t=<unix seconds>,v1=<hex digest>``,
where the digest is HMAC-SHA256, keyed with the subscription's secret, of
``"<t>.<raw request body>"``. A receiver recomputes it over the bytes it received
(before parsing the JSON), compares in constant time, and refuses a timestamp too
far from its own clock, so a captured request cannot be replayed later.

This module has no dependencies beyond the standard library; receivers may copy it.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Aidlink-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE = 300


def _digest(secret: str, body: bytes, timestamp: int) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Aidlink-Signature`` value for ``body`` sent at ``timestamp``."""
    return f"t={int(timestamp)},{SCHEME}={_digest(secret, body, int(timestamp))}"


def parse(header: str) -> tuple[int, list[str]] | None:
    """The timestamp and the ``v1`` signatures of a header, or None if malformed.

    More than one ``v1`` entry may appear (e.g. while a secret is being rotated); any
    one that matches will do.
    """
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return None
        if key == "t":
            if not value.isdigit():
                return None
            timestamp = int(value)
        elif key == SCHEME:
            signatures.append(value)
    if timestamp is None or not signatures:
        return None
    return timestamp, signatures


def verify(
    secret: str,
    body: bytes,
    header: str | None,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """Whether ``header`` is a valid signature of ``body`` with ``secret``, made at most
    ``tolerance`` seconds from ``now`` (the current time by default)."""
    if not header:
        return False
    parsed = parse(header)
    if parsed is None:
        return False
    timestamp, signatures = parsed
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = _digest(secret, body, timestamp)
    # Compare against every candidate, so the time taken says nothing about which one
    # was close.
    matched = False
    for candidate in signatures:
        if hmac.compare_digest(expected.encode(), candidate.encode()):
            matched = True
    return matched
