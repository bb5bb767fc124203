"""anonymous donors: allocations and shipments know the donor asked not to be named

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 16:10:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("donor_anonymous", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("shipments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("donor_anonymous", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    # What is already there: an allocation of an anonymous pledge line, and a shipment
    # carrying any such allocation.
    op.execute(
        "UPDATE allocations SET donor_anonymous = TRUE WHERE pledge_line_id IN "
        "(SELECT id FROM supply_lines WHERE anonymous = TRUE)"
    )
    op.execute(
        "UPDATE shipments SET donor_anonymous = TRUE WHERE id IN "
        "(SELECT shipment_lines.shipment_id FROM shipment_lines "
        "JOIN allocations ON allocations.id = shipment_lines.allocation_id "
        "WHERE allocations.donor_anonymous = TRUE)"
    )


def downgrade() -> None:
    with op.batch_alter_table("shipments", schema=None) as batch_op:
        batch_op.drop_column("donor_anonymous")
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.drop_column("donor_anonymous")
