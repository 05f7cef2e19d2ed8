"""deployments, env vars, run_queue.version

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('deployments',
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('env_id', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('git_commit', sa.String(length=64), nullable=True),
    sa.Column('git_branch', sa.String(length=256), nullable=True),
    sa.Column('bundle_key', sa.String(length=256), nullable=False),
    sa.Column('bundle_sha256', sa.String(length=64), nullable=False),
    sa.Column('bundle_bytes', sa.BigInteger(), nullable=False),
    sa.Column('files', sa.Integer(), nullable=False),
    sa.Column('requirements_hash', sa.String(length=64), nullable=True),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('manifests', sa.JSON(), nullable=False),
    sa.Column('step', sa.String(length=64), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('built_at', sa.Double(), nullable=True),
    sa.Column('promoted_at', sa.Double(), nullable=True),
    sa.Column('collected_at', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('version')
    )
    op.create_index('ix_deployments_env', 'deployments', ['env_id', 'created_at'], unique=False)
    op.create_index('ix_deployments_commit', 'deployments', ['env_id', 'git_commit'], unique=False)
    op.create_table('env_vars',
    sa.Column('env_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('hint', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('env_id', 'name')
    )
    with op.batch_alter_table('run_queue') as batch:
        batch.add_column(sa.Column('version', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('run_queue') as batch:
        batch.drop_column('version')
    op.drop_table('env_vars')
    op.drop_index('ix_deployments_commit', table_name='deployments')
    op.drop_index('ix_deployments_env', table_name='deployments')
    op.drop_table('deployments')
