"""flow control: debounce keys, bulk actions

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('debounce_keys',
    sa.Column('env_id', sa.String(length=32), nullable=False),
    sa.Column('task_id', sa.String(length=128), nullable=False),
    sa.Column('key', sa.String(length=512), nullable=False),
    sa.Column('mode', sa.String(length=8), nullable=False),
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('first_at', sa.Double(), nullable=False),
    sa.Column('window_until', sa.Double(), nullable=False),
    sa.Column('deadline', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('env_id', 'task_id', 'key')
    )
    op.create_index('ix_debounce_keys_window', 'debounce_keys', ['window_until'], unique=False)
    op.create_table('bulk_actions',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('env_id', sa.String(length=32), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('filter', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('processed', sa.Integer(), nullable=False),
    sa.Column('succeeded', sa.Integer(), nullable=False),
    sa.Column('skipped', sa.Integer(), nullable=False),
    sa.Column('cursor', sa.String(length=40), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.Column('completed_at', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_bulk_actions_env', 'bulk_actions', ['env_id', 'id'], unique=False)
    op.create_index('ix_bulk_actions_open', 'bulk_actions', ['id'], unique=False,
                    sqlite_where=sa.text("state != 'COMPLETED'"),
                    postgresql_where=sa.text("state != 'COMPLETED'"))
    op.create_table('bulk_action_runs',
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.PrimaryKeyConstraint('job_id', 'run_id')
    )


def downgrade() -> None:
    op.drop_table('bulk_action_runs')
    op.drop_table('bulk_actions')
    op.drop_table('debounce_keys')
