"""organisations by status: the verification queue reads the pending organisations through
an index, however many were verified before them

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 08:45:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (("ix_organisations_status_created", "organisations", ["status", "created_at", "id"]),)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
