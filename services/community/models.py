"""Tables of the community service: its copy of the organisations, and the outbox and
inbox every service keeps."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from shared.org_directory import OrganisationView
from shared.runtime import define_messaging_models


class Base(DeclarativeBase):
    pass


class Organisation(OrganisationView, Base):
    """The community service's copy of an organisation registered at the gateway."""


messaging = define_messaging_models(Base)
