"""`outlast runtime`, `outlast dev` (embedded and against a remote runtime) and `outlast worker`."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from outlast import Client, RunStatus
from tests.conftest import ROOT, SECRET_KEY, free_port, stop_process, wait_for

QUICKSTART = ROOT / "examples" / "quickstart"


def _spawn(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "outlast.cli", *args], cwd=cwd, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait_tasks(url: str, key: str, expected: str, process: subprocess.Popen, log: Path) -> None:
    def ready() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            response = httpx.get(url + "/api/v1/tasks", headers={"Authorization": f"Bearer {key}"}, timeout=2)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and expected in {t["id"] for t in response.json()}

    wait_for(ready, timeout=60, message=f"task {expected} registered")


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    target = tmp_path / "project"
    shutil.copytree(QUICKSTART, target, ignore=shutil.ignore_patterns(".outlast", "__pycache__"))
    return target


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLAST_")}
    env.update(extra)
    return env


def test_first_start_prints_keys_and_stores_only_hashes(tmp_path: Path):
    port = free_port()
    log = tmp_path / "runtime.log"
    process = _spawn(["runtime", "--port", str(port), "--data-dir", str(tmp_path / "data")], tmp_path, _env(), log)
    try:
        wait_for(lambda: "prod  OUTLAST_SECRET_KEY=" in log.read_text(), timeout=30, message="keys printed")
        printed = [line.split("OUTLAST_SECRET_KEY=") for line in log.read_text().splitlines()
                   if "OUTLAST_SECRET_KEY=" in line]
        keys = {env.split()[0]: key.split()[0] for env, key in printed}
        assert set(keys) == {"dev", "prod"}
        wait_for(lambda: _healthy(port), message="health")
        for key in keys.values():
            response = httpx.get(f"http://127.0.0.1:{port}/api/v1/runs", headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200
        database = (tmp_path / "data" / "outlast.db").read_bytes()
        assert not any(key.encode() in database for key in keys.values())
    finally:
        stop_process(process)
    # A second start prints no keys: they were shown once.
    log2 = tmp_path / "runtime2.log"
    process = _spawn(["runtime", "--port", str(port), "--data-dir", str(tmp_path / "data")], tmp_path, _env(), log2)
    try:
        wait_for(lambda: _healthy(port), message="health after restart")
        assert "OUTLAST_SECRET_KEY=" not in log2.read_text()
    finally:
        stop_process(process)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_dev_embedded_runs_the_working_copy_and_reloads_on_change(project_copy: Path, tmp_path: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "dev.log"
    process = _spawn(["dev", "--port", str(port)], project_copy, _env(OUTLAST_SECRET_KEY=SECRET_KEY), log)
    try:
        _wait_tasks(url, SECRET_KEY, "hello-world", process, log)
        with Client(api_url=url, secret_key=SECRET_KEY) as client:
            first = client.poll(client.trigger("hello-world", {"name": "Ada"}).id, timeout=30)
            assert first.status is RunStatus.COMPLETED, first
            assert first.output["message"] == "Hello, Ada!"
            assert (first.version and first.version.startswith("dev-")) or first.version is None

            tasks_file = project_copy / "tasks.py"
            tasks_file.write_text(tasks_file.read_text().replace('f"Hello, {name}!"', 'f"Bonjour, {name}!"'))

            def reloaded() -> bool:
                run = client.poll(client.trigger("hello-world", {"name": "Ada"}).id, timeout=30)
                return run.output["message"] == "Bonjour, Ada!"

            wait_for(reloaded, timeout=60, interval=0.5, message="the edited code to run")
        # The new code may serve a run a moment before the reload is printed.
        wait_for(lambda: "reloaded" in log.read_text(), timeout=10, message="the reload to be reported")
    finally:
        stop_process(process)
    # The embedded store lives in the project's .outlast directory.
    store = sqlite3.connect(project_copy / ".outlast" / "outlast.db")
    assert store.execute("select count(*) from runs").fetchone()[0] >= 2


def _health(url: str) -> dict:
    return httpx.get(url + "/api/v1/health", timeout=2).json()


def test_dev_forgives_a_tasks_module_that_does_not_import(project_copy: Path, tmp_path: Path):
    tasks_file = project_copy / "tasks.py"
    good = tasks_file.read_text()
    tasks_file.write_text("from outlast import nosuch  # a broken save\n" + good)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "dev.log"
    process = _spawn(["dev", "--port", str(port)], project_copy, _env(OUTLAST_SECRET_KEY=SECRET_KEY), log)
    headers = {"Authorization": f"Bearer {SECRET_KEY}"}
    try:
        wait_for(lambda: _healthy(port) and "tasks" in _health(url), timeout=60, message="health naming the import")
        assert process.poll() is None  # the API stays up
        health = _health(url)
        assert health["status"] == "degraded" and health["tasks"]["imported"] is False
        assert "cannot import name 'nosuch'" in health["tasks"]["error"]
        # The user's own traceback, short: their file and line, not importlib's or outlast's frames.
        wait_for(lambda: "could not import the tasks" in log.read_text(), timeout=10, message="the error printed")
        printed = log.read_text()
        assert f'File "{tasks_file}", line 1' in printed and "ImportError: cannot import name 'nosuch'" in printed
        assert "_bootstrap" not in printed and "outlast/_process.py" not in printed

        refused = httpx.post(url + "/api/v1/tasks/hello-world/trigger", json={"payload": {"name": "Ada"}},
                             headers=headers, timeout=10)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "tasks_do_not_import" and refused.json()["field"] == "task"
        assert "cannot import name 'nosuch'" in refused.json()["message"]
        assert httpx.get(url + "/api/v1/runs", headers=headers).json()["data"] == []  # nothing was queued

        tasks_file.write_text(good)  # fixed: the next save is picked up
        _wait_tasks(url, SECRET_KEY, "hello-world", process, log)
        assert _health(url)["status"] == "ok" and "tasks" not in _health(url)
        with Client(api_url=url, secret_key=SECRET_KEY) as client:
            run = client.poll(client.trigger("hello-world", {"name": "Ada"}).id, timeout=30)
            assert run.status is RunStatus.COMPLETED and run.output["message"] == "Hello, Ada!"

            tasks_file.write_text(good + "\nraise RuntimeError('broken again')\n")  # what imported last still runs
            wait_for(lambda: "broken again" in str(_health(url).get("tasks")), timeout=60, message="second break")
            again = client.poll(client.trigger("hello-world", {"name": "Bo"}).id, timeout=30)
            assert again.status is RunStatus.COMPLETED and again.output["message"] == "Hello, Bo!"
        assert "still serving" in log.read_text()
    finally:
        stop_process(process)


def test_dev_against_a_remote_runtime_registers_and_runs_for_dev(project_copy: Path, tmp_path: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    runtime_log = tmp_path / "runtime.log"
    runtime = _spawn(["runtime", "--port", str(port), "--data-dir", str(tmp_path / "data")], tmp_path,
                     _env(OUTLAST_SECRET_KEY=SECRET_KEY), runtime_log)
    worker = None
    try:
        wait_for(lambda: _healthy(port), message="runtime health")
        worker_log = tmp_path / "worker.log"
        worker = _spawn(["dev"], project_copy, _env(OUTLAST_SECRET_KEY=SECRET_KEY, OUTLAST_API_URL=url), worker_log)
        _wait_tasks(url, SECRET_KEY, "resize-image", worker, worker_log)
        with Client(api_url=url, secret_key=SECRET_KEY) as client:
            run = client.poll(client.trigger("resize-image", {"url": "u", "width": 3}).id, timeout=30)
        assert run.status is RunStatus.COMPLETED, worker_log.read_text()
        assert run.output == {"url": "u", "width": 3, "steps": 3}
        assert "outlast worker" in worker_log.read_text()
        node_id = worker_log.read_text().split("outlast worker", 1)[1].split()[0]

        # A broken save that also adds a task: the runtime learns why it cannot have it (not a 404).
        tasks_file = project_copy / "tasks.py"
        good = tasks_file.read_text() + '\n\n@task(id="greet")\ndef greet(payload, ctx):\n    return "hi"\n'
        tasks_file.write_text("from outlast import nosuch  # a broken save\n" + good)
        headers = {"Authorization": f"Bearer {SECRET_KEY}"}

        def refused() -> httpx.Response | None:
            response = httpx.post(url + "/api/v1/tasks/greet/trigger", json={"payload": {}}, headers=headers)
            return response if response.status_code == 409 else None

        response = wait_for(refused, timeout=60, message="a trigger refused naming the import error")
        assert response.json()["error"] == "tasks_do_not_import" and response.json()["field"] == "task"
        assert "cannot import name 'nosuch'" in response.json()["message"]
        batch = httpx.post(url + "/api/v1/tasks/batch-trigger", headers=headers, json={"items": [
            {"task": "resize-image", "payload": {"url": "u", "width": 1}}, {"task": "greet", "payload": {}}]})
        assert batch.status_code == 409 and batch.json()["field"] == "items.1.task", batch.text
        node = httpx.get(f"{url}/api/v1/worker/nodes/{node_id}", headers=headers).json()
        assert "cannot import name 'nosuch'" in node["import_error"], node
        prod_key = next(line.split("OUTLAST_SECRET_KEY=")[1].split()[0] for line in runtime_log.read_text().splitlines()
                        if line.lstrip().startswith("prod") and "OUTLAST_SECRET_KEY=" in line)
        other = httpx.get(f"{url}/api/v1/worker/nodes/{node_id}", headers={"Authorization": f"Bearer {prod_key}"})
        assert other.status_code == 404, other.text  # another environment's key sees none of it
        assert worker.poll() is None and "could not import the tasks" in worker_log.read_text()

        tasks_file.write_text(good)  # fixed: the worker registers again and the new task runs
        _wait_tasks(url, SECRET_KEY, "greet", worker, worker_log)
        with Client(api_url=url, secret_key=SECRET_KEY) as client:
            greeted = client.poll(client.trigger("greet", {}).id, timeout=30)
        assert greeted.status is RunStatus.COMPLETED and greeted.output == "hi", worker_log.read_text()
        assert httpx.get(f"{url}/api/v1/worker/nodes/{node_id}", headers=headers).json()["import_error"] is None
    finally:
        if worker is not None:
            stop_process(worker)
        stop_process(runtime)


def test_runtime_refuses_a_project_without_tasks(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "outlast.cli", "runtime", "--project", str(tmp_path)],
                            capture_output=True, text=True, env=_env(), timeout=60)
    assert result.returncode == 2
    assert "tasks module 'tasks' not found" in result.stderr
