"""Tables of the runtime's store. Changes go through an Alembic migration (migrations/versions).

Times are stored as UNIX seconds (double precision) so that SQLite and PostgreSQL compare and
index them the same way.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

Time = sa.Double
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER only

environments = sa.Table(
    "environments",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # the slug: dev, prod
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("key_hint", sa.String(16), nullable=False),
    sa.Column("current_version", sa.String(64)),
    sa.Column("created_at", Time, nullable=False),
    # After a rotation the previous key keeps working until previous_key_expires_at (migration 0008).
    sa.Column("previous_key_hash", sa.String(64)),
    sa.Column("previous_key_expires_at", Time),
    sa.Column("key_rotated_at", Time),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("env_id", sa.String(32), sa.ForeignKey("environments.id"), primary_key=True),
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("queue", sa.String(128), nullable=False),
    sa.Column("manifest", sa.JSON, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
)

queues = sa.Table(
    "queues",
    metadata,
    sa.Column("env_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("concurrency_limit", sa.Integer),
    # A rate limit (wire.RateLimit): at most rate_limit starts per rate_period seconds, per concurrency key.
    sa.Column("rate_limit", sa.Integer),
    sa.Column("rate_period", sa.Double),
    sa.Column("rate_burst", sa.Integer),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # time-ordered, so listing sorts by id
    sa.Column("env_id", sa.String(32), nullable=False),
    sa.Column("task_id", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("payload", sa.JSON),
    sa.Column("output", sa.JSON),
    sa.Column("error", sa.JSON),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("retry", sa.JSON, nullable=False),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("queue", sa.String(128), nullable=False),
    sa.Column("concurrency_key", sa.String(256)),
    sa.Column("priority", sa.Integer, nullable=False, default=0),
    sa.Column("idempotency_key", sa.String(512)),
    sa.Column("idempotency_expires_at", Time),
    sa.Column("version", sa.String(64)),
    sa.Column("machine", sa.String(32)),
    sa.Column("max_duration", sa.Double),
    sa.Column("ttl", sa.Double),
    sa.Column("execution_ms", sa.BigInteger, nullable=False, default=0),
    sa.Column("cpu_ms", sa.BigInteger),  # CPU time of its attempts, from their cgroups
    sa.Column("peak_memory_bytes", sa.BigInteger),  # the highest peak of its attempts
    sa.Column("replayed_from", sa.String(40)),
    sa.Column("node_id", sa.String(128)),
    sa.Column("lease_expires_at", Time),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("delay_until", Time),
    sa.Column("expires_at", Time),
    sa.Column("started_at", Time),
    sa.Column("completed_at", Time),
    sa.Index("ix_runs_env_id", "env_id", "id"),
    sa.Index("ix_runs_env_status", "env_id", "status", "id"),
    sa.Index("ix_runs_env_task", "env_id", "task_id", "id"),
    sa.Index("uq_runs_idempotency", "env_id", "task_id", "idempotency_key", unique=True),
    # Partial indexes: the maintenance loop's scans touch only live runs, never history.
    sa.Index("ix_runs_delayed", "delay_until", sqlite_where=sa.text("status = 'DELAYED'"),
             postgresql_where=sa.text("status = 'DELAYED'")),
    sa.Index("ix_runs_ttl", "expires_at", sqlite_where=sa.text("status = 'QUEUED' AND expires_at IS NOT NULL"),
             postgresql_where=sa.text("status = 'QUEUED' AND expires_at IS NOT NULL")),
    sa.Index("ix_runs_lease", "lease_expires_at", sqlite_where=sa.text("status IN ('EXECUTING', 'WAITING')"),
             postgresql_where=sa.text("status IN ('EXECUTING', 'WAITING')")),
    # History by the time it finished, for the retention sweep (store/retention.py) alone.
    sa.Index("ix_runs_finished", "completed_at", sqlite_where=sa.text("completed_at IS NOT NULL"),
             postgresql_where=sa.text("completed_at IS NOT NULL")),
)

run_tags = sa.Table(
    "run_tags",
    metadata,
    sa.Column("run_id", sa.String(40), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tag", sa.String(128), primary_key=True),
    sa.Column("env_id", sa.String(32), nullable=False),
    sa.Index("ix_run_tags_env_tag", "env_id", "tag", "run_id"),
)

run_events = sa.Table(
    "run_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(40), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("time", Time, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("attempt", sa.Integer),
    sa.Column("level", sa.String(16)),
    sa.Column("message", sa.Text, nullable=False, default=""),
    sa.Column("data", sa.JSON),
    # The writing transaction's id on PostgreSQL (0 on SQLite): events are read in (txid, id) order,
    # which is commit order for what engine/events.py reads (migration 0007).
    sa.Column("txid", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Index("ix_run_events_run", "run_id", "id"),
    sa.Index("ix_run_events_cursor", "txid", "id"),
    sa.Index("ix_run_events_run_cursor", "run_id", "txid", "id"),
)

# --- streams -------------------------------------------------------------------------------------
# Named streams a task writes (engine/streams.py): one row per (run, name) with its totals, for the
# size limit and retention, and the chunks, read in the same (txid, id) order as run_events.
run_streams = sa.Table(
    "run_streams",
    metadata,
    sa.Column("run_id", sa.String(40), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("env_id", sa.String(32), nullable=False),
    sa.Column("chunks", sa.BigInteger, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Index("ix_run_streams_updated", "updated_at"),
)

run_stream_chunks = sa.Table(
    "run_stream_chunks",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("txid", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("run_id", sa.String(40), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),  # the writer's count: a repeated append is ignored
    sa.Column("data", sa.JSON),
    sa.Column("bytes", sa.Integer, nullable=False),
    sa.Column("time", Time, nullable=False),
    sa.Index("uq_run_stream_chunks_seq", "run_id", "name", "attempt", "seq", unique=True),
    sa.Index("ix_run_stream_chunks_cursor", "txid", "id"),
    sa.Index("ix_run_stream_chunks_read", "run_id", "name", "txid", "id"),
)

# The hot table: one row per run that is ready (or retrying soon); deleted when claimed, so
# dequeue never reads finished runs however many there are.
run_queue = sa.Table(
    "run_queue",
    metadata,
    sa.Column("run_id", sa.String(40), primary_key=True),
    sa.Column("env_id", sa.String(32), nullable=False),
    sa.Column("task_id", sa.String(128), nullable=False),
    sa.Column("queue", sa.String(128), nullable=False),
    sa.Column("concurrency_key", sa.String(256), nullable=False),  # "" when the run has none
    sa.Column("rank", sa.Integer, nullable=False),  # -priority: one ascending index serves the order
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("available_at", Time, nullable=False),
    sa.Column("resume", sa.Boolean, nullable=False, default=False),  # a checkpointed run continues its attempt
    sa.Column("version", sa.String(64)),  # a deployed version only its workers may claim; NULL: working-copy runs
    # Set once its queue's rate limit pushed `available_at` back (the timeline says so once, not per claim).
    sa.Column("rate_delayed", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    sa.Index("ix_run_queue_order", "env_id", "rank", "seq", "run_id"),
    sa.Index("ix_run_queue_seq", "env_id", "seq"),
)

# Per (queue, concurrency key): the last fairness sequence number handed out and how many of
# its runs execute now. Updated in the same transaction as every claim and release.
queue_keys = sa.Table(
    "queue_keys",
    metadata,
    sa.Column("env_id", sa.String(32), primary_key=True),
    sa.Column("queue", sa.String(128), primary_key=True),
    sa.Column("concurrency_key", sa.String(256), primary_key=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False, default=0),
    sa.Column("running", sa.Integer, nullable=False, default=0),
    # The rate limit's GCRA state: the theoretical time of the next start at the steady rate (NULL: none yet).
    sa.Column("rate_tat", sa.Double),
)

# --- waits ---------------------------------------------------------------------------------------
# A waitpoint is something a run can wait for: a point in time, another run finishing, or a token
# that a human or a third party completes. `run_waits` links each waiting run to the waitpoints
# that block it; the run goes back to the queue once all of them are complete.
waitpoints = sa.Table(
    "waitpoints",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("env_id", sa.String(32), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # datetime | run | token
    sa.Column("status", sa.String(16), nullable=False),  # PENDING | COMPLETED
    sa.Column("complete_after", Time),  # a datetime's end, a token's timeout
    sa.Column("child_run_id", sa.String(40)),
    sa.Column("output", sa.JSON),
    sa.Column("timed_out", sa.Boolean, nullable=False, default=False),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("idempotency_key", sa.String(512)),
    sa.Column("callback_secret", sa.String(64)),  # a token's completion URL carries it: no API key needed
    sa.Column("created_at", Time, nullable=False),
    sa.Column("completed_at", Time),
    sa.Index("ix_waitpoints_due", "complete_after", sqlite_where=sa.text("status = 'PENDING'"),
             postgresql_where=sa.text("status = 'PENDING'")),
    sa.Index("ix_waitpoints_child", "child_run_id"),
    sa.Index("uq_waitpoints_idempotency", "env_id", "idempotency_key", unique=True),
)

run_waits = sa.Table(
    "run_waits",
    metadata,
    sa.Column("run_id", sa.String(40), primary_key=True),
    sa.Column("waitpoint_id", sa.String(40), primary_key=True),
    sa.Index("ix_run_waits_waitpoint", "waitpoint_id"),
)

# Where the process image of a WAITING (checkpointed) run is, and how it got there.
run_checkpoints = sa.Table(
    "run_checkpoints",
    metadata,
    sa.Column("run_id", sa.String(40), primary_key=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),  # criu | kept_alive
    sa.Column("image_key", sa.String(256)),
    sa.Column("node_id", sa.String(128)),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Column("created_at", Time, nullable=False),
)

# Cron schedules. `next_run_at` is NULL while a schedule is inactive, so the scheduler's range scan
# on ix_schedules_due reads only active schedules that are due, however many others there are.
schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("env_id", sa.String(32), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),  # DECLARATIVE or IMPERATIVE
    sa.Column("task_id", sa.String(128), nullable=False),
    sa.Column("cron", sa.String(256), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("external_id", sa.String(256)),
    # Imperative: the user's key; declarative: the task id (one declarative schedule per task).
    sa.Column("deduplication_key", sa.String(256)),
    sa.Column("catch_up", sa.String(8), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("next_run_at", Time),
    sa.Column("last_tick_at", Time),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Index("ix_schedules_due", "next_run_at"),
    sa.Index("ix_schedules_env", "env_id", "id"),
    sa.Index("ix_schedules_env_task", "env_id", "task_id", "id"),
    sa.Index("ix_schedules_env_external", "env_id", "external_id", "id"),
    sa.Index("uq_schedules_dedup", "env_id", "type", "deduplication_key", unique=True),
)

# --- deployments ---------------------------------------------------------------------------------
# One row per `outlast deploy`: an immutable version (YYYYMMDD.N) of one environment's task code.
deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("env_id", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # BUILDING | READY | FAILED
    sa.Column("git_commit", sa.String(64)),
    sa.Column("git_branch", sa.String(256)),
    sa.Column("bundle_key", sa.String(256), nullable=False),
    sa.Column("bundle_sha256", sa.String(64), nullable=False),
    sa.Column("bundle_bytes", sa.BigInteger, nullable=False),
    sa.Column("files", sa.Integer, nullable=False),
    sa.Column("requirements_hash", sa.String(64)),
    sa.Column("config", sa.JSON, nullable=False),  # modules, env, python of its [tool.outlast]
    sa.Column("manifests", sa.JSON, nullable=False),  # each task's TaskManifest, recorded by the import step
    sa.Column("step", sa.String(64), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("built_at", Time),
    sa.Column("promoted_at", Time),
    sa.Column("collected_at", Time),  # its unpacked files were garbage-collected
    sa.Index("ix_deployments_env", "env_id", "created_at"),
    sa.Index("ix_deployments_commit", "env_id", "git_commit"),
)

# Environment variables of an environment, injected into its task processes; values Fernet-encrypted.
env_vars = sa.Table(
    "env_vars",
    metadata,
    sa.Column("env_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("hint", sa.String(16), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
)

# --- flow control --------------------------------------------------------------------------------
# One row per debounce key of a task: the run that triggers with this key collapse into while its
# window is open. The row is the lock point that makes debounce exact across runtimes.
debounce_keys = sa.Table(
    "debounce_keys",
    metadata,
    sa.Column("env_id", sa.String(32), primary_key=True),
    sa.Column("task_id", sa.String(128), primary_key=True),
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("mode", sa.String(8), nullable=False),  # trailing | leading
    sa.Column("run_id", sa.String(40), nullable=False),
    sa.Column("first_at", Time, nullable=False),
    sa.Column("window_until", Time, nullable=False),  # later triggers join until then (trailing: the run's start)
    sa.Column("deadline", Time),  # first trigger + max_delay: the window never reaches past it
    sa.Index("ix_debounce_keys_window", "window_until"),
)

# A bulk cancel or replay: the filter, and how far the maintenance loop got (runs are walked newest
# first; a run leaves `bulk_action_runs` in the same transaction that cancels or replays it).
bulk_actions = sa.Table(
    "bulk_actions",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("env_id", sa.String(32), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),  # cancel | replay
    sa.Column("filter", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # PENDING | RUNNING | COMPLETED
    sa.Column("total", sa.Integer, nullable=False),  # runs matching when the job was created
    sa.Column("processed", sa.Integer, nullable=False),
    sa.Column("succeeded", sa.Integer, nullable=False),
    sa.Column("skipped", sa.Integer, nullable=False),
    sa.Column("cursor", sa.String(40)),  # the last run handled (None: none yet)
    sa.Column("error", sa.Text),  # why the last skipped run was skipped
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("completed_at", Time),
    sa.Index("ix_bulk_actions_env", "env_id", "id"),
    sa.Index("ix_bulk_actions_open", "id", sqlite_where=sa.text("state != 'COMPLETED'"),
             postgresql_where=sa.text("state != 'COMPLETED'")),
)

# The runs a bulk action still has to handle, taken when it was created (so the replays it makes, and
# runs created later, are never its own); each leaves with the transaction that handles it.
bulk_action_runs = sa.Table(
    "bulk_action_runs",
    metadata,
    sa.Column("job_id", sa.String(40), primary_key=True),
    sa.Column("run_id", sa.String(40), primary_key=True),
)

# The worker nodes seen by their heartbeats, per environment they serve (migration 0010): what
# `outlast worker drain` names, and where the drain request waits for the node's next heartbeat.
# `incarnation` is the node process's own token: a node started again under the same id is not drained.
worker_nodes = sa.Table(
    "worker_nodes",
    metadata,
    sa.Column("env_id", sa.String(32), primary_key=True),
    sa.Column("node_id", sa.String(128), primary_key=True),
    sa.Column("incarnation", sa.String(32), nullable=False),
    sa.Column("last_seen_at", Time, nullable=False),
    sa.Column("drain_requested_at", Time),
)

# A dev worker's working copy that does not import (`outlast dev --api-url` after a broken save), until
# the node's next good registration: triggers of tasks it does not serve answer 409 naming the error.
import_failures = sa.Table(
    "import_failures",
    metadata,
    sa.Column("env_id", sa.String(32), primary_key=True),
    sa.Column("node_id", sa.String(128), primary_key=True),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("failed_at", Time, nullable=False),
)
