"""realtime: commit-ordered cursors on run_events, metadata/tag change events, streams

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

`run_events.txid` is the writing transaction's id on PostgreSQL (0 on SQLite, whose writers are
serialized so the row id alone is commit-ordered). Readers order events by (txid, id) and read only
rows of transactions older than the oldest one still running (engine/events.py says why).
Metadata and tag changes of a run become events through triggers, whichever code path writes them.
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

PG_TXID = "pg_current_xact_id()::text::bigint"

SQLITE_TRIGGERS = [
    """CREATE TRIGGER run_metadata_changed AFTER UPDATE OF metadata ON runs
       WHEN old.metadata IS NOT new.metadata
       BEGIN INSERT INTO run_events (run_id, time, kind, message, data, txid)
             VALUES (new.id, new.updated_at, 'metadata', 'metadata changed', '{}', 0); END""",
    """CREATE TRIGGER run_tags_changed AFTER UPDATE OF tags ON runs
       WHEN old.tags IS NOT new.tags
       BEGIN INSERT INTO run_events (run_id, time, kind, message, data, txid)
             VALUES (new.id, new.updated_at, 'tags', 'tags changed', '{}', 0); END""",
]

PG_TRIGGERS = [
    """CREATE FUNCTION outlast_run_changed() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF NEW.metadata::text IS DISTINCT FROM OLD.metadata::text THEN
           INSERT INTO run_events (run_id, time, kind, message, data)
           VALUES (NEW.id, NEW.updated_at, 'metadata', 'metadata changed', '{}');
         END IF;
         IF NEW.tags::text IS DISTINCT FROM OLD.tags::text THEN
           INSERT INTO run_events (run_id, time, kind, message, data)
           VALUES (NEW.id, NEW.updated_at, 'tags', 'tags changed', '{}');
         END IF;
         RETURN NULL;
       END $$""",
    """CREATE TRIGGER runs_changed AFTER UPDATE OF metadata, tags ON runs
       FOR EACH ROW EXECUTE FUNCTION outlast_run_changed()""",
]


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table('run_events') as batch:
        batch.add_column(sa.Column('txid', sa.BigInteger(), nullable=False, server_default=sa.text('0')))
    if postgres:  # existing rows keep 0 (they are older than any transaction from now on)
        op.execute(f"ALTER TABLE run_events ALTER COLUMN txid SET DEFAULT {PG_TXID}")
    op.create_index('ix_run_events_cursor', 'run_events', ['txid', 'id'], unique=False)
    op.create_index('ix_run_events_run_cursor', 'run_events', ['run_id', 'txid', 'id'], unique=False)

    op.create_table('run_streams',
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('env_id', sa.String(length=32), nullable=False),
    sa.Column('chunks', sa.BigInteger(), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'name')
    )
    op.create_index('ix_run_streams_updated', 'run_streams', ['updated_at'], unique=False)
    op.create_table('run_stream_chunks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('txid', sa.BigInteger(), nullable=False, server_default=sa.text('0')),
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=True),
    sa.Column('bytes', sa.Integer(), nullable=False),
    sa.Column('time', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    if postgres:
        op.execute(f"ALTER TABLE run_stream_chunks ALTER COLUMN txid SET DEFAULT {PG_TXID}")
    op.create_index('uq_run_stream_chunks_seq', 'run_stream_chunks', ['run_id', 'name', 'attempt', 'seq'],
                    unique=True)
    op.create_index('ix_run_stream_chunks_cursor', 'run_stream_chunks', ['txid', 'id'], unique=False)
    op.create_index('ix_run_stream_chunks_read', 'run_stream_chunks', ['run_id', 'name', 'txid', 'id'],
                    unique=False)
    for statement in PG_TRIGGERS if postgres else SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS runs_changed ON runs")
        op.execute("DROP FUNCTION IF EXISTS outlast_run_changed()")
    else:
        op.execute("DROP TRIGGER IF EXISTS run_metadata_changed")
        op.execute("DROP TRIGGER IF EXISTS run_tags_changed")
    op.drop_table('run_stream_chunks')
    op.drop_table('run_streams')
    op.drop_index('ix_run_events_run_cursor', table_name='run_events')
    op.drop_index('ix_run_events_cursor', table_name='run_events')
    with op.batch_alter_table('run_events') as batch:
        batch.drop_column('txid')
