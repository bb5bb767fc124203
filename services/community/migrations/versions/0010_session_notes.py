"""help sessions: notes, missed sessions, contact through a provider

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 01:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import shared.db


# revision identifiers, used by Alembic.
revision: str = '0010'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('help_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('org_id', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('first_request_id', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('follow_token_hash', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_help_requests_follow_token', ['follow_token_hash'])
    with op.batch_alter_table('help_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('edited_by', sa.Uuid(), nullable=True))
        batch_op.add_column(
            sa.Column('edited_at', shared.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column('revision', sa.Integer(), server_default='1', nullable=False)
        )
    with op.batch_alter_table('help_sessions', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('closed_at', shared.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column('closed_by', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('minutes', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('missed_by', sa.String(length=8), nullable=True))

    op.create_table('help_session_notes',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('session_id', sa.Uuid(), nullable=False),
    sa.Column('helper_id', sa.Uuid(), nullable=False),
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('follow_up', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('written_by', sa.Uuid(), nullable=True),
    sa.Column('written_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['help_sessions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('session_id', name='uq_help_session_note')
    )
    with op.batch_alter_table('help_session_notes', schema=None) as batch_op:
        batch_op.create_index('ix_help_session_notes_written', ['written_at'], unique=False)
        batch_op.create_index('ix_help_session_notes_org', ['org_id'], unique=False)

    op.create_table('help_connections',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('session_id', sa.Uuid(), nullable=False),
    sa.Column('provider', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('reference', sa.String(length=200), nullable=True),
    sa.Column('room_url', sa.String(length=500), nullable=True),
    sa.Column('created_by', sa.Uuid(), nullable=True),
    sa.Column('created_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['help_sessions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('help_connections', schema=None) as batch_op:
        batch_op.create_index('ix_help_connections_session', ['session_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('help_connections', schema=None) as batch_op:
        batch_op.drop_index('ix_help_connections_session')
    op.drop_table('help_connections')
    with op.batch_alter_table('help_session_notes', schema=None) as batch_op:
        batch_op.drop_index('ix_help_session_notes_org')
        batch_op.drop_index('ix_help_session_notes_written')
    op.drop_table('help_session_notes')
    with op.batch_alter_table('help_sessions', schema=None) as batch_op:
        batch_op.drop_column('missed_by')
        batch_op.drop_column('minutes')
        batch_op.drop_column('closed_by')
        batch_op.drop_column('closed_at')
    with op.batch_alter_table('help_runs', schema=None) as batch_op:
        batch_op.drop_column('revision')
        batch_op.drop_column('edited_at')
        batch_op.drop_column('edited_by')
    with op.batch_alter_table('help_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_help_requests_follow_token')
        batch_op.drop_column('follow_token_hash')
        batch_op.drop_column('first_request_id')
        batch_op.drop_column('org_id')
