"""Tables of the gateway: the organisations it registers (identity grows here)."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import Entity
from shared.web import define_messaging_models


class Base(DeclarativeBase):
    pass


class Organisation(Entity, Base):
    """A foundation, hospital, community committee, ... known to aidlink."""

    __tablename__ = "organisations"

    name: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    region: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    address: Mapped[str | None] = mapped_column(String(500), nullable=True)


messaging = define_messaging_models(Base)
