"""Runtime settings: command-line flags first, then OUTLAST_* environment variables, then defaults."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path


def env_whole_number(name: str, default: int, minimum: int = 0) -> int:
    """An OUTLAST_* setting that is a whole number of at least `minimum`; ValueError naming it otherwise."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    return value


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


@dataclass
class RuntimeSettings:
    data_dir: Path = field(default_factory=lambda: Path(os.environ.get("OUTLAST_DATA_DIR", ".outlast")))
    database_url: str | None = field(default_factory=lambda: os.environ.get("OUTLAST_DATABASE_URL"))
    host: str = field(default_factory=lambda: os.environ.get("OUTLAST_HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: int(os.environ.get("OUTLAST_PORT", "7070")))
    node_id: str = field(default_factory=lambda: os.environ.get("OUTLAST_NODE_ID", socket.gethostname()))
    slots: int = field(default_factory=lambda: int(os.environ.get("OUTLAST_SLOTS", str(os.cpu_count() or 2))))
    project: Path | None = None
    environments: tuple[str, ...] = ("dev", "prod")  # which environments the built-in supervisor serves
    dev_key: str | None = field(default_factory=lambda: os.environ.get("OUTLAST_SECRET_KEY"))
    max_payload_bytes: int = field(default_factory=lambda: int(os.environ.get("OUTLAST_MAX_PAYLOAD_BYTES",
                                                                               str(10 * 1024 * 1024))))
    lease_seconds: float = field(default_factory=lambda: _env_float("OUTLAST_LEASE_SECONDS", 30.0))
    heartbeat_interval: float = field(default_factory=lambda: _env_float("OUTLAST_HEARTBEAT_INTERVAL", 2.0))
    heartbeat_timeout: float = field(default_factory=lambda: _env_float("OUTLAST_HEARTBEAT_TIMEOUT", 30.0))
    cancel_grace: float = field(default_factory=lambda: _env_float("OUTLAST_CANCEL_GRACE", 5.0))
    # Seconds a stopping (draining) worker lets its attempts end before it checkpoints them to hand them over.
    drain_grace: float = field(default_factory=lambda: _env_float("OUTLAST_DRAIN_GRACE", 10.0))
    # How long an idle supervisor waits for a wake-up before it asks for work again.
    poll_interval: float = field(default_factory=lambda: _env_float("OUTLAST_POLL_INTERVAL", 1.0))
    tick_interval: float = 0.25
    # Where checkpoint images go: a directory, file:///path or s3://bucket/prefix (default <data_dir>/checkpoints).
    checkpoint_store: str | None = field(default_factory=lambda: os.environ.get("OUTLAST_CHECKPOINT_STORE") or None)
    # auto: checkpoint waiting runs with CRIU where it works here, else keep them alive; off: always keep alive.
    checkpoints: str = field(default_factory=lambda: os.environ.get("OUTLAST_CHECKPOINTS", "auto"))
    # Seconds a wait stays in memory before the process is checkpointed (a task's checkpoint_after wins).
    checkpoint_after: float = field(default_factory=lambda: _env_float("OUTLAST_CHECKPOINT_AFTER", 5.0))
    # auto: each attempt's process in a cgroup sized by its machine preset where the host allows; off: no limits.
    limits: str = field(default_factory=lambda: os.environ.get("OUTLAST_LIMITS", "auto"))
    # namespaces: each version's fork server (and its tasks) in its own mount, IPC and UTS namespaces
    # (worker/isolation.py); process: task processes see the host's filesystem.
    isolation: str | None = field(default_factory=lambda: os.environ.get("OUTLAST_ISOLATION") or None)
    # How many processes and threads one task process may have (its cgroup's pids limit).
    pids_limit: int = field(default_factory=lambda: int(os.environ.get("OUTLAST_PIDS_LIMIT", "512")))
    # Task processes keep their resume file and output here; it must be the same path on every node.
    process_dir: Path = field(default_factory=lambda: Path(os.environ.get("OUTLAST_PROCESS_DIR",
                                                                          "/tmp/outlast-processes")))
    # The address the outside world reaches this runtime's API at (for token completion URLs).
    public_url: str | None = field(default_factory=lambda: os.environ.get("OUTLAST_PUBLIC_URL") or None)
    # Where deployment bundles go: a directory, file:///path or s3://bucket/prefix (default <data_dir>/bundles).
    bundle_store: str | None = field(default_factory=lambda: os.environ.get("OUTLAST_BUNDLE_STORE") or None)
    # How often files of versions no run needs any more are garbage-collected.
    deploy_gc_interval: float = field(default_factory=lambda: _env_float("OUTLAST_DEPLOY_GC_INTERVAL", 60.0))
    # Whether this runtime runs deployed versions itself (off: `outlast worker --deployments` nodes do).
    serve_deployments: bool = field(default_factory=lambda: os.environ.get("OUTLAST_SERVE_DEPLOYMENTS", "1") != "0")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'outlast.db').resolve()}"
