"""keyset index of import jobs: an organisation's imports are listed by (created_at,
id), and an index in that order under the organisation serves every page

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 02:20:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_import_jobs_org_created", "import_jobs", ["org_id", "created_at", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_import_jobs_org_created", table_name="import_jobs")
