"""waitpoints and checkpoints

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a node keeps the lease of a run parked in memory (WAITING without CRIU) too
    op.drop_index('ix_runs_lease', table_name='runs')
    op.create_index('ix_runs_lease', 'runs', ['lease_expires_at'], unique=False,
                    sqlite_where=sa.text("status IN ('EXECUTING', 'WAITING')"),
                    postgresql_where=sa.text("status IN ('EXECUTING', 'WAITING')"))
    op.add_column('run_queue', sa.Column('resume', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table('waitpoints',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('env_id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('complete_after', sa.Double(), nullable=True),
    sa.Column('child_run_id', sa.String(length=40), nullable=True),
    sa.Column('output', sa.JSON(), nullable=True),
    sa.Column('timed_out', sa.Boolean(), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=512), nullable=True),
    sa.Column('callback_secret', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('completed_at', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_waitpoints_due', 'waitpoints', ['complete_after'], unique=False,
                    sqlite_where=sa.text("status = 'PENDING'"), postgresql_where=sa.text("status = 'PENDING'"))
    op.create_index('ix_waitpoints_child', 'waitpoints', ['child_run_id'], unique=False)
    op.create_index('uq_waitpoints_idempotency', 'waitpoints', ['env_id', 'idempotency_key'], unique=True)
    op.create_table('run_waits',
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('waitpoint_id', sa.String(length=40), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'waitpoint_id')
    )
    op.create_index('ix_run_waits_waitpoint', 'run_waits', ['waitpoint_id'], unique=False)
    op.create_table('run_checkpoints',
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('image_key', sa.String(length=256), nullable=True),
    sa.Column('node_id', sa.String(length=128), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('run_id')
    )


def downgrade() -> None:
    op.drop_index('ix_runs_lease', table_name='runs')
    op.create_index('ix_runs_lease', 'runs', ['lease_expires_at'], unique=False,
                    sqlite_where=sa.text("status = 'EXECUTING'"), postgresql_where=sa.text("status = 'EXECUTING'"))
    op.drop_column('run_queue', 'resume')
    op.drop_table('run_checkpoints')
    op.drop_index('ix_run_waits_waitpoint', table_name='run_waits')
    op.drop_table('run_waits')
    op.drop_index('uq_waitpoints_idempotency', table_name='waitpoints')
    op.drop_index('ix_waitpoints_child', table_name='waitpoints')
    op.drop_index('ix_waitpoints_due', table_name='waitpoints')
    op.drop_table('waitpoints')
