"""Random (version 4) UUIDs in bulk.

``uuid.uuid4`` reads the operating system's random source once per id, and CPython
lets go of the GIL around each read: a matching run making tens of thousands of
allocation and event ids while another thread of the process works (the relay, a web
server's request threads) waits for the GIL again after every one of them, most of
a second at 20,000 lines a side. :func:`uuid4s` reads the bytes of many ids at once.
The ids are the same kind (RFC 4122 version 4, 122 random bits from ``os.urandom``).
"""

from __future__ import annotations

import os
import uuid

_BYTES = 16


def uuid4s(count: int) -> list[uuid.UUID]:
    """``count`` random version 4 UUIDs, from one read of the OS's random source."""
    if count < 0:
        raise ValueError("count must not be negative")
    data = os.urandom(_BYTES * count)
    return [
        uuid.UUID(bytes=data[start : start + _BYTES], version=4)
        for start in range(0, _BYTES * count, _BYTES)
    ]
