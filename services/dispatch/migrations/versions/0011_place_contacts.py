"""place contacts: whom the driver calls at a pickup and at a delivery

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 17:05:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("supply_lines", "needs"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("contact_name", sa.String(length=100), nullable=True))
            batch_op.add_column(sa.Column("contact_phone", sa.String(length=32), nullable=True))


def downgrade() -> None:
    for table in ("needs", "supply_lines"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("contact_phone")
            batch_op.drop_column("contact_name")
