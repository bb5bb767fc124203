"""lookup indexes: a donor's and a recipient's allocations, a carrier's waybill number,
the previews a run supersedes, and the open supply lines of an item are each read through
an index rather than by reading what the table ever held

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 08:45:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | Sequence[str] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_supply_lines_item_pledge_status", "supply_lines", ["item", "pledge_status"]),
    ("ix_allocations_donor_created", "allocations", ["donor_org_id", "created_at", "id"]),
    ("ix_allocations_recipient_created", "allocations", ["recipient_org_id", "created_at", "id"]),
    ("ix_matching_runs_status_created", "matching_runs", ["status", "created_at", "id"]),
    ("ix_shipments_tracking_ref", "shipments", ["tracking_ref"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
