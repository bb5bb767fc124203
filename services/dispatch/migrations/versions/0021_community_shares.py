"""community shares: the units a community delivered by the shipment that brought them
in a table of their own, a row a shipment and item kept from the latest snapshot that
named it, rather than a list in the community's row replaced whole by every snapshot
(which grew with every shipment the community received); filled from those lists,
each of which named every share (``whole_sequence``)

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 15:00:00

"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | Sequence[str] | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    shares = op.create_table(
        "community_shares",
        sa.Column("shipment_id", sa.Uuid(), nullable=False),
        sa.Column("item", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("receipt_id", sa.Uuid(), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("shipment_id", "item", name=op.f("pk_community_shares")),
    )
    op.create_index("ix_community_shares_org", "community_shares", ["org_id"], unique=False)
    reach = sa.table(
        "community_reach",
        sa.column("org_id", sa.Uuid()),
        sa.column("sequence", sa.BigInteger()),
        sa.column("from_shipments", sa.JSON()),
    )
    bind = op.get_bind()
    rows = [
        {
            "shipment_id": uuid.UUID(str(share["shipment_id"])),
            "item": share["item"],
            "org_id": org_id,
            "receipt_id": uuid.UUID(str(share["receipt_id"])),
            "quantity": int(share["quantity"]),
            "sequence": sequence,
        }
        for org_id, sequence, listed in bind.execute(
            sa.select(reach.c.org_id, reach.c.sequence, reach.c.from_shipments)
        )
        for share in listed or []
    ]
    if rows:
        bind.execute(shares.insert(), rows)
    op.drop_column("community_reach", "from_shipments")
    # Each list held named every share, as of its snapshot.
    op.add_column("community_reach", sa.Column("whole_sequence", sa.BigInteger(), nullable=True))
    bind.execute(sa.text("UPDATE community_reach SET whole_sequence = sequence"))
    with op.batch_alter_table("community_reach") as batch:
        batch.alter_column("whole_sequence", existing_type=sa.BigInteger(), nullable=False)


def downgrade() -> None:
    op.drop_column("community_reach", "whole_sequence")
    op.add_column("community_reach", sa.Column("from_shipments", sa.JSON(), nullable=True))
    shares = sa.table(
        "community_shares",
        sa.column("shipment_id", sa.Uuid()),
        sa.column("item", sa.String()),
        sa.column("org_id", sa.Uuid()),
        sa.column("receipt_id", sa.Uuid()),
        sa.column("quantity", sa.BigInteger()),
    )
    reach = sa.table("community_reach", sa.column("org_id", sa.Uuid()), sa.column("from_shipments", sa.JSON()))
    bind = op.get_bind()
    listed: dict[object, list[dict[str, object]]] = {}
    for shipment_id, item, org_id, receipt_id, quantity in bind.execute(
        sa.select(shares).where(shares.c.quantity > 0).order_by(shares.c.org_id, shares.c.shipment_id, shares.c.item)
    ):
        listed.setdefault(org_id, []).append(
            {"shipment_id": str(shipment_id), "receipt_id": str(receipt_id), "item": item, "quantity": int(quantity)}
        )
    for org_id in bind.execute(sa.select(reach.c.org_id)).scalars().all():
        bind.execute(
            sa.update(reach).where(reach.c.org_id == org_id).values(from_shipments=listed.get(org_id, []))
        )
    with op.batch_alter_table("community_reach") as batch:
        batch.alter_column("from_shipments", existing_type=sa.JSON(), nullable=False)
    op.drop_index("ix_community_shares_org", table_name="community_shares")
    op.drop_table("community_shares")
