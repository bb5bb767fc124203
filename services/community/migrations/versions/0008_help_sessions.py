"""help from people: helpers, requests for help, scheduling runs and sessions

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 23:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import shared.db


# revision identifiers, used by Alembic.
revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _entity() -> list[sa.Column]:
    return [
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('created_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
    ]


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('helpers',
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=True),
    sa.Column('kinds', sa.JSON(), nullable=False),
    sa.Column('topics', sa.JSON(), nullable=False),
    sa.Column('languages', sa.JSON(), nullable=False),
    sa.Column('daily_limit', sa.Integer(), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('availability', sa.JSON(), nullable=False),
    sa.Column('qualifications', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('decision_reason', sa.String(length=500), nullable=True),
    sa.Column('decided_at', shared.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('decided_by', sa.Uuid(), nullable=True),
    sa.Column('registered_by', sa.Uuid(), nullable=True),
    *_entity(),
    sa.CheckConstraint('daily_limit >= 0', name='ck_helper_daily_limit'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('org_id', 'user_id', name='uq_helper_member')
    )
    with op.batch_alter_table('helpers', schema=None) as batch_op:
        batch_op.create_index('ix_helpers_status', ['status'], unique=False)

    op.create_table('help_requests',
    sa.Column('user_id', sa.Uuid(), nullable=True),
    sa.Column('topic', sa.String(length=32), nullable=False),
    sa.Column('urgency', sa.String(length=8), nullable=False),
    sa.Column('priority_group', sa.String(length=24), nullable=True),
    sa.Column('languages', sa.JSON(), nullable=False),
    sa.Column('windows', sa.JSON(), nullable=False),
    sa.Column('crisis', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('contact', sa.String(length=200), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('queued_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('previous_helper_id', sa.Uuid(), nullable=True),
    *_entity(),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('help_requests', schema=None) as batch_op:
        batch_op.create_index(
            'ix_help_requests_status_queued', ['status', 'queued_at'], unique=False
        )

    op.create_table('help_runs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('run_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('assignments', sa.JSON(), nullable=False),
    sa.Column('unassigned', sa.JSON(), nullable=False),
    sa.Column('created_by', sa.Uuid(), nullable=True),
    sa.Column('created_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('approved_by', sa.Uuid(), nullable=True),
    sa.Column('approved_at', shared.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )

    op.create_table('help_sessions',
    sa.Column('helper_id', sa.Uuid(), nullable=False),
    sa.Column('request_id', sa.Uuid(), nullable=False),
    sa.Column('run_id', sa.Uuid(), nullable=True),
    sa.Column('starts_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ends_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('held_start', shared.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.Column('decided_at', shared.db.UTCDateTime(timezone=True), nullable=True),
    *_entity(),
    sa.ForeignKeyConstraint(['helper_id'], ['helpers.id'], ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['request_id'], ['help_requests.id'], ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('helper_id', 'held_start', name='uq_help_session_slot')
    )
    with op.batch_alter_table('help_sessions', schema=None) as batch_op:
        batch_op.create_index('ix_help_sessions_request', ['request_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('help_sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_help_sessions_request')
    op.drop_table('help_sessions')
    op.drop_table('help_runs')
    with op.batch_alter_table('help_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_help_requests_status_queued')
    op.drop_table('help_requests')
    with op.batch_alter_table('helpers', schema=None) as batch_op:
        batch_op.drop_index('ix_helpers_status')
    op.drop_table('helpers')
