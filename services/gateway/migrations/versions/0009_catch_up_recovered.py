"""catch-up, what it recovered: inbox rows say whether the event came in a copy the
catch-up sent again; the producer's count of such copies is called resent

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 11:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("caught_up", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_index(
            "ix_inbox_caught_up",
            ["producer"],
            unique=False,
            sqlite_where=sa.text("caught_up = 1"),
            postgresql_where=sa.text("caught_up"),
        )
    with op.batch_alter_table("catch_up", schema=None) as batch_op:
        batch_op.alter_column("recovered", new_column_name="resent")
        batch_op.alter_column("last_recovered_at", new_column_name="last_resent_at")


def downgrade() -> None:
    with op.batch_alter_table("catch_up", schema=None) as batch_op:
        batch_op.alter_column("last_resent_at", new_column_name="last_recovered_at")
        batch_op.alter_column("resent", new_column_name="recovered")
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_index("ix_inbox_caught_up")
        batch_op.drop_column("caught_up")
