"""help given: each session of help from people's time that was held, as counts
(community.help_session_held), for the public ledger

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 01:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0019"
down_revision: str | Sequence[str] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "help_given",
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("person_key", sa.Uuid(), nullable=False),
        sa.Column("region", sa.String(length=12), nullable=False),
        sa.Column("week", sa.Date(), nullable=False),
        sa.Column("minutes", sa.Integer(), nullable=False),
        sa.Column("recorded_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_id"),
    )
    op.create_index("ix_help_given_week_region", "help_given", ["week", "region"])


def downgrade() -> None:
    op.drop_index("ix_help_given_week_region", table_name="help_given")
    op.drop_table("help_given")
