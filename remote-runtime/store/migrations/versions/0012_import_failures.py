"""import failures: a dev worker's working copy that does not import, per environment and node

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'import_failures',
        sa.Column('env_id', sa.String(length=32), nullable=False),
        sa.Column('node_id', sa.String(length=128), nullable=False),
        sa.Column('error', sa.Text(), nullable=False),
        sa.Column('failed_at', sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint('env_id', 'node_id'),
    )


def downgrade() -> None:
    op.drop_table('import_failures')
