"""The Vercel adapter against a real runtime: the signed deployment webhook (mounted in a FastAPI app and
standalone) promotes the task version of the deployed commit; env sync against a stand-in of Vercel's
REST API (httpx.MockTransport: Vercel itself cannot be reached from the tests), pages and errors included."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from outlast import runs
from outlast._adapter import AdapterSettings
from outlast._deployments import Deployments
from outlast.adapters.fastapi import Outlast
from outlast.adapters.vercel import VercelAPIError, VercelEnvSync, asgi_app, mount, sign
from tests.conftest import SECRET_KEY, RuntimeProcess, runtime_process

from ._projects import cli, deploy, deployed_version, write_project

SECRET = "whsec_test_vercel_0123456789"
COMMIT_A = uuid.uuid4().hex + "a" * 8
COMMIT_B = uuid.uuid4().hex + "b" * 8


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> Iterator[RuntimeProcess]:
    runtime = runtime_process(tmp_path_factory.mktemp("vercel"), None, project=None).start()
    try:
        yield runtime
    finally:
        runtime.close()


@pytest.fixture(scope="module")
def versions(runtime, tmp_path_factory) -> dict[str, str]:
    """Task versions built in Vercel's build step for commits A then B (B is current)."""
    root = tmp_path_factory.mktemp("vercel-projects")
    built = {}
    for name, commit in (("a", COMMIT_A), ("b", COMMIT_B)):
        env = {"VERCEL_GIT_COMMIT_SHA": commit, "VERCEL_ENV": "production"}
        built[name] = deployed_version(deploy(runtime, write_project(root / name, f"code-{name}"), "--vercel", env=env))
    return built


PROJECT = "prj_outlast_example"


def _event(kind: str, commit: str | None, target: str | None = "production", project: str = PROJECT) -> bytes:
    """A deployment webhook delivery as Vercel's webhooks API documents it (`payload.target`: production,
    staging or null for a preview; git metadata under `payload.deployment.meta`)."""
    meta = {"githubCommitSha": commit, "githubCommitRef": "main", "githubOrg": "acme", "githubRepo": "app"} \
        if commit else {}
    return json.dumps({"id": uuid.uuid4().hex, "type": kind, "createdAt": 1764250000000, "region": "iad1",
                       "payload": {"team": {"id": "team_acme"}, "user": {"id": "usr_1"}, "target": target,
                                   "project": {"id": project}, "plan": "pro", "regions": ["iad1"],
                                   "url": "app-git-main-acme.vercel.app",
                                   "links": {"deployment": "https://vercel.com/acme/app/dpl_1",
                                             "project": "https://vercel.com/acme/app"},
                                   "deployment": {"id": "dpl_1", "meta": meta, "name": "app",
                                                  "url": "app-git-main-acme.vercel.app"}}}).encode()


def _post(http: TestClient, path: str, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["x-vercel-signature"] = signature
    return http.post(path, content=body, headers=headers)


@pytest.fixture
def fastapi_app(runtime) -> Iterator[TestClient]:
    app = FastAPI()
    outlast = Outlast(app, api_url=runtime.url, secret_key=SECRET_KEY)
    mount(outlast, secret=SECRET)
    with TestClient(app) as http:
        yield http


def test_signed_deployment_event_promotes_the_version_of_its_commit(runtime, versions, fastapi_app):
    client = runtime.client()
    assert Deployments(client).get(versions["b"]).current
    body = _event("deployment.succeeded", COMMIT_A)
    answer = _post(fastapi_app, "/outlast/vercel", body, sign(body, SECRET))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"promoted": True, "version": versions["a"], "environment": "dev",
                             "target": "production", "commit": COMMIT_A}
    assert Deployments(client).get(versions["a"]).current
    run = client.trigger("which")
    assert runs.poll(run.id, client=client, timeout=60).output["code"] == "code-a"

    body = _event("deployment.promoted", COMMIT_B)
    assert _post(fastapi_app, "/outlast/vercel", body, sign(body, SECRET)).json()["version"] == versions["b"]
    assert Deployments(client).get(versions["b"]).current


