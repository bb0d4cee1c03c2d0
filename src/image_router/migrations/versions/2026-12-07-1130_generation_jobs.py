"""generation jobs: async and durable generations (issue #14 sections 2 and 3)

Revision ID: c3f8a2d61e47
Revises: a4c1e7b95d20
Create Date: 2026-12-07 11:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import image_router.db.base


revision = 'c3f8a2d61e47'
down_revision = 'a4c1e7b95d20'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('generation_jobs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('account_id', sa.String(length=36), nullable=False),
    sa.Column('origin', sa.String(length=10), nullable=False),
    sa.Column('modality', sa.String(length=10), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('provider', sa.String(length=50), nullable=True),
    sa.Column('vendor_ref', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('vendor_accepted_at', image_router.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('owner', sa.String(length=64), nullable=True),
    sa.Column('lease_until', image_router.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('deadline_at', image_router.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('progress', sa.Float(), nullable=True),
    sa.Column('result_enc', sa.LargeBinary(), nullable=True),
    sa.Column('result_expires_at', image_router.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('error', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('created_at', image_router.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', image_router.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_generation_jobs'))
    )
    with op.batch_alter_table('generation_jobs', schema=None) as batch_op:
        batch_op.create_index('ix_generation_jobs_account_id_created_at', ['account_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_generation_jobs_state_lease_until', ['state', 'lease_until'], unique=False)
        batch_op.create_index(batch_op.f('ix_generation_jobs_result_expires_at'), ['result_expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('generation_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_generation_jobs_result_expires_at'))
        batch_op.drop_index('ix_generation_jobs_state_lease_until')
        batch_op.drop_index('ix_generation_jobs_account_id_created_at')

    op.drop_table('generation_jobs')
