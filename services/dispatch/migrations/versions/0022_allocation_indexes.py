"""allocation indexes: an allocation of a pledge or of a need is found through its line
(``ix_allocations_pledge_line``, ``ix_allocations_need_line``, and the lines' own
indexes on their pledge and need), so the indexes on the allocations' own pledge and
need columns go: each was one more index to write with every allocation proposed (a
matching run proposes tens of thousands at once) and served nothing the lines' did not

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 18:50:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | Sequence[str] | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_allocations_pledge_id", ["pledge_id"]),
    ("ix_allocations_need_id", ["need_id"]),
)


def upgrade() -> None:
    for name, _columns in INDEXES:
        op.drop_index(name, table_name="allocations")


def downgrade() -> None:
    for name, columns in reversed(INDEXES):
        op.create_index(name, "allocations", columns, unique=False)
