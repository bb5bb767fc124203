"""The error of an event that does not match its schema (its own module, so that the
envelope and the registry of schemas can both use it without importing each other)."""

from __future__ import annotations

from typing import Any


class EventError(ValueError):
    """An event whose envelope or payload does not match its schema.

    ``errors`` maps each offending field (``payload.name`` for payload fields) to
    its messages.
    """

    def __init__(self, message: str, errors: dict[str, Any]) -> None:
        super().__init__(f"{message}: {errors}")
        self.errors = errors
