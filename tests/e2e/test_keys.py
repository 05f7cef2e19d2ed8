"""Key rotation on a real runtime (SQLite and PostgreSQL): `outlast keys rotate ENV` prints the new key
once; the replaced key keeps working for its grace period, then gets a 401 that says why; only the
current key may rotate; a replica of the runtime sees the rotation too."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from tests.conftest import (
    PG_ADMIN_URL,
    SECRET_KEY,
    RuntimeProcess,
    _create_pg_database,
    _drop_pg_database,
    runtime_process,
    wait_for,
)

ROTATE = "/api/v1/environments/{env}/keys/rotate"


def cli_rotate(runtime: RuntimeProcess, env: str, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "OUTLAST_API_URL": runtime.url, "OUTLAST_SECRET_KEY": key, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "outlast.cli", "keys", "rotate", env, *args], env=environ,
                          capture_output=True, text=True, timeout=60)


def new_key_of(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("OUTLAST_SECRET_KEY="), done.stdout
    key = lines[0].removeprefix("OUTLAST_SECRET_KEY=")
    assert (done.stdout + done.stderr).count(key) == 1, "the new key is printed exactly once"
    assert "shown once" in done.stderr
    return key


def answer(runtime: RuntimeProcess, key: str) -> httpx.Response:
    return httpx.get(f"{runtime.url}/api/v1/runs", headers={"Authorization": f"Bearer {key}"}, timeout=10)


def rotate(runtime: RuntimeProcess, env: str, key: str, body: object = None) -> httpx.Response:
    return httpx.post(runtime.url + ROTATE.format(env=env), headers={"Authorization": f"Bearer {key}"},
                      json=body, timeout=10)


@pytest.fixture
def runtime(tmp_path, store) -> RuntimeProcess:
    started = runtime_process(tmp_path, store, project=None).start()
    yield started
    started.close()


def test_rotate_grace_then_refused(runtime):
    new = new_key_of(cli_rotate(runtime, "dev", SECRET_KEY, "--grace", "1h"))
    assert new.startswith("ol_dev_") and new != SECRET_KEY
    assert answer(runtime, new).status_code == 200, "the new key works at once"
    assert answer(runtime, SECRET_KEY).status_code == 200, "the replaced key works during its grace period"

    refused = rotate(runtime, "dev", SECRET_KEY)
    assert refused.status_code == 403 and "rotate with the current key" in refused.json()["message"]
    assert answer(runtime, new).status_code == 200, "a refused rotation changed nothing"

    # Rotating again ends the first key at once (one previous key is kept); the second gets a short grace.
    newer = new_key_of(cli_rotate(runtime, "dev", new, "--grace", "1s"))
    first = answer(runtime, SECRET_KEY)
    assert first.status_code == 401, first.text
    assert first.json()["message"] == "invalid secret key"
    assert answer(runtime, newer).status_code == 200

    expired = wait_for(lambda: (r := answer(runtime, new)).status_code == 401 and r, timeout=30,
                       message="the replaced key's grace period to end")
    body = expired.json()
    assert body["error"] == "unauthorized" and body["field"] == "authorization"
    assert "was replaced by a key rotation" in body["message"] and "stopped working" in body["message"]
    assert answer(runtime, newer).status_code == 200


def test_zero_grace_and_who_may_rotate(runtime):
    dev_rotation = rotate(runtime, "prod", SECRET_KEY)
    assert dev_rotation.status_code == 403, dev_rotation.text
    assert "a key of environment 'dev' cannot rotate the key of environment 'prod'" in dev_rotation.json()["message"]
    assert rotate(runtime, "nope", SECRET_KEY).status_code == 403
    assert rotate(runtime, "dev", "ol_dev_not_a_key_of_this_runtime").status_code == 401

    done = rotate(runtime, "dev", SECRET_KEY, {"grace": 0})
    assert done.status_code == 200, done.text
    assert done.json()["env"] == "dev" and done.json()["key_hint"] == done.json()["secret_key"][-4:]
    assert answer(runtime, SECRET_KEY).status_code == 401, "grace 0 ends the key at once"
    assert answer(runtime, done.json()["secret_key"]).status_code == 200


@pytest.mark.parametrize("grace", [-1, "1e400", "31d", "soon", float("nan")])
def test_bad_grace_is_a_422_naming_it(runtime, grace):
    body = {"grace": grace} if not isinstance(grace, float) else None
    response = (rotate(runtime, "dev", SECRET_KEY, body) if body else httpx.post(
        runtime.url + ROTATE.format(env="dev"), content=b'{"grace": NaN}',
        headers={"Authorization": f"Bearer {SECRET_KEY}", "Content-Type": "application/json"}, timeout=10))
    assert response.status_code == 422, response.text
    assert response.json()["field"] in ("grace", "body"), response.text
    assert answer(runtime, SECRET_KEY).status_code == 200, "a refused request rotated nothing"


def test_cli_refuses_a_bad_grace_without_calling(runtime):
    done = cli_rotate(runtime, "dev", SECRET_KEY, "--grace", "later")
    assert done.returncode == 2 and "--grace" in done.stderr
    assert answer(runtime, SECRET_KEY).status_code == 200


@pytest.fixture
def postgres_url():
    name = _create_pg_database()
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    _drop_pg_database(name)


def test_a_replica_sees_the_rotation(tmp_path, postgres_url):
    """Two runtimes on one database: a key ended on one is refused by the other (its cache is short-lived)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = runtime_process(tmp_path / "a", postgres_url, project=None, node_id="a").start()
    second = runtime_process(tmp_path / "b", postgres_url, project=None, node_id="b").start()
    try:
        assert answer(second, SECRET_KEY).status_code == 200  # cached there now
        new = rotate(first, "dev", SECRET_KEY, {"grace": "0s"}).json()["secret_key"]
        wait_for(lambda: answer(second, SECRET_KEY).status_code == 401, timeout=30,
                 message="the other replica to refuse the replaced key")
        assert answer(second, new).status_code == 200
    finally:
        first.close()
        second.close()
