"""goods in line: each item's goods received keep their place in line (when first
received) and the units of the item accepted before them, so that a delivery's
snapshot names the few shipments its units came from (first in, first out) rather
than reading every goods received; both filled from the goods already received. The
goods keep their receipt's number (an older receipt arriving late changes nothing),
and each community's next snapshot names every share (``whole_sent``)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 15:00:00

"""

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from shared.db import UTCDateTime

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('received_goods', sa.Column('first_in', UTCDateTime(timezone=True), nullable=True))
    op.add_column('received_goods', sa.Column('received_before', sa.BigInteger(), nullable=True))
    # Unknown for the goods already received: as a first receipt.
    op.add_column('received_goods', sa.Column('receipt_sequence', sa.Integer(), server_default='1', nullable=False))
    op.add_column('reach_snapshots', sa.Column('whole_sent', sa.Boolean(), server_default=sa.false(), nullable=False))

    # The line as the snapshots drew it until now: goods by when their shipment's
    # units first went into stock (those never in stock last), ties by shipment id.
    goods = sa.table(
        'received_goods',
        sa.column('shipment_id', sa.Uuid()),
        sa.column('item', sa.String()),
        sa.column('org_id', sa.Uuid()),
        sa.column('accepted', sa.Integer()),
        sa.column('first_in', UTCDateTime(timezone=True)),
        sa.column('received_before', sa.BigInteger()),
    )
    moves = sa.table(
        'stock_moves',
        sa.column('ref_id', sa.Uuid()),
        sa.column('kind', sa.String()),
        sa.column('at', UTCDateTime(timezone=True)),
    )
    bind = op.get_bind()
    first_in = dict(
        bind.execute(
            sa.select(moves.c.ref_id, sa.func.min(moves.c.at))
            .where(moves.c.kind == 'received')
            .group_by(moves.c.ref_id)
        ).all()
    )
    now = datetime.now(UTC)
    lines: dict[tuple[object, str], list[tuple[datetime, str, object, int]]] = defaultdict(list)
    for shipment_id, item, org_id, accepted in bind.execute(
        sa.select(goods.c.shipment_id, goods.c.item, goods.c.org_id, goods.c.accepted)
    ):
        at = first_in.get(shipment_id) or now
        lines[(org_id, item)].append((at, str(shipment_id), shipment_id, int(accepted)))
    rows = [
        {'s': shipment_id, 'i': item, 'at': at, 'b': before}
        for (org_id, item), line in lines.items()
        for at, shipment_id, before in _placed(line)
    ]
    if rows:
        bind.execute(
            sa.update(goods)
            .where(goods.c.shipment_id == sa.bindparam('s'), goods.c.item == sa.bindparam('i'))
            .values(first_in=sa.bindparam('at'), received_before=sa.bindparam('b')),
            rows,
        )
    with op.batch_alter_table('received_goods') as batch:
        batch.alter_column('first_in', existing_type=UTCDateTime(timezone=True), nullable=False)
        batch.alter_column('received_before', existing_type=sa.BigInteger(), nullable=False)
        batch.alter_column('receipt_sequence', existing_type=sa.Integer(), server_default=None)
    # It serves a community's goods too: the index of the community alone goes.
    op.create_index('ix_received_goods_line', 'received_goods', ['org_id', 'item', 'received_before'], unique=False)
    op.drop_index('ix_received_goods_org', table_name='received_goods')


def _placed(line: list[tuple[datetime, str, object, int]]) -> list[tuple[datetime, object, int]]:
    """Each goods' first-in moment and the units accepted before it in line."""
    placed = []
    before = 0
    for at, _, shipment_id, accepted in sorted(line, key=lambda g: (g[0], g[1])):
        placed.append((at, shipment_id, before))
        before += accepted
    return placed


def downgrade() -> None:
    op.create_index('ix_received_goods_org', 'received_goods', ['org_id'], unique=False)
    op.drop_index('ix_received_goods_line', table_name='received_goods')
    op.drop_column('reach_snapshots', 'whole_sent')
    op.drop_column('received_goods', 'receipt_sequence')
    op.drop_column('received_goods', 'received_before')
    op.drop_column('received_goods', 'first_in')
