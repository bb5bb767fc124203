"""keyset indexes: the directory, API tokens, webhook subscriptions and deliveries, and
duplicate flags are listed by (created_at, id), each under the filter it is always
read with; an index in that order serves every page, however deep

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 02:20:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_organisations_created", "organisations", ["created_at", "id"]),
    ("ix_api_tokens_user_created", "api_tokens", ["user_id", "created_at", "id"]),
    ("ix_duplicate_flags_created", "duplicate_flags", ["created_at", "id"]),
    (
        "ix_webhook_subscriptions_org_created",
        "webhook_subscriptions",
        ["org_id", "created_at", "id"],
    ),
    (
        "ix_webhook_deliveries_subscription_created",
        "webhook_deliveries",
        ["subscription_id", "created_at", "id"],
    ),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