def test_missing_or_wrong_signature_is_refused_and_changes_nothing(runtime, versions, fastapi_app):
    body = _event("deployment.succeeded", COMMIT_A)
    missing = _post(fastapi_app, "/outlast/vercel", body, None)
    assert missing.status_code == 401 and missing.json()["field"] == "x-vercel-signature"
    wrong = _post(fastapi_app, "/outlast/vercel", body, sign(body, "another-secret"))
    assert wrong.status_code == 401 and "does not match" in wrong.json()["message"]
    tampered = _post(fastapi_app, "/outlast/vercel", body.replace(COMMIT_A.encode(), COMMIT_B.encode()),
                     sign(body, SECRET))
    assert tampered.status_code == 401
    assert Deployments(runtime.client()).get(versions["b"]).current


def test_deliveries_it_ignores_on_purpose_are_2xx_with_the_reason_in_body_and_log(runtime, versions, caplog):
    """Vercel redelivers every non-2xx answer: what no redelivery can change is acknowledged."""
    app = asgi_app(secret=SECRET, project_id=[PROJECT, "prj_other_served"], settings=AdapterSettings.from_mapping(
        {}, api_url=runtime.url, secret_key=SECRET_KEY, prefix="/"))
    deliveries = {
        "version_not_deployed": _event("deployment.succeeded", "deadbeef" * 5, target=None),  # a preview build
        "other_event": _event("deployment.created", COMMIT_A),
        "no_git_commit": _event("deployment.succeeded", None),  # `vercel deploy` from a laptop
        "other_project": _event("deployment.succeeded", COMMIT_A, project="prj_someone_else"),
    }
    with TestClient(app) as http, caplog.at_level("INFO", logger="outlast.adapters.vercel"):
        for code, body in deliveries.items():
            answer = _post(http, "/vercel", body, sign(body, SECRET))
            assert answer.status_code == 200, answer.text
            assert answer.json()["ignored"] is True and answer.json()["code"] == code
            assert answer.json()["reason"] in caplog.text
    assert "ignored (version_not_deployed): no task version was deployed from commit deadbeefdead for Vercel " \
           "preview" in caplog.text
    assert "ignored (other_project): project prj_someone_else is not one this webhook serves" in caplog.text
    assert Deployments(runtime.client()).get(versions["b"]).current  # nothing was promoted


def test_only_bad_signatures_malformed_bodies_and_an_unreachable_runtime_are_not_2xx(runtime, versions):
    from tests.adapters._support import down_url

    app = asgi_app(secret=SECRET, settings=AdapterSettings.from_mapping(
        {}, api_url=runtime.url, secret_key=SECRET_KEY, prefix="/"))
    body = _event("deployment.succeeded", COMMIT_A)
    with TestClient(app) as http:
        assert _post(http, "/vercel", body, "0" * 40).status_code == 401
        answer = _post(http, "/vercel", b"{not json", sign(b"{not json", SECRET))
        assert answer.status_code == 422 and answer.json()["field"] == "body"
        answer = _post(http, "/vercel", b'{"no": "type"}', sign(b'{"no": "type"}', SECRET))
        assert answer.status_code == 422 and answer.json()["field"] == "type"
    down = asgi_app(secret=SECRET, settings=AdapterSettings.from_mapping(
        {}, api_url=down_url(), secret_key=SECRET_KEY, prefix="/", timeout=2))
    with TestClient(down) as http:  # a redelivery once the runtime is back will promote
        answer = _post(http, "/vercel", body, sign(body, SECRET))
        assert answer.status_code == 503 and answer.json()["error"] == "runtime_unavailable"
    assert Deployments(runtime.client()).get(versions["b"]).current


