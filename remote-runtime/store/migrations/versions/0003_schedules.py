"""cron schedules

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('schedules',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('env_id', sa.String(length=32), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('task_id', sa.String(length=128), nullable=False),
    sa.Column('cron', sa.String(length=256), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('external_id', sa.String(length=256), nullable=True),
    sa.Column('deduplication_key', sa.String(length=256), nullable=True),
    sa.Column('catch_up', sa.String(length=8), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('next_run_at', sa.Double(), nullable=True),
    sa.Column('last_tick_at', sa.Double(), nullable=True),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_schedules_due', 'schedules', ['next_run_at'], unique=False)
    op.create_index('ix_schedules_env', 'schedules', ['env_id', 'id'], unique=False)
    op.create_index('ix_schedules_env_task', 'schedules', ['env_id', 'task_id', 'id'], unique=False)
    op.create_index('ix_schedules_env_external', 'schedules', ['env_id', 'external_id', 'id'], unique=False)
    op.create_index('uq_schedules_dedup', 'schedules', ['env_id', 'type', 'deduplication_key'], unique=True)


def downgrade() -> None:
    op.drop_table('schedules')
