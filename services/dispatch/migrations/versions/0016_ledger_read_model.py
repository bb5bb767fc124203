"""ledger read model: the public ledger's totals per day, region and item, its flows
per day, region, item, donor and recipient, and its version; supply lines say when
their pledge was first heard of. Filled from the lines already there.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 12:00:00

"""

from collections.abc import Sequence
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.orm import Session

import shared.db

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("supply_lines", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("pledged_at", shared.db.UTCDateTime(timezone=True), nullable=True)
        )
    # The ledger counted a line as pledged when dispatch first took in an event of its
    # pledge (the inbox), else when the line was last synced: the same, now kept.
    bind = op.get_bind()
    op.execute("UPDATE supply_lines SET pledged_at = synced_at")
    first_heard = bind.execute(
        sa.text(
            "SELECT aggregate_id, MIN(received_at) FROM inbox WHERE type IN"
            " ('pledge.created', 'pledge.amended', 'pledge.cancelled') GROUP BY aggregate_id"
        )
    ).all()
    lines = sa.table(
        "supply_lines",
        sa.column("pledge_id", sa.Uuid()),
        sa.column("pledged_at", shared.db.UTCDateTime(timezone=True)),
    )
    updates = []
    for aggregate_id, first in first_heard:
        try:
            pledge_id = uuid.UUID(str(aggregate_id))
        except ValueError:
            continue
        if isinstance(first, str):
            first = datetime.fromisoformat(first)
        if first.tzinfo is None:
            first = first.replace(tzinfo=UTC)
        updates.append({"p": pledge_id, "t": first})
    if updates:
        bind.execute(
            lines.update()
            .where(lines.c.pledge_id == sa.bindparam("p"))
            .values(pledged_at=sa.bindparam("t")),
            updates,
        )
    with op.batch_alter_table("supply_lines", schema=None) as batch_op:
        batch_op.alter_column(
            "pledged_at", existing_type=shared.db.UTCDateTime(timezone=True), nullable=False
        )
    op.create_table(
        "ledger_totals",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("region", sa.String(length=6), nullable=False),
        sa.Column("item", sa.String(length=64), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("city", sa.String(length=4), nullable=False),
        sa.Column("pledged", sa.BigInteger(), nullable=False),
        sa.Column("reserved", sa.BigInteger(), nullable=False),
        sa.Column("shipped", sa.BigInteger(), nullable=False),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "region", "item"),
    )
    op.create_table(
        "ledger_flows",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("region", sa.String(length=6), nullable=False),
        sa.Column("item", sa.String(length=64), nullable=False),
        sa.Column("donor_org_id", sa.Uuid(), nullable=False),
        sa.Column("recipient_org_id", sa.Uuid(), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("shipped", sa.BigInteger(), nullable=False),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "region", "item", "donor_org_id", "recipient_org_id"),
    )
    op.create_index(
        "ix_ledger_flows_pair",
        "ledger_flows",
        ["item", "donor_org_id", "recipient_org_id"],
        unique=False,
    )
    op.create_table(
        "ledger_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("changed_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # Filled from the lines already there, by the code that keeps it from now on.
    from services.dispatch.transparency import totals

    session = Session(bind=op.get_bind())
    totals.rebuild(session)
    session.execute(
        sa.text("INSERT INTO ledger_state (id, version, changed_at) VALUES (1, 1, :now)"),
        {"now": datetime.now(UTC)},
    )
    session.flush()


def downgrade() -> None:
    op.drop_table("ledger_state")
    op.drop_index("ix_ledger_flows_pair", table_name="ledger_flows")
    op.drop_table("ledger_flows")
    op.drop_table("ledger_totals")
    with op.batch_alter_table("supply_lines", schema=None) as batch_op:
        batch_op.drop_column("pledged_at")