def test_keys_route_each_vercel_environment_to_its_outlast_environment(runtime, versions, caplog):
    app = FastAPI()
    outlast = Outlast(app, api_url=runtime.url, secret_key="ol_unused_key_0123456789")
    mount(outlast, secret=SECRET, keys={"preview": SECRET_KEY, "staging": SECRET_KEY})  # production: not here
    with TestClient(app) as http:
        body = _event("deployment.succeeded", COMMIT_A, target=None)  # no target: a preview deployment
        answer = _post(http, "/outlast/vercel", body, sign(body, SECRET))
        assert answer.json()["promoted"] is True and answer.json()["target"] == "preview"
        body = _event("deployment.promoted", COMMIT_B, target="staging")  # a custom environment
        answer = _post(http, "/outlast/vercel", body, sign(body, SECRET))
        assert answer.json()["promoted"] is True and answer.json()["target"] == "staging"
        body = _event("deployment.succeeded", COMMIT_A, target="production")
        with caplog.at_level("INFO", logger="outlast.adapters.vercel"):
            answer = _post(http, "/outlast/vercel", body, sign(body, SECRET))
        assert answer.status_code == 200 and answer.json() == {
            "promoted": False, "ignored": True, "code": "other_target", "target": "production", "commit": COMMIT_A,
            "reason": "no outlast environment is configured for Vercel production"}
        assert "no outlast environment is configured for Vercel production" in caplog.text
    assert Deployments(runtime.client()).get(versions["b"]).current
    Deployments(runtime.client()).promote(versions["b"])


def test_a_production_and_preview_setup_says_why_a_staging_deployment_changed_nothing(runtime, versions):
    app = FastAPI()
    outlast = Outlast(app, api_url=runtime.url, secret_key=SECRET_KEY)
    mount(outlast, secret=SECRET, keys={"production": SECRET_KEY, "preview": SECRET_KEY}, project_id=PROJECT)
    with TestClient(app) as http:
        body = _event("deployment.succeeded", COMMIT_A, target="staging")
        answer = _post(http, "/outlast/vercel", body, sign(body, SECRET))
    assert answer.status_code == 200
    assert (answer.json()["code"], answer.json()["target"]) == ("other_target", "staging")
    assert Deployments(runtime.client()).get(versions["b"]).current


# --- env sync ---------------------------------------------------------------------------------------

PAGES = {
    None: {"envs": [
        {"key": "DATABASE_URL", "value": "postgres://prod-db/app-0001", "target": ["production", "preview"],
         "type": "encrypted"},
        {"key": "PREVIEW_ONLY", "value": "x", "target": ["preview"], "type": "plain"},
    ], "pagination": {"count": 2, "next": 1700000000000, "prev": None}},
    "1700000000000": {"envs": [
        {"key": "STRIPE_KEY", "value": "sk_live_abcdef123456", "target": "production", "type": "encrypted"},
        {"key": "SIGNING_SECRET", "value": "", "target": ["production"], "type": "sensitive"},
        {"key": "BRANCHED", "value": "b", "target": ["production"], "gitBranch": "feature", "type": "plain"},
    ], "pagination": {"count": 3, "next": None, "prev": 1700000000001}},
}


def vercel_api(pages=PAGES, status: int = 200, error: dict | None = None, seen: list | None = None):
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        assert request.headers["authorization"] == "Bearer vercel-token"
        assert request.url.path == "/v10/projects/prj_123/env"
        if status != 200:
            return httpx.Response(status, json={"error": error or {}}, headers={"retry-after": "30"})
        return httpx.Response(200, json=pages[request.url.params.get("until")])

    return httpx.MockTransport(handler)


