"""hotlines: an organisation's hotlines and the calls their operators log

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 01:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import shared.db


# revision identifiers, used by Alembic.
revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
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
    op.create_table('hotlines',
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('phone', sa.String(length=32), nullable=False),
    sa.Column('languages', sa.JSON(), nullable=False),
    sa.Column('region', sa.String(length=6), nullable=False),
    sa.Column('created_by', sa.Uuid(), nullable=True),
    *_entity(),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('org_id', 'name', name='uq_hotline_name')
    )
    with op.batch_alter_table('hotlines', schema=None) as batch_op:
        batch_op.create_index('ix_hotlines_org', ['org_id'], unique=False)

    op.create_table('hotline_calls',
    sa.Column('hotline_id', sa.Uuid(), nullable=False),
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('category', sa.String(length=16), nullable=False),
    sa.Column('community_org_id', sa.Uuid(), nullable=True),
    sa.Column('region', sa.String(length=6), nullable=True),
    sa.Column('minutes', sa.Integer(), nullable=False),
    sa.Column('at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('logged_by', sa.Uuid(), nullable=True),
    sa.Column('became', sa.String(length=16), nullable=True),
    sa.Column('delivery_id', sa.Uuid(), nullable=True),
    sa.Column('case_id', sa.Uuid(), nullable=True),
    sa.Column('help_request_id', sa.Uuid(), nullable=True),
    sa.Column('became_at', shared.db.UTCDateTime(timezone=True), nullable=True),
    *_entity(),
    sa.CheckConstraint('minutes >= 0 AND minutes <= 600', name='ck_hotline_call_minutes'),
    sa.ForeignKeyConstraint(['hotline_id'], ['hotlines.id'], ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(
        ['delivery_id'], ['household_deliveries.id'], ondelete='RESTRICT'
    ),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['help_request_id'], ['help_requests.id'], ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('hotline_calls', schema=None) as batch_op:
        batch_op.create_index('ix_hotline_calls_hotline_at', ['hotline_id', 'at'], unique=False)
        batch_op.create_index('ix_hotline_calls_org_at', ['org_id', 'at'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('hotline_calls', schema=None) as batch_op:
        batch_op.drop_index('ix_hotline_calls_org_at')
        batch_op.drop_index('ix_hotline_calls_hotline_at')
    op.drop_table('hotline_calls')
    with op.batch_alter_table('hotlines', schema=None) as batch_op:
        batch_op.drop_index('ix_hotlines_org')
    op.drop_table('hotlines')
