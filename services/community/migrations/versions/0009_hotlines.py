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


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
