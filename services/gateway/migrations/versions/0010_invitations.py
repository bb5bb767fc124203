"""invitations: an organisation's admin invites people to join it; the first user of
every organisation manages its members (role org_admin)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 22:30:00

"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invitations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("accepted_by", sa.Uuid(), nullable=True),
        sa.Column("revoked_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("invitations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_invitations_org_id"), ["org_id"], unique=False)
    # Each organisation's first user (who registered it) manages its members.
    bind = op.get_bind()
    memberships = sa.table(
        "memberships",
        sa.column("id", sa.Uuid()),
        sa.column("user_id", sa.Uuid()),
        sa.column("org_id", sa.Uuid()),
        sa.column("role", sa.String()),
        sa.column("created_at", shared.db.UTCDateTime(timezone=True)),
    )
    first: dict[object, tuple[object, object]] = {}
    for user_id, org_id, created_at in bind.execute(
        sa.select(memberships.c.user_id, memberships.c.org_id, memberships.c.created_at)
        .where(memberships.c.role != "org_admin")
        .order_by(memberships.c.created_at)
    ):
        first.setdefault(org_id, (user_id, created_at))
    admins = {
        (user_id, org_id)
        for user_id, org_id in bind.execute(
            sa.select(memberships.c.user_id, memberships.c.org_id).where(
                memberships.c.role == "org_admin"
            )
        )
    }
    now = datetime.now(UTC)
    rows = [
        {
            "id": uuid.uuid4(),
            "user_id": user_id,
            "org_id": org_id,
            "role": "org_admin",
            "created_at": now,
        }
        for org_id, (user_id, _at) in first.items()
        if (user_id, org_id) not in admins
    ]
    if rows:
        op.bulk_insert(memberships, rows)


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM memberships WHERE role = 'org_admin'"))
    with op.batch_alter_table("invitations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invitations_org_id"))
    op.drop_table("invitations")