def test_env_sync_follows_pagination_and_shows_a_dry_run_diff_before_writing(runtime):
    client = runtime.client()
    deployments = Deployments(client)
    deployments.env_set("STRIPE_KEY", "sk_live_old_value_9999")
    deployments.env_set("LEGACY", "only-in-outlast")
    seen: list[httpx.Request] = []
    sync = VercelEnvSync("prj_123", token="vercel-token", team_id="team_9", transport=vercel_api(seen=seen))

    diff = sync.sync("production", deployments, prune=True, dry_run=True)
    assert [r.url.params.get("until") for r in seen] == [None, "1700000000000"]
    assert all(r.url.params["teamId"] == "team_9" and r.url.params["decrypt"] == "true" for r in seen)
    assert (diff.added, diff.updated, diff.removed, diff.unreadable) == (
        ["DATABASE_URL"], ["STRIPE_KEY"], ["LEGACY"], ["SIGNING_SECRET"])
    assert "+ DATABASE_URL (new)" in diff.lines() and "sk_live" not in "\n".join(diff.lines())
    assert {v.name for v in deployments.env_list()} == {"STRIPE_KEY", "LEGACY"}  # dry run: nothing written

    sync.sync("production", deployments, prune=True)
    listed = {v.name: v.hint for v in deployments.env_list()}
    assert listed == {"DATABASE_URL": "****0001", "STRIPE_KEY": "****3456"}
    again = sync.diff("production", deployments)
    assert (again.added, again.updated, again.same) == ([], [], ["DATABASE_URL", "STRIPE_KEY"])
    for name in listed:
        deployments.env_delete(name)


@pytest.mark.parametrize(("status", "error", "expected"), [
    (401, {"code": "forbidden", "message": "Not authorized"}, "Vercel API 401: Not authorized (check VERCEL_TOKEN)"),
    (404, {"code": "not_found", "message": "Project not found"}, "no project 'prj_123'"),
    (429, {"code": "rate_limited", "message": "Too many requests"}, "retry after 30s"),
    (500, {}, "Vercel API 500"),
])
def test_env_sync_reports_vercel_errors_and_writes_nothing(runtime, status, error, expected):
    deployments = Deployments(runtime.client())
    sync = VercelEnvSync("prj_123", token="vercel-token", transport=vercel_api(status=status, error=error))
    with pytest.raises(VercelAPIError, match=expected.replace("(", r"\(").replace(")", r"\)")) as caught:
        sync.sync("production", deployments)
    assert caught.value.status_code == status
    assert deployments.env_list() == []


def test_env_pull_vercel_cli_needs_a_token(runtime):
    done = cli(runtime, "env", "pull-vercel", "--vercel-project", "prj_123", env={"VERCEL_TOKEN": ""})
    assert done.returncode == 1 and "no Vercel token: set VERCEL_TOKEN" in done.stderr


