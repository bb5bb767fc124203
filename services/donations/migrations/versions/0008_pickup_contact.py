"""pickup contact: whom the driver calls where a pledge's goods are picked up

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 17:05:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pledges", schema=None) as batch_op:
        batch_op.add_column(sa.Column("origin_contact_name", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("origin_contact_phone", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pledges", schema=None) as batch_op:
        batch_op.drop_column("origin_contact_phone")
        batch_op.drop_column("origin_contact_name")
