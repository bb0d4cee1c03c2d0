"""free tier ip index

Revision ID: 3f7c2a9d41e8
Revises: 6b1928e5af57
Create Date: 2026-11-28 09:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '3f7c2a9d41e8'
down_revision = '6b1928e5af57'
branch_labels = None
depends_on = None

# Partial: only `:free` rows are indexed, so paid generations pay nothing for it.
# `\:` keeps `:free` from being read as a bind parameter.
_FREE = sa.text(r"model LIKE '%\:free%'")


def upgrade() -> None:
    with op.batch_alter_table('generations', schema=None) as batch_op:
        batch_op.create_index(
            'ix_generations_free_ip_created_at',
            ['ip', 'created_at'],
            unique=False,
            postgresql_where=_FREE,
            sqlite_where=_FREE,
        )


def downgrade() -> None:
    with op.batch_alter_table('generations', schema=None) as batch_op:
        batch_op.drop_index('ix_generations_free_ip_created_at')
