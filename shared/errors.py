"""Errors of the domain: what the service layer raises when a use case cannot go on.

They know nothing of HTTP, so a worker or the command line can call the same service
functions; each app's problem handler (``shared.problems``) turns them into problem
details: ``NotFound`` 404, ``Forbidden`` 403, ``Conflict`` 409 (with the current
state), ``RuleBroken`` 422 (with the messages per field).
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """A use case refused. ``slug`` names the kind of problem, ``errors`` gives
    messages per field, ``details`` any further fields of the answer."""

    status: ClassVar[int] = 400

    def __init__(
        self,
        detail: str,
        *,
        slug: str | None = None,
        errors: dict[str, list[str]] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.slug = slug
        self.errors = errors
        self.details = details


class NotFound(DomainError):
    """What was asked for does not exist (or is not the caller's to see)."""

    status = 404


class Forbidden(DomainError):
    """The caller may not do this."""

    status = 403


class Conflict(DomainError):
    """Not possible in the current state of what it acts on."""

    status = 409


class RuleBroken(DomainError):
    """The request breaks a rule of the domain; ``errors`` names each."""

    status = 422


class Unavailable(DomainError):
    """A service this one needs (the broker, say) cannot be reached now; try again."""

    status = 503


class TooLarge(DomainError):
    """What was sent is larger than this service takes."""

    status = 413
