"""packed units: how a donor packed a line (boxes or cases of N), for the waybill

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 19:10:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("supply_lines", "shipment_lines"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("pack_unit", sa.String(length=16), nullable=True))
            batch_op.add_column(sa.Column("pack_size", sa.Integer(), nullable=True))
    with op.batch_alter_table("shipment_lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("standard", sa.String(length=64), nullable=True))
    # Lines already on shipments take their standard from the supply they came from.
    op.execute(
        "UPDATE shipment_lines SET standard = (SELECT supply_lines.standard FROM supply_lines "
        "WHERE supply_lines.id = shipment_lines.pledge_line_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("shipment_lines", schema=None) as batch_op:
        batch_op.drop_column("standard")
    for table in ("shipment_lines", "supply_lines"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("pack_size")
            batch_op.drop_column("pack_unit")
