"""A task's environment is built from an allow-list: a task returning its environment, run under
`outlast runtime --project`, `outlast dev` and as a deployed version, on SQLite and PostgreSQL, sees
its project's and environment's variables, the protocol's OUTLAST_* ones, the documented host
variables and what the operator passed by name, and nothing else of the runtime's environment
(no secret, no runtime-only variable), whether it was forked from a fork server or not."""

from __future__ import annotations

import json
import shutil
import sys
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from outlast import RunStatus
from outlast._deployments import Deployments
from outlast.runtime.worker.host_environment import HOST_PREFIXES, HOST_VARIABLES
from tests.conftest import RuntimeProcess, free_port, runtime_process
from tests.deploy._projects import deploy

TASKS = '''
import os
import sys

from outlast import task


@task(id="environment")
def environment(payload):
    # argv[0] is the module the interpreter started with: the fork server's, or the task process's own.
    return {"environ": dict(os.environ), "forked": sys.argv[0].endswith("_zygote.py")}
'''
PYPROJECT = '''
[tool.outlast]
tasks = "tasks"

[tool.outlast.env]
PROJECT_SETTING = "from-the-project"
'''
RUNTIME_SECRETS = {
    "OUTLAST_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "AWS_ACCESS_KEY_ID": "AKIARUNTIMEONLY", "AWS_SECRET_ACCESS_KEY": "runtime-only-s3-secret",
    "AWS_SESSION_TOKEN": "runtime-only-session", "OUTLAST_PUBLIC_TOKEN_SECRET": "runtime-only-public-secret",
    "OUTLAST_DASHBOARD_SECRET": "runtime-only-dashboard-secret", "OUTLAST_WEBHOOK_SECRET": "runtime-only-webhook",
    "SOME_RUNTIME_ONLY_VAR": "runtime-only", "STRIPE_SECRET_KEY": "sk_live_runtime_only",
    "DATABASE_URL": "postgresql://runtime:only@db/app", "HTTPS_PROXY": "http://user:pass@proxy:3128",
    "PYTHONPATH": "/runtime/only/site-packages",
}
NEVER = {*RUNTIME_SECRETS, "OUTLAST_DATABASE_URL", "OUTLAST_SECRET_KEY", "OUTLAST_DATA_DIR", "OUTLAST_TASK_PASS_ENV"}
# What the task protocol hands every task process (core/_process.py reads them).
PROTOCOL = {"OUTLAST_CONTROL_SOCKET", "OUTLAST_PROJECT_DIR", "OUTLAST_TASK_MODULES", "OUTLAST_HEARTBEAT_INTERVAL",
            "OUTLAST_CANCEL_GRACE", "OUTLAST_CHECKPOINT_AFTER", "OUTLAST_PROCESS_ID", "OUTLAST_RESUME_DIR",
            "PYTHONUNBUFFERED"}
PASSED = {"OPERATOR_PASSED_SETTING": "passed-by-name", "OUTLAST_TEST_SCRATCH": None}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "env-project"
    root.mkdir()
    (root / "tasks.py").write_text(TASKS)
    (root / "pyproject.toml").write_text(PYPROJECT)
    return root


def runtime_for(tmp_path: Path, store: str | None, project: Path | None, **kwargs) -> RuntimeProcess:
    runtime = runtime_process(tmp_path, store, project=str(project) if project else None, extra_env={
        **RUNTIME_SECRETS, "OPERATOR_PASSED_SETTING": "passed-by-name",
        # A pattern matching runtime secrets passes none of them; exact names of the operator's own do.
        "OUTLAST_TASK_PASS_ENV": "OUTLAST_TEST_SCRATCH, OPERATOR_PASSED_SETTING, AWS_*, OUTLAST_*",
    }, **kwargs)
    if store:
        runtime.env["OUTLAST_DATABASE_URL"] = store  # as an operator sets it
    return runtime


def environment_of_a_task(runtime: RuntimeProcess, forked: bool = True) -> dict[str, str]:
    client = (runtime if runtime.process else runtime.start()).client()
    try:
        run = client.poll(client.trigger("environment").id, timeout=120)
        assert run.status is RunStatus.COMPLETED, run.error
    finally:
        runtime.close()
    assert run.output["forked"] is forked, "the task process did not start the way this test means to check"
    return run.output["environ"]


