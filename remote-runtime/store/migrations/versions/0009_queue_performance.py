"""queue performance: per-table autovacuum/analyze settings of the hot tables; queue rate limits

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

# The ready queue fills from empty and drains within minutes, and `queue_keys` is updated by every claim
# and completion: PostgreSQL's defaults (analyse after 10 % + 50 rows changed, vacuum after 20 %) leave
# both on stale statistics and bloated for too long. Absolute thresholds instead of fractions of the table.
HOT_TABLES = {
    "run_queue": "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000, "
                 "autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 2000, "
                 "autovacuum_vacuum_cost_delay = 0",
    "queue_keys": "fillfactor = 50, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000, "
                  "autovacuum_vacuum_cost_delay = 0",
    "runs": "autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_scale_factor = 0.05",
}


def upgrade() -> None:
    with op.batch_alter_table('queues') as batch:
        batch.add_column(sa.Column('rate_limit', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('rate_period', sa.Double(), nullable=True))
        batch.add_column(sa.Column('rate_burst', sa.Integer(), nullable=True))
    with op.batch_alter_table('queue_keys') as batch:
        batch.add_column(sa.Column('rate_tat', sa.Double(), nullable=True))
    with op.batch_alter_table('run_queue') as batch:
        batch.add_column(sa.Column('rate_delayed', sa.Boolean(), nullable=False, server_default=sa.false()))
    if op.get_bind().dialect.name == "postgresql":
        for table, settings in HOT_TABLES.items():
            op.execute(f"ALTER TABLE {table} SET ({settings})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, settings in HOT_TABLES.items():
            names = ", ".join(part.split("=")[0].strip() for part in settings.split(","))
            op.execute(f"ALTER TABLE {table} RESET ({names})")
    with op.batch_alter_table('run_queue') as batch:
        batch.drop_column('rate_delayed')
    with op.batch_alter_table('queue_keys') as batch:
        batch.drop_column('rate_tat')
    with op.batch_alter_table('queues') as batch:
        batch.drop_column('rate_burst')
        batch.drop_column('rate_period')
        batch.drop_column('rate_limit')
