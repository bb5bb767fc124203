"""catch-up: outbox rows name the subscribers yet to confirm them, inbox rows their
producer, and the catch_up table what each subscriber was asked and what was sent again

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 09:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows from before are taken as confirmed (awaiting NULL): they were published
    # under the old promise, and the catch-up starts with what is written from now on.
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("awaiting", sa.String(length=200), nullable=True))
        batch_op.create_index(
            "ix_outbox_awaiting",
            ["created_at"],
            unique=False,
            sqlite_where=sa.text("awaiting IS NOT NULL"),
            postgresql_where=sa.text("awaiting IS NOT NULL"),
        )
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("producer", sa.String(length=32), nullable=True))
    op.create_table(
        "catch_up",
        sa.Column("subscriber", sa.String(length=32), nullable=False),
        sa.Column("asked_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("answered_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("confirmed", sa.Integer(), nullable=False),
        sa.Column("recovered", sa.Integer(), nullable=False),
        sa.Column("last_recovered_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("subscriber"),
    )


def downgrade() -> None:
    op.drop_table("catch_up")
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_column("producer")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_awaiting")
        batch_op.drop_column("awaiting")
