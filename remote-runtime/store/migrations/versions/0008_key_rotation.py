"""key rotation: an environment's previous secret key (its hash) and when it stops working

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('environments') as batch:
        batch.add_column(sa.Column('previous_key_hash', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('previous_key_expires_at', sa.Double(), nullable=True))
        batch.add_column(sa.Column('key_rotated_at', sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('environments') as batch:
        batch.drop_column('key_rotated_at')
        batch.drop_column('previous_key_expires_at')
        batch.drop_column('previous_key_hash')
