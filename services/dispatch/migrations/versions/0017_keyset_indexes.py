"""keyset indexes: needs are listed by (created_at, id), and an index in that order
serves every page, however deep

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 13:00:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_needs_created", "needs", ["created_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_needs_created", table_name="needs")
