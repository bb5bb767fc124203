"""lookup indexes: a community's goods received, the deliveries of one distribution and
a helper's sessions of the days ahead, read through an index rather than across every
community's, or every session ever held

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 08:45:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_received_goods_org", "received_goods", ["org_id"]),
    ("ix_household_deliveries_distribution", "household_deliveries", ["distribution_id"]),
    ("ix_help_sessions_helper_starts", "help_sessions", ["helper_id", "starts_at"]),
    ("ix_help_sessions_starts", "help_sessions", ["starts_at"]),
    ("ix_help_requests_user_id", "help_requests", ["user_id"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