def test_the_example_ships_its_tasks_and_its_function_triggers_runs_of_its_own_commit(runtime, versions,
                                                                                     monkeypatch):
    """examples/vercel_app as documented: the build step deploys its tasks for the commit, the function
    (api/index.py) triggers them and receives the webhook that promotes them."""
    import importlib.util
    import sys

    from tests.conftest import ROOT

    example = ROOT / "examples" / "vercel_app"
    commit = uuid.uuid4().hex + "e" * 8
    dry = cli(runtime, "deploy", "--project", str(example), "--dry-run")
    assert dry.returncode == 0 and "requirements-tasks.txt" in dry.stdout and "api/index.py" in dry.stdout
    version = deployed_version(deploy(runtime, example, "--vercel",
                                      env={"VERCEL_GIT_COMMIT_SHA": commit, "VERCEL_ENV": "preview"}))

    for name, value in {"OUTLAST_API_URL": runtime.url, "OUTLAST_SECRET_KEY": SECRET_KEY,
                        "OUTLAST_VERCEL_WEBHOOK_SECRET": SECRET, "VERCEL_GIT_COMMIT_SHA": commit}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(example))
    monkeypatch.delitem(sys.modules, "tasks", raising=False)
    spec = importlib.util.spec_from_file_location("vercel_example_index", example / "api" / "index.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    Deployments(runtime.client()).promote(versions["b"])  # another version is current: the commit decides
    with TestClient(module.app) as http:
        answer = http.post("/api/reports", json={"account_id": 7, "email": "a@example.com"})
        assert answer.status_code == 202, answer.text
        run = runs.poll(answer.json()["run_id"], client=runtime.client(), timeout=120)
        assert run.status == "COMPLETED", run.error
        assert run.version == version and run.output["built_by"] == version

        body = _event("deployment.promoted", commit, target="preview")
        promoted = _post(http, "/outlast/vercel", body, sign(body, SECRET))
        assert promoted.json()["version"] == version
    assert Deployments(runtime.client()).get(version).current
    Deployments(runtime.client()).promote(versions["b"])
    monkeypatch.delitem(sys.modules, "tasks", raising=False)


@pytest.fixture(scope="module")
def function_python(tmp_path_factory) -> Path:
    """The Vercel function's interpreter: a virtualenv with vercel-runtime (Python >= 3.12, as on Vercel)."""
    from tests.adapters._vercel_runtime import PYTHON_ENV, find_python312, function_venv

    python = find_python312()
    if python is None:
        pytest.skip(f"vercel-runtime needs Python >= 3.12 and none was found (set {PYTHON_ENV})")
    return function_venv(python, tmp_path_factory.mktemp("vercel-function"))


def test_the_example_runs_under_vercels_python_runtime_bridge(runtime, versions, function_python, tmp_path):
    """examples/vercel_app/api/index.py served by vercel_runtime's bridge (vc_init) as Vercel's platform starts
    it: the bridge imports the module, serves `app` and announces its port over IPC; requests come in with the
    platform's internal headers. The app triggers a run of its own commit and the signed webhook promotes it."""
    from tests.adapters._vercel_runtime import VercelFunction
    from tests.conftest import ROOT

    example = ROOT / "examples" / "vercel_app"
    commit = uuid.uuid4().hex + "f" * 8
    version = deployed_version(deploy(runtime, example, "--vercel",
                                      env={"VERCEL_GIT_COMMIT_SHA": commit, "VERCEL_ENV": "preview"}))
    Deployments(runtime.client()).promote(versions["b"])  # another version is current: the commit decides
    env = {"OUTLAST_API_URL": runtime.url, "OUTLAST_SECRET_KEY": SECRET_KEY, "OUTLAST_VERCEL_WEBHOOK_SECRET": SECRET,
           "VERCEL": "1", "VERCEL_ENV": "preview", "VERCEL_GIT_COMMIT_SHA": commit}
    function = VercelFunction(function_python, example, tmp_path, env).start()
    try:
        answer = function.request("POST", "/api/reports", json={"account_id": 8, "email": "b@example.com"})
        assert answer.status_code == 202, (answer.text, function.log())
        run = runs.poll(answer.json()["run_id"], client=runtime.client(), timeout=120)
        assert run.status == "COMPLETED", run.error
        assert run.version == version and run.output == {"account": 8, "sent_to": "b@example.com",
                                                         "built_by": version}
        for body, expected in ((_event("deployment.created", commit), {"ignored": True, "code": "other_event"}),
                               (_event("deployment.promoted", commit, target=None), {"version": version})):
            delivered = function.request("POST", "/outlast/vercel", content=body, headers={
                "content-type": "application/json", "x-vercel-signature": sign(body, SECRET)})
            assert delivered.status_code == 200, delivered.text
            assert expected.items() <= delivered.json().items()
        health = function.request("GET", "/outlast/health")  # the promoted version has the app's task
        assert health.status_code == 200 and health.json()["tasks"]["vercel-monthly-report"]["deployed"], health.text
    finally:
        function.stop()
    assert function.messages[0]["type"] == "server-started"
    assert Deployments(runtime.client()).get(version).current
    Deployments(runtime.client()).promote(versions["b"])
