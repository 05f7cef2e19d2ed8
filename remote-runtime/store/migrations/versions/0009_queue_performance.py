"""queue performance: per-table autovacuum/analyze settings of the hot tables; queue rate limits

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""
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
    if op.get_bind().dialect.name == "postgresql":
        for table, settings in HOT_TABLES.items():
            op.execute(f"ALTER TABLE {table} SET ({settings})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, settings in HOT_TABLES.items():
            names = ", ".join(part.split("=")[0].strip() for part in settings.split(","))
            op.execute(f"ALTER TABLE {table} RESET ({names})")
