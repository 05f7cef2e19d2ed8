"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('environments',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('key_hint', sa.String(length=16), nullable=False),
    sa.Column('current_version', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_hash')
    )
    op.create_table('queue_keys',
    sa.Column('env_id', sa.String(length=32), nullable=False),
    sa.Column('queue', sa.String(length=128), nullable=False),
    sa.Column('concurrency_key', sa.String(length=256), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.Column('running', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('env_id', 'queue', 'concurrency_key')
    )
    op.create_table('queues',
    sa.Column('env_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('concurrency_limit', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('env_id', 'name')
    )
    op.create_table('run_queue',
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('env_id', sa.String(length=32), nullable=False),
    sa.Column('task_id', sa.String(length=128), nullable=False),
    sa.Column('queue', sa.String(length=128), nullable=False),
    sa.Column('concurrency_key', sa.String(length=256), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('available_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('run_id')
    )
    op.create_index('ix_run_queue_order', 'run_queue', ['env_id', 'rank', 'seq', 'run_id'], unique=False)
    op.create_index('ix_run_queue_seq', 'run_queue', ['env_id', 'seq'], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        # Every run passes through the ready queue once: vacuum it every thousand dead rows rather
        # than every fifth of the table, so dequeue scans do not wade through dead index entries.
        op.execute("ALTER TABLE run_queue SET (autovacuum_vacuum_scale_factor = 0, "
                   "autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_limit = 2000)")

    op.create_table('runs',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('env_id', sa.String(length=32), nullable=False),
    sa.Column('task_id', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=True),
    sa.Column('output', sa.JSON(), nullable=True),
    sa.Column('error', sa.JSON(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('retry', sa.JSON(), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('queue', sa.String(length=128), nullable=False),
    sa.Column('concurrency_key', sa.String(length=256), nullable=True),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=512), nullable=True),
    sa.Column('idempotency_expires_at', sa.Double(), nullable=True),
    sa.Column('version', sa.String(length=64), nullable=True),
    sa.Column('machine', sa.String(length=32), nullable=True),
    sa.Column('max_duration', sa.Double(), nullable=True),
    sa.Column('ttl', sa.Double(), nullable=True),
    sa.Column('execution_ms', sa.BigInteger(), nullable=False),
    sa.Column('replayed_from', sa.String(length=40), nullable=True),
    sa.Column('node_id', sa.String(length=128), nullable=True),
    sa.Column('lease_expires_at', sa.Double(), nullable=True),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.Column('delay_until', sa.Double(), nullable=True),
    sa.Column('expires_at', sa.Double(), nullable=True),
    sa.Column('started_at', sa.Double(), nullable=True),
    sa.Column('completed_at', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_runs_delayed', 'runs', ['delay_until'], unique=False, sqlite_where=sa.text("status = 'DELAYED'"), postgresql_where=sa.text("status = 'DELAYED'"))
    op.create_index('ix_runs_env_id', 'runs', ['env_id', 'id'], unique=False)
    op.create_index('ix_runs_env_status', 'runs', ['env_id', 'status', 'id'], unique=False)
    op.create_index('ix_runs_env_task', 'runs', ['env_id', 'task_id', 'id'], unique=False)
    op.create_index('ix_runs_lease', 'runs', ['lease_expires_at'], unique=False, sqlite_where=sa.text("status = 'EXECUTING'"), postgresql_where=sa.text("status = 'EXECUTING'"))
    op.create_index('ix_runs_ttl', 'runs', ['expires_at'], unique=False, sqlite_where=sa.text("status = 'QUEUED' AND expires_at IS NOT NULL"), postgresql_where=sa.text("status = 'QUEUED' AND expires_at IS NOT NULL"))
    op.create_index('uq_runs_idempotency', 'runs', ['env_id', 'task_id', 'idempotency_key'], unique=True)

    op.create_table('run_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('time', sa.Double(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=True),
    sa.Column('level', sa.String(length=16), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_run_events_run', 'run_events', ['run_id', 'id'], unique=False)

    op.create_table('run_tags',
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('tag', sa.String(length=128), nullable=False),
    sa.Column('env_id', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'tag')
    )
    op.create_index('ix_run_tags_env_tag', 'run_tags', ['env_id', 'tag', 'run_id'], unique=False)

    op.create_table('tasks',
    sa.Column('env_id', sa.String(length=32), nullable=False),
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('queue', sa.String(length=128), nullable=False),
    sa.Column('manifest', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['env_id'], ['environments.id'], ),
    sa.PrimaryKeyConstraint('env_id', 'id')
    )


def downgrade() -> None:
    op.drop_table('tasks')
    op.drop_table('run_tags')
    op.drop_table('run_events')
    op.drop_table('runs')
    op.drop_table('run_queue')
    op.drop_table('queues')
    op.drop_table('queue_keys')
    op.drop_table('environments')
