"""places: a copy of organisations' named places, from the gateway's place.saved

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 19:45:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "places",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("address", sa.String(length=500), nullable=False),
        sa.Column("region", sa.String(length=6), nullable=False),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("contact_name", sa.String(length=100), nullable=True),
        sa.Column("contact_phone", sa.String(length=32), nullable=True),
        sa.Column("opening_hours", sa.String(length=200), nullable=True),
        sa.Column("access_notes", sa.String(length=500), nullable=True),
        sa.Column("archived", sa.Boolean(), nullable=False),
        sa.Column("source_version", sa.Integer(), nullable=False),
        sa.Column("synced_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("places", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_places_org_id"), ["org_id"], unique=False)
    for table in ("supply_lines", "needs"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("place_id", sa.Uuid(), nullable=True))


def downgrade() -> None:
    for table in ("needs", "supply_lines"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("place_id")
    with op.batch_alter_table("places", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_places_org_id"))
    op.drop_table("places")
