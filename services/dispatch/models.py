"""Tables of the dispatch service."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from shared.org_directory import OrganisationView
from shared.web import define_messaging_models


class Base(DeclarativeBase):
    pass


class Organisation(OrganisationView, Base):
    """The dispatch service's copy of an organisation registered at the gateway."""


messaging = define_messaging_models(Base)
