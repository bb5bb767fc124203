"""tracking numbers: every shipment has one, AL-<year>-<six digits>

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 16:40:00

"""

from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tracking_counters",
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("year"),
    )
    with op.batch_alter_table("shipments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tracking_number", sa.String(length=20), nullable=True))
        batch_op.create_unique_constraint(
            "uq_shipments_tracking_number", ["tracking_number"]
        )
    # The shipments already there, numbered in the order they were made.
    conn = op.get_bind()
    shipments = sa.table(
        "shipments",
        sa.column("id", sa.Uuid()),
        sa.column("created_at", sa.DateTime()),
        sa.column("tracking_number", sa.String()),
    )
    counters = sa.table("tracking_counters", sa.column("year"), sa.column("last"))
    last: dict[int, int] = defaultdict(int)
    rows = conn.execute(
        sa.select(shipments.c.id, shipments.c.created_at).order_by(
            shipments.c.created_at, shipments.c.id
        )
    ).all()
    for shipment_id, created_at in rows:
        year = created_at.year
        last[year] += 1
        conn.execute(
            shipments.update()
            .where(shipments.c.id == shipment_id)
            .values(tracking_number=f"AL-{year}-{last[year]:06d}")
        )
    for year, value in last.items():
        conn.execute(counters.insert().values(year=year, last=value))


def downgrade() -> None:
    with op.batch_alter_table("shipments", schema=None) as batch_op:
        batch_op.drop_constraint("uq_shipments_tracking_number", type_="unique")
        batch_op.drop_column("tracking_number")
    op.drop_table("tracking_counters")
