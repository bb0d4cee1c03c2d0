"""webhook outbox: events_pending and webhook_url on generations

Revision ID: 9e2d5b7a13c4
Revises: c3f8a2d61e47
Create Date: 2026-12-07 12:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '9e2d5b7a13c4'
down_revision = 'c3f8a2d61e47'
branch_labels = None
depends_on = None

# Partial: only generations whose events are not recorded yet are indexed.
_PENDING = sa.text("events_pending IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table('generations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('events_pending', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('webhook_url', sa.Text(), nullable=True))
        batch_op.create_index(
            'ix_generations_events_pending',
            ['finished_at'],
            unique=False,
            postgresql_where=_PENDING,
            sqlite_where=_PENDING,
        )


def downgrade() -> None:
    with op.batch_alter_table('generations', schema=None) as batch_op:
        batch_op.drop_index(
            'ix_generations_events_pending', postgresql_where=_PENDING, sqlite_where=_PENDING
        )
        batch_op.drop_column('webhook_url')
        batch_op.drop_column('events_pending')