def assert_sealed(environ: dict[str, str], own: set[str]) -> None:
    leaked = NEVER & set(environ)
    assert not leaked, f"runtime secrets reached the task: {sorted(leaked)}"
    unexplained = {name for name in environ if name not in HOST_VARIABLES | PROTOCOL | set(PASSED) | own
                   and not name.startswith(HOST_PREFIXES) and not fnmatchcase(name, "AWS_*")}  # AWS_CA_BUNDLE
    assert not unexplained, f"variables from nowhere on the allow-list reached the task: {sorted(unexplained)}"
    assert environ["OUTLAST_PROCESS_ID"] and environ["PATH"]
    assert environ["OPERATOR_PASSED_SETTING"] == "passed-by-name"


def test_runtime_mode(tmp_path, store, project):
    environ = environment_of_a_task(runtime_for(tmp_path, store, project))
    assert_sealed(environ, own={"PROJECT_SETTING"})
    assert environ["PROJECT_SETTING"] == "from-the-project"


def test_runtime_mode_without_a_fork_server(tmp_path, store, project):
    """A fork server that cannot import the project: task processes start from scratch, same environment."""
    (project / "tasks.py").write_text("import os\nif 'OUTLAST_PROCESS_ID' not in os.environ:\n"
                                      "    raise RuntimeError('not in a task process')\n" + TASKS)
    environ = environment_of_a_task(runtime_for(tmp_path, store, project), forked=False)
    assert_sealed(environ, own={"PROJECT_SETTING"})


def test_dev_mode(tmp_path, project):
    runtime = runtime_for(tmp_path, None, None)
    port = free_port()
    runtime.args = [sys.executable, "-m", "outlast.cli", "dev", "--project", str(project),
                    "--data-dir", str(tmp_path / "dev-data"), "--port", str(port)]
    runtime.url = f"http://127.0.0.1:{port}"
    environ = environment_of_a_task(runtime)
    assert_sealed(environ, own={"PROJECT_SETTING"})
    assert environ["PROJECT_SETTING"] == "from-the-project"


def test_deployed_mode(tmp_path, store, project):
    runtime = runtime_for(tmp_path, store, None).start()
    Deployments(runtime.client()).env_set("DEPLOYED_SETTING", "from-the-environment")
    deploy(runtime, project)
    environ = environment_of_a_task(runtime)
    assert_sealed(environ, own={"PROJECT_SETTING", "DEPLOYED_SETTING"})
    assert environ["DEPLOYED_SETTING"] == "from-the-environment"
    assert environ["PROJECT_SETTING"] == "from-the-project"


def test_a_deployments_build_step_sees_no_runtime_secret(tmp_path, project):
    """pip runs a requirement's build backend (user code) while the version's virtualenv is built."""
    out = tmp_path / "probe-out"
    out.mkdir()
    probe = tmp_path / "envprobe"
    shutil.copytree(Path(__file__).parent / "envprobe", probe)
    (project / "requirements.txt").write_text(f"envprobe @ {probe.as_uri()}\n")
    runtime = runtime_for(tmp_path, None, None)
    runtime.env.update({"ENVPROBE_OUT": str(out), "OUTLAST_TASK_PASS_ENV": "ENVPROBE_OUT"})
    runtime.start()
    try:
        deploy(runtime, project)
    finally:
        runtime.close()
    seen = json.loads((out / "build-environment.json").read_text())
    # pip gets the proxies (it downloads through them) and sets a PYTHONPATH of its own for an isolated build.
    leaked = {name for name in NEVER - {"HTTPS_PROXY", "PYTHONPATH"} if name in seen}
    if RUNTIME_SECRETS["PYTHONPATH"] in seen.get("PYTHONPATH", ""):
        leaked.add("PYTHONPATH")
    assert not leaked, f"runtime secrets reached a requirement's build step: {sorted(leaked)}"
    assert "OPERATOR_PASSED_SETTING" not in seen and "PATH" in seen
