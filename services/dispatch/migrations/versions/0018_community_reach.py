"""community reach: what each community's distribution reached inside it, as counts
(its latest community.units_distributed), for the public ledger and donors' traces

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05 14:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "community_reach",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("households_reached", sa.Integer(), nullable=False),
        sa.Column("people_served", sa.Integer(), nullable=False),
        sa.Column("vulnerable_households_reached", sa.Integer(), nullable=False),
        sa.Column("units_delivered", sa.JSON(), nullable=False),
        sa.Column("from_shipments", sa.JSON(), nullable=False),
        sa.Column("as_of", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("org_id"),
    )


def downgrade() -> None:
    op.drop_table("community_reach")
