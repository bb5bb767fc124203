"""reach kept: a community's units delivered per item, and when each household was first
reached, kept as deliveries are made, so that counting a community's reach no longer
reads every delivery it ever made; both filled from the deliveries already made

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 12:00:00

"""

from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db import UTCDateTime

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('reach_units',
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('item', sa.String(length=64), nullable=False),
    sa.Column('quantity', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('org_id', 'item', name=op.f('pk_reach_units'))
    )
    op.add_column('households', sa.Column('reached_at', UTCDateTime(timezone=True), nullable=True))
    op.create_index('ix_households_org_reached', 'households', ['org_id', 'reached_at'], unique=False)

    # What the deliveries already made count: each household's first delivery, and the
    # units per community and item (the items are JSON, added up here).
    deliveries = sa.table(
        'household_deliveries',
        sa.column('org_id', sa.Uuid()),
        sa.column('household_id', sa.Uuid()),
        sa.column('items', sa.JSON()),
        sa.column('status', sa.String()),
        sa.column('done_at', UTCDateTime(timezone=True)),
    )
    households = sa.table('households', sa.column('id', sa.Uuid()), sa.column('reached_at', UTCDateTime(timezone=True)))
    units = sa.table(
        'reach_units', sa.column('org_id', sa.Uuid()), sa.column('item', sa.String()), sa.column('quantity', sa.BigInteger())
    )
    bind = op.get_bind()
    first = (
        sa.select(sa.func.min(deliveries.c.done_at))
        .where(deliveries.c.household_id == households.c.id, deliveries.c.status == 'delivered')
        .scalar_subquery()
    )
    reached = (
        sa.select(deliveries.c.household_id)
        .where(deliveries.c.household_id == households.c.id, deliveries.c.status == 'delivered')
        .exists()
    )
    bind.execute(sa.update(households).where(reached).values(reached_at=first))
    totals: dict[tuple[object, str], int] = defaultdict(int)
    for org_id, items in bind.execute(
        sa.select(deliveries.c.org_id, deliveries.c['items']).where(deliveries.c.status == 'delivered')
    ):
        for item, quantity in (items or {}).items():
            totals[(org_id, item)] += int(quantity)
    if totals:
        bind.execute(
            units.insert(),
            [{'org_id': org_id, 'item': item, 'quantity': quantity} for (org_id, item), quantity in totals.items()],
        )


def downgrade() -> None:
    op.drop_index('ix_households_org_reached', table_name='households')
    # Dropped in place (SQLite 3.35 and later): copying the table, as a batch would,
    # is refused while the deliveries refer to it.
    op.drop_column('households', 'reached_at')
    op.drop_table('reach_units')
