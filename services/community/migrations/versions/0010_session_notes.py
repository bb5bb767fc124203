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
    pass


def downgrade() -> None:
    pass
