"""A cluster as real processes: one API runtime (no worker of its own) on a fresh PostgreSQL database
and one S3 (moto's server) per test module, and worker nodes (`outlast worker`), each in its own
network namespace (see netns.py), started per test. Everything is torn down whatever happens."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from outlast import Client
from tests.cluster.netns import Namespace, Network, network
from tests.conftest import (
    PG_ADMIN_URL,
    PROJECTS,
    S3_ENV,
    SECRET_KEY,
    RuntimeProcess,
    _create_pg_database,
    _drop_pg_database,
    moto_s3,
    runtime_process,
    wait_for,
)

CHECKPOINTS = {"OUTLAST_CHECKPOINT_MIN_FREE_MB": "0"}  # checkpoint on a nearly full disk too
# How many runs the drain test and the upgrade drill move: small by default, so that the suite stays
# fast; the sizes are OUTLAST_CLUSTER_DRAIN_RUNS=20 OUTLAST_CLUSTER_DRILL_RUNS=50 (docs/cluster.md).
DRAIN_RUNS = int(os.environ.get("OUTLAST_CLUSTER_DRAIN_RUNS", "3"))
DRILL_RUNS = int(os.environ.get("OUTLAST_CLUSTER_DRILL_RUNS", "4"))
LEASE_SECONDS = 3.0  # short, so a lost node's attempts come back soon
BUCKET = "outlast-cluster"
NODE_ENV = {"OUTLAST_LEASE_SECONDS": str(LEASE_SECONDS), "OUTLAST_HEARTBEAT_INTERVAL": "0.5",
            "OUTLAST_CANCEL_GRACE": "2", "OUTLAST_TASK_PASS_ENV": "OUTLAST_TEST_SCRATCH"}


def s3_env(endpoint: str) -> dict[str, str]:
    return {**S3_ENV, "OUTLAST_CHECKPOINT_STORE": f"s3://{BUCKET}/checkpoints", "OUTLAST_S3_ENDPOINT_URL": endpoint}


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    name = _create_pg_database()
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    _drop_pg_database(name)


@pytest.fixture(scope="module")
def s3_endpoint(bridge: Network) -> Iterator[str]:
    """moto's S3 server on the bridge's address: the nodes' loopback is their namespace's own."""
    with moto_s3(BUCKET, host=bridge.host_address) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def bridge() -> Iterator[Network]:
    with network() as made:
        yield made


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, database_url: str, bridge: Network,
        s3_endpoint: str) -> Iterator[RuntimeProcess]:
    """The API runtime, on the bridge's address so that the namespaces reach it; it runs no tasks itself
    (it knows the checkpoint store: it deletes the images of runs that will never resume)."""
    where = tmp_path_factory.mktemp("api")
    runtime = runtime_process(where, database_url, project=None, node_id="api", log_name="api.log",
                              extra_env={**NODE_ENV, **s3_env(s3_endpoint), "OUTLAST_SERVE_DEPLOYMENTS": "0"},
                              extra_args=["--host", bridge.host_address])
    port = runtime.args[runtime.args.index("--port") + 1]
    runtime = dataclasses.replace(runtime, url=f"http://{bridge.host_address}:{port}")
    runtime.start()
    yield runtime
    runtime.close()


@dataclass
class WorkerNode:
    """`outlast worker` inside its own network namespace."""

    node_id: str
    namespace: Namespace
    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None

    def start(self) -> WorkerNode:
        return self.launch().wait_serving()

    def launch(self) -> WorkerNode:
        log = open(self.log_path, "a")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(self.namespace.command(self.args), env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_serving(self) -> WorkerNode:
        wait_for(lambda: f"outlast worker {self.node_id} serving" in self.log() or self._exited(), timeout=60,
                 message=f"worker {self.node_id} to serve")
        return self

    def _exited(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"worker {self.node_id} exited with {self.process.returncode}:\n{self.log()}")
        return False

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the node's supervisor (as a power loss would end it); its task processes notice and exit."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def drain(self, grace: float = 120) -> None:
        """SIGTERM to the supervisor alone (as an orchestrator stopping its main process): it drains;
        SIGKILL for the whole group if it is not gone within `grace` seconds."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, grace: float = 20) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def partition(self) -> None:
        self.namespace.partition()

    def heal(self) -> None:
        self.namespace.heal()


