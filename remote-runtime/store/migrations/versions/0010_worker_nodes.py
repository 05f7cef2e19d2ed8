"""worker nodes: each node seen by its heartbeats, and the drain asked of it

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'worker_nodes',
        sa.Column('env_id', sa.String(length=32), nullable=False),
        sa.Column('node_id', sa.String(length=128), nullable=False),
        sa.Column('incarnation', sa.String(length=32), nullable=False),
        sa.Column('last_seen_at', sa.Double(), nullable=False),
        sa.Column('drain_requested_at', sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint('env_id', 'node_id'),
    )


def downgrade() -> None:
    op.drop_table('worker_nodes')
