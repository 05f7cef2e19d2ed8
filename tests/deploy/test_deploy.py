"""`outlast deploy` against a real runtime (no --project: it runs deployed versions only), on SQLite and
PostgreSQL: versions run their own code, runs stay on the version they were triggered on, broken
deploys change nothing, unsafe and oversize bundles are refused, and old versions are collected."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import uuid

import httpx
import pytest

from outlast import APIError, InvalidRequestError, NotFoundError, wait
from outlast._deployments import Deployments
from outlast.wire import RunStatus
from tests.conftest import SECRET_KEY, wait_for
from tests.e2e._shared import shared_runtime_fixture

from ._projects import cli, data_dir, deploy, deployed_version, write_project

BUNDLE_LIMIT = 300_000
shared_runtime = shared_runtime_fixture(project=None, extra_env={
    "OUTLAST_DEPLOY_GC_INTERVAL": "1", "OUTLAST_MAX_BUNDLE_BYTES": str(BUNDLE_LIMIT)})


@pytest.fixture
def runtime(shared_runtime):
    return shared_runtime


def _finished(client, run_id: str):
    return wait_for(lambda: (r := client.retrieve_run(run_id)).status.is_final and r, timeout=120,
                    message=f"run {run_id} to finish")


def test_deployed_version_runs_its_own_code_with_env_vars_in_its_venv(runtime, tmp_path):
    client = runtime.client()
    Deployments(client).env_set("DEPLOY_SECRET", "s3cret-value-4242")
    project = write_project(tmp_path / "p", "one", requirements="httpx\n")
    done = deploy(runtime, project)
    version = deployed_version(done)
    assert f"deployed {version} to dev: which, hold" in done.stdout
    run = _finished(client, client.trigger("which").id)
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.version == version
    assert run.output["code"] == "one" and run.output["version"] == version
    assert run.output["secret"] == hashlib.sha256(b"s3cret-value-4242").hexdigest()
    assert run.output["cwd"] == str(data_dir(runtime) / "versions" / version)
    assert "/venvs/" in run.output["python"]  # the requirements' virtualenv, not the runtime's interpreter

    listed = cli(runtime, "env", "ls", "--json")
    assert "DEPLOY_SECRET" in listed.stdout and "****4242" in listed.stdout
    assert "s3cret-value-4242" not in listed.stdout  # never shown again
    for stored in data_dir(runtime).glob("outlast.db*"):  # SQLite: encrypted at rest
        assert b"s3cret-value-4242" not in stored.read_bytes()

    second = deployed_version(deploy(runtime, project))  # same requirements: the cached environment is reused
    again = _finished(client, client.trigger("which").id)
    assert again.output["version"] == second and again.output["python"] == run.output["python"]

    Deployments(client).env_set("DEPLOY_SECRET", "rotated-value-0000")  # no redeploy: new processes see it
    rotated = _finished(client, client.trigger("which").id)
    assert rotated.output["secret"] == hashlib.sha256(b"rotated-value-0000").hexdigest()
    Deployments(client).env_delete("DEPLOY_SECRET")


def test_a_run_keeps_its_version_while_a_new_one_deploys_and_its_child_uses_it_too(runtime, tmp_path):
    client = runtime.client()
    old = deployed_version(deploy(runtime, write_project(tmp_path / "old", "old")))
    marker = f"hold-{uuid.uuid4().hex[:8]}"
    held = client.trigger("hold", {"marker": marker})
    started = runtime.scratch / f"{marker}.started"
    wait_for(started.exists, timeout=60, message="the old run to start")

    new = deployed_version(deploy(runtime, write_project(tmp_path / "new", "new")))
    fresh = _finished(client, client.trigger("which").id)
    assert (fresh.version, fresh.output["code"]) == (new, "new")
    assert client.retrieve_run(held.id).status is RunStatus.EXECUTING

    (runtime.scratch / marker).write_text("go")
    run = _finished(client, held.id)
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.output["code"] == "old" and run.output["version"] == old
    assert run.output["child"]["code"] == "old" and run.output["child"]["version"] == old


def test_a_waiting_run_resumes_on_its_own_version_after_a_new_one_deploys(runtime, tmp_path):
    client = runtime.client()
    old = deployed_version(deploy(runtime, write_project(tmp_path / "old", "old")))
    token = wait.create_token(client=client)
    waiting = client.trigger("await-token", {"token": token.id})
    wait_for(lambda: client.retrieve_run(waiting.id).status is RunStatus.WAITING, timeout=60,
             message="the run to be suspended in its wait")
    new = deployed_version(deploy(runtime, write_project(tmp_path / "new", "new")))
    assert Deployments(client).get(new).current
    wait.complete_token(token.id, {"approved": True}, client=client)
    run = _finished(client, waiting.id)
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.output == {"code": "old", "version": old, "data": {"approved": True}}
    assert run.version == old


def test_a_broken_deploy_fails_with_the_traceback_and_changes_nothing(runtime, tmp_path):
    client = runtime.client()
    good = deployed_version(deploy(runtime, write_project(tmp_path / "good", "good")))
    broken = write_project(tmp_path / "broken", "broken", extra="\nraise RuntimeError('deliberately broken')\n")
    done = deploy(runtime, broken, check=False)
    assert done.returncode == 1
    assert "failed; the current version is unchanged" in done.stdout
    assert "RuntimeError: deliberately broken" in done.stdout and "Traceback" in done.stdout
    listing = {d.version: d for d in Deployments(client).list()}
    failed = listing[deployed_version(done)]
    assert failed.status == "FAILED" and not failed.current and "deliberately broken" in (failed.error or "")
    assert listing[good].current
    run = _finished(client, client.trigger("which").id)
    assert (run.version, run.output["code"]) == (good, "good")


def test_versions_promote_rollback_and_garbage_collection(runtime, tmp_path):
    client = runtime.client()
    first = deployed_version(deploy(runtime, write_project(tmp_path / "a", "first")))
    assert _finished(client, client.trigger("which").id).output["code"] == "first"
    second = deployed_version(deploy(runtime, write_project(tmp_path / "b", "second")))
    directory = data_dir(runtime) / "versions" / first
    wait_for(lambda: not directory.exists(), timeout=60, message=f"{first} to be garbage-collected")
    assert not Deployments(client).get(first).on_disk
    assert (data_dir(runtime) / "versions" / second).exists()

    rolled = cli(runtime, "versions", "rollback")
    assert rolled.returncode == 0 and f"{first} is now current" in rolled.stdout, rolled.stderr
    run = _finished(client, client.trigger("which").id)  # unpacked again from the bundle store
    assert run.status is RunStatus.COMPLETED, run.error
    assert (run.version, run.output["code"]) == (first, "first")
    promoted = cli(runtime, "versions", "promote", second)
    assert promoted.returncode == 0, promoted.stderr
    listed = cli(runtime, "versions", "ls")
    assert any(line.split()[:3] == [second, "READY", "*"] for line in listed.stdout.splitlines()), listed.stdout


def test_runs_use_the_version_built_from_the_triggering_commit(runtime, tmp_path, monkeypatch):
    commit_a, commit_b = uuid.uuid4().hex + "aaaaaaaa", uuid.uuid4().hex + "bbbbbbbb"
    env_a = {"VERCEL_GIT_COMMIT_SHA": commit_a, "VERCEL_ENV": "production", "VERCEL_GIT_COMMIT_REF": "main"}
    version_a = deployed_version(deploy(runtime, write_project(tmp_path / "a", "from-a"), "--vercel", env=env_a))
    version_b = deployed_version(deploy(runtime, write_project(tmp_path / "b", "from-b"), "--vercel",
                                        env={**env_a, "VERCEL_GIT_COMMIT_SHA": commit_b}))
    client = runtime.client()
    assert Deployments(client).get(version_a).git_commit == commit_a

    monkeypatch.setenv("VERCEL_GIT_COMMIT_SHA", commit_a)  # what a Vercel function of commit A has
    pinned = runtime.client()
    run = _finished(pinned, pinned.trigger("which").id)
    assert (run.version, run.output["code"]) == (version_a, "from-a")
    monkeypatch.setenv("VERCEL_GIT_COMMIT_SHA", "0123456789abcdef" * 2)  # never deployed: the current version
    run = _finished(runtime.client(), runtime.client().trigger("which").id)
    assert run.version == version_b

    assert Deployments(client).promote(commit=commit_a[:10]).version == version_a
    with pytest.raises(NotFoundError) as caught:
        Deployments(client).promote(commit="feedfacefeedface")
    assert caught.value.field == "commit" and "no task version was deployed from commit" in str(caught.value)


def _tar_gz(entries: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def test_unsafe_and_oversize_bundles_are_refused(runtime):
    headers = {"Authorization": f"Bearer {SECRET_KEY}", "Content-Type": "application/gzip"}
    url = runtime.url + "/api/v1/deployments"
    before = len(Deployments(runtime.client()).list())
    evil = _tar_gz({"tasks.py": b"", "../../escape.py": b"import os"})
    answer = httpx.post(url, content=evil, headers=headers, timeout=30)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "bundle" and "../../escape.py" in answer.json()["message"]

    big = _tar_gz({"tasks.py": b"", "blob.bin": os.urandom(BUNDLE_LIMIT + 1000)})
    answer = httpx.post(url, content=big, headers=headers, timeout=30)
    assert answer.status_code == 413, answer.text
    assert answer.json()["field"] == "bundle"

    answer = httpx.post(url, content=b"not a tarball", headers=headers, timeout=30)
    assert answer.status_code == 422 and answer.json()["field"] == "bundle"
    assert len(Deployments(runtime.client()).list()) == before  # nothing was recorded


def test_bad_requests_name_the_field(runtime, tmp_path):
    client = runtime.client()
    deployments = Deployments(client)
    for name, needle in (("1BAD", "not a variable name"), ("OUTLAST_DATABASE_URL", "runtime's own setting")):
        with pytest.raises(InvalidRequestError) as caught:
            deployments.env_set(name, "x")
        assert caught.value.field == "name" and needle in str(caught.value)
    with pytest.raises(NotFoundError) as caught:
        deployments.env_delete("NEVER_SET")
    assert caught.value.field == "name"
    with pytest.raises(NotFoundError) as caught:
        deployments.get("19990101.1")
    assert caught.value.field == "version"
    broken = deploy(runtime, write_project(tmp_path / "b", "b", extra="\nimport not_a_module_anywhere\n"), check=False)
    assert "No module named 'not_a_module_anywhere'" in broken.stdout
    with pytest.raises(APIError) as caught:
        deployments.promote(deployed_version(broken))
    assert caught.value.status_code == 409 and caught.value.field == "version"
    missing = cli(runtime, "deploy", "--project", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
