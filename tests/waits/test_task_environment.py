"""No runtime secret reaches task code: a task returning its environment's names, run under
`outlast runtime --project`, `outlast dev` and as a deployed version, on SQLite and PostgreSQL."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from outlast import RunStatus
from tests.conftest import RuntimeProcess, free_port, runtime_process
from tests.deploy._projects import deploy

TASKS = '''
import os

from outlast import task


@task(id="environment")
def environment(payload):
    secret_free = {"USER_OWN_SETTING", "OUTLAST_PROCESS_ID", "PATH"}
    return {"names": sorted(os.environ), "values": {k: os.environ.get(k) for k in secret_free}}
'''
RUNTIME_SECRETS = {
    "OUTLAST_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "AWS_ACCESS_KEY_ID": "AKIARUNTIMEONLY", "AWS_SECRET_ACCESS_KEY": "runtime-only-s3-secret",
    "AWS_SESSION_TOKEN": "runtime-only-session", "OUTLAST_PUBLIC_TOKEN_SECRET": "runtime-only-public-secret",
}
NEVER = {*RUNTIME_SECRETS, "OUTLAST_DATABASE_URL", "OUTLAST_SECRET_KEY", "OUTLAST_DATA_DIR"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "env-project"
    root.mkdir()
    (root / "tasks.py").write_text(TASKS)
    return root


def runtime_for(tmp_path: Path, store: str | None, project: Path | None, **kwargs) -> RuntimeProcess:
    runtime = runtime_process(tmp_path, store, project=str(project) if project else None,
                              extra_env={**RUNTIME_SECRETS, "USER_OWN_SETTING": "mine"}, **kwargs)
    if store:
        runtime.env["OUTLAST_DATABASE_URL"] = store  # as an operator sets it
    return runtime


def environment_of_a_task(runtime: RuntimeProcess) -> dict:
    client = (runtime if runtime.process else runtime.start()).client()
    try:
        run = client.poll(client.trigger("environment").id, timeout=120)
        assert run.status is RunStatus.COMPLETED, run.error
        return run.output
    finally:
        runtime.close()


def assert_sealed(output: dict) -> None:
    leaked = NEVER & set(output["names"])
    assert not leaked, f"runtime secrets reached the task: {sorted(leaked)}"
    assert output["values"]["OUTLAST_PROCESS_ID"] and output["values"]["PATH"]


def test_runtime_mode(tmp_path, store, project):
    output = environment_of_a_task(runtime_for(tmp_path, store, project))
    assert_sealed(output)
    assert output["values"]["USER_OWN_SETTING"] == "mine", "the operator's own variables still reach tasks"


def test_dev_mode(tmp_path, store, project):
    runtime = runtime_for(tmp_path, None, None)
    port = free_port()
    runtime.args = [sys.executable, "-m", "outlast.cli", "dev", "--project", str(project),
                    "--data-dir", str(tmp_path / "dev-data"), "--port", str(port)]
    runtime.url = f"http://127.0.0.1:{port}"
    output = environment_of_a_task(runtime)
    assert_sealed(output)
    assert output["values"]["USER_OWN_SETTING"] == "mine", "the shell's variables reach tasks under outlast dev"


def test_deployed_mode(tmp_path, store, project):
    runtime = runtime_for(tmp_path, store, None).start()
    deploy(runtime, project)
    output = environment_of_a_task(runtime)
    assert_sealed(output)