@dataclass
class Cluster:
    api: RuntimeProcess
    bridge: Network
    root: Path
    scratch: Path
    s3_endpoint: str
    nodes: list[WorkerNode] = field(default_factory=list)

    def client(self, secret_key: str = SECRET_KEY) -> Client:
        return self.api.client(secret_key)

    def progress(self, run_id: str) -> list[tuple[int, int]]:
        """The (attempt, step) marks a `count` run wrote so far (tests/projects/cluster)."""
        path = self.scratch / f"{run_id}.progress"
        lines = path.read_text().splitlines() if path.exists() else []
        return [(int(attempt), int(step)) for attempt, step in (line.split() for line in lines)]

    def cli(self, *args: str, secret_key: str = SECRET_KEY) -> subprocess.CompletedProcess[str]:
        """`outlast ARGS` against the cluster's runtime, with an environment's key (dev's by default)."""
        env = {**os.environ, "OUTLAST_API_URL": self.api.url, "OUTLAST_SECRET_KEY": secret_key, "COLUMNS": "200"}
        return subprocess.run([sys.executable, "-m", "outlast.cli", *args], env=env, capture_output=True, text=True,
                              timeout=300)

    def start_nodes(self, node_ids: list[str], **options: Any) -> list[WorkerNode]:
        """Several nodes (`start_node`'s options), started at once."""
        nodes = [self.start_node(node_id, wait=False, **options) for node_id in node_ids]
        return [node.wait_serving() for node in nodes]

    def start_node(self, node_id: str, *, project: str | None = "cluster", slots: int = 2,
                   extra_env: dict[str, str] | None = None, data_dir: Path | None = None,
                   log_name: str | None = None, secret_key: str = SECRET_KEY, wait: bool = True) -> WorkerNode:
        """`outlast worker` on `project`, or on the deployed versions (`--deployments`) with `project=None`;
        returns once it serves (at once without `wait`)."""
        namespace = self.bridge.add_namespace()
        data_dir = data_dir or self.root / node_id / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        code = ["--project", str(PROJECTS / project)] if project is not None else ["--deployments"]
        args = [sys.executable, "-m", "outlast.cli", "worker", "--api-url", self.api.url, "--secret-key", secret_key,
                *code, "--data-dir", str(data_dir), "--slots", str(slots), "--node-id", node_id]
        env = {**os.environ, **NODE_ENV, "OUTLAST_TEST_SCRATCH": str(self.scratch),
               # the same path on every node, as the runtime requires (a restore finds its resume file there)
               "OUTLAST_PROCESS_DIR": str(self.root / "processes"), **(extra_env or {})}
        for name in ("OUTLAST_DATABASE_URL", "OUTLAST_SECRET_KEY"):
            env.pop(name, None)
        node = WorkerNode(node_id=node_id, namespace=namespace, args=args, env=env,
                          log_path=self.root / f"{log_name or node_id}.log")
        self.nodes.append(node)
        return node.start() if wait else node.launch()

    def s3_env(self, endpoint: str | None = None) -> dict[str, str]:
        """What a node needs to keep its checkpoint images in the cluster's S3 bucket (at `endpoint`)."""
        return s3_env(endpoint or self.s3_endpoint)

    def close(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.kill()
        self.bridge.remove_namespaces()


@pytest.fixture
def cluster(api: RuntimeProcess, bridge: Network, tmp_path: Path, s3_endpoint: str) -> Iterator[Cluster]:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    made = Cluster(api=api, bridge=bridge, root=tmp_path, scratch=scratch, s3_endpoint=s3_endpoint)
    try:
        yield made
    finally:
        made.close()
