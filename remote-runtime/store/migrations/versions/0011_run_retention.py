"""run retention: an index of finished runs by the time they finished, for the retention sweep

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

# Partial: only finished runs have completed_at, so the index holds history alone and claims, which
# never read it, pay nothing for it beyond its upkeep when a run finishes.
FINISHED = sa.text("completed_at IS NOT NULL")


def upgrade() -> None:
    op.create_index('ix_runs_finished', 'runs', ['completed_at'], postgresql_where=FINISHED, sqlite_where=FINISHED)


def downgrade() -> None:
    op.drop_index('ix_runs_finished', table_name='runs')
