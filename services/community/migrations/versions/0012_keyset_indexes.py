"""keyset indexes: a community's cases are listed by (created_at, id) and a hotline's
calls by (at, id); an index in each order serves every page, however deep

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 02:20:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_cases_org_created", "cases", ["org_id", "created_at", "id"], unique=False)
    with op.batch_alter_table("hotline_calls") as batch_op:
        batch_op.drop_index("ix_hotline_calls_hotline_at")
        batch_op.create_index("ix_hotline_calls_hotline_at", ["hotline_id", "at", "id"])


def downgrade() -> None:
    with op.batch_alter_table("hotline_calls") as batch_op:
        batch_op.drop_index("ix_hotline_calls_hotline_at")
        batch_op.create_index("ix_hotline_calls_hotline_at", ["hotline_id", "at"])
    op.drop_index("ix_cases_org_created", table_name="cases")
