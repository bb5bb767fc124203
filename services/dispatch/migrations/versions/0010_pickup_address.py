"""pickup address: the supply read model keeps where a pledge's goods are picked up

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 16:55:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("supply_lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("address", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("supply_lines", schema=None) as batch_op:
        batch_op.drop_column("address")
