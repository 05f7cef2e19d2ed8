"""attempt resources: CPU time and peak memory of a run's attempts

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('cpu_ms', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('peak_memory_bytes', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('peak_memory_bytes')
        batch.drop_column('cpu_ms')
