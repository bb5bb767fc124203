"""reservations by pledge, lines by best-before: a pledge's cancellation and a change of
its anonymity read its reservations through an index, not every active reservation, and
the hourly sweep of perishables the lines past their date, not every line

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 08:45:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_reservations_pledge", "reservations", ["pledge_id", "status"]),
    ("ix_pledge_lines_best_before", "pledge_lines", ["best_before"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
