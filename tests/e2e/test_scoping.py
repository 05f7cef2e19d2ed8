"""Environments are sealed on every endpoint: a walk of EVERY route of the runtime's OpenAPI document
with environment B's key (dev) and environment A's ids (prod: runs, a waitpoint token, a schedule,
a deployed version and its task, a batch, an env var, a bulk action), on SQLite and PostgreSQL.

A route naming one of A's ids in its path (or a worker call naming A's run) must answer 403 or 404;
any other answer must not be a 5xx and must not carry any of A's ids or values; and afterwards A's
data is as it was (nothing B sent changed it). A route added to the document without an entry in
ROUTES fails the walk until someone says how to call it.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from outlast import RunStatus
from tests.conftest import SECRET_KEY, RuntimeProcess, runtime_process, wait_for
from tests.deploy._projects import cli, deployed_version, write_project

A_SECRET = f"a-only-secret-{uuid.uuid4().hex}"
A_ONLY_TASK = f"a-only-{uuid.uuid4().hex[:8]}"
A_QUEUE = f"a-only-queue-{uuid.uuid4().hex[:8]}"
EXTRA_TASK = f'''

@task(id="{A_ONLY_TASK}")
def a_only(payload, ctx):
    return {{"secret": os.environ.get("A_ONLY_VAR")}}
'''


@dataclass
class VictimData:
    """Environment A's ids and values: none of them may reach B."""

    key: str
    version: str = ""
    done_run: str = ""
    waiting_run: str = ""
    token: str = ""
    token_secret: str = ""
    completed_token: str = ""  # completed by A with A_SECRET in its output
    schedule: str = ""
    batch_run: str = ""
    bulk_action: str = ""
    node: str = ""  # a worker node of A's, known from its heartbeat
    env_var: str = f"A_ONLY_VAR_{uuid.uuid4().hex[:8].upper()}"
    markers: set[str] = field(default_factory=set)


def call(runtime: RuntimeProcess, key: str, method: str, path: str, body: object = None) -> httpx.Response:
    return httpx.request(method, f"{runtime.url}/api/v1{path}", headers={"Authorization": f"Bearer {key}"},
                         json=body, timeout=30)


def ok(response: httpx.Response) -> dict:
    assert response.status_code < 300, response.text
    return response.json() if response.content else {}


def prod_key(runtime: RuntimeProcess) -> str:
    found = wait_for(lambda: re.search(r"prod\s+OUTLAST_SECRET_KEY=(\S+)", runtime.log()), timeout=30,
                     message="the prod key in the runtime's log")
    return found.group(1)


def seed_victim(runtime: RuntimeProcess, tmp_path: Path) -> VictimData:
    a = VictimData(key=prod_key(runtime))
    ok(call(runtime, a.key, "PUT", f"/env-vars/{a.env_var}", {"value": A_SECRET}))
    project = write_project(tmp_path / "a-project", "a-code", extra=EXTRA_TASK)
    done = cli(runtime, "deploy", "--project", str(project), key=a.key)
    assert done.returncode == 0, done.stdout + done.stderr + runtime.log()[-3000:]
    a.version = deployed_version(done)
    run = ok(call(runtime, a.key, "POST", f"/tasks/{A_ONLY_TASK}/trigger", {"payload": {}}))
    a.done_run = run["id"]
    wait_for(lambda: ok(call(runtime, a.key, "GET", f"/runs/{a.done_run}"))["status"] == "COMPLETED", timeout=120,
             message="A's run to complete")
    token = ok(call(runtime, a.key, "POST", "/waitpoints/tokens", {"timeout": "1h", "tags": ["a-only"]}))
    a.token, a.token_secret = token["id"], token["url"].rstrip("/").rsplit("/", 1)[-1]
    a.completed_token = ok(call(runtime, a.key, "POST", "/waitpoints/tokens", {"timeout": "1h"}))["id"]
    ok(call(runtime, a.key, "POST", f"/waitpoints/tokens/{a.completed_token}/complete", {"data": {"a": A_SECRET}}))
    a.waiting_run = ok(call(runtime, a.key, "POST", "/tasks/await-token/trigger",
                            {"payload": {"token": a.token}, "options": {"tags": ["a-only"]}}))["id"]
    wait_for(lambda: ok(call(runtime, a.key, "GET", f"/runs/{a.waiting_run}"))["status"] == "WAITING", timeout=120,
             message="A's run to wait for its token")
    a.schedule = ok(call(runtime, a.key, "POST", "/schedules", {"task": "which", "cron": "0 3 * * *",
                                                                 "external_id": "a-only-tenant"}))["id"]
    batch = ok(call(runtime, a.key, "POST", "/tasks/batch-trigger",
                    {"items": [{"task": "which", "options": {"delay": "1h", "tags": ["a-only"],
                                                             "queue": {"name": A_QUEUE, "concurrency_limit": 1}}}]}))
    a.batch_run = batch["runs"][0]["id"]
    if has_route(runtime, "/bulk-actions"):
        a.bulk_action = ok(call(runtime, a.key, "POST", "/bulk-actions",
                                {"action": "cancel", "filter": {"tag": ["no-such-tag"]}}))["id"]
    a.node = f"a-node-{uuid.uuid4().hex[:8]}"
    ok(call(runtime, a.key, "POST", "/worker/heartbeat", {"node_id": a.node, "attempts": [], "incarnation": "a" * 32}))
    a.markers = {v for v in (a.version, a.node, a.done_run, a.waiting_run, a.token, a.token_secret, a.completed_token,
                             a.schedule, a.batch_run,
                             a.bulk_action, a.env_var, A_SECRET, A_ONLY_TASK, A_QUEUE, "a-only-tenant", "a-only") if v}
    return a


def made_up_twin(a: VictimData) -> VictimData:
    """Ids of the same shapes that name nothing: B must not be able to tell A's ids from these."""
    def fake(value: str) -> str:
        return value[:-8] + uuid.uuid4().hex[:8] if value else value

    twin = VictimData(key=a.key, version=fake(a.version), done_run=fake(a.done_run), waiting_run=fake(a.waiting_run),
                      token=fake(a.token), token_secret=fake(a.token_secret), completed_token=fake(a.completed_token),
                      schedule=fake(a.schedule),
                      batch_run=fake(a.batch_run), bulk_action=fake(a.bulk_action), env_var=fake(a.env_var),
                      node=fake(a.node))
    return twin


def has_route(runtime: RuntimeProcess, path: str) -> bool:
    return f"/api/v1{path}" in httpx.get(f"{runtime.url}/api/v1/openapi.json", timeout=30).json()["paths"]


def _worker(a: VictimData, **extra: object) -> dict:
    return {"node_id": "intruder", "run_id": a.waiting_run, "attempt": 1, **extra}


# (method, path) -> (path parameters, body, what B must get). DENIED: 403 or 404. OWN: the call is B's own
# business (a listing, a create, an upsert of B's own name): any non-5xx answer without A's data.
DENIED, OWN, SECRET_URL = "denied", "own", "secret-url"
ROUTES = {
    ("POST", "/tasks/{task_id}/trigger"): (lambda a: {"task_id": A_ONLY_TASK}, lambda a: {"payload": {}}, DENIED),
    ("POST", "/tasks/batch-trigger"): (None, lambda a: {"items": [{"task": A_ONLY_TASK}]}, DENIED),
    ("GET", "/tasks"): (None, None, OWN),
    ("GET", "/runs"): (None, None, OWN),
    ("GET", "/runs/{run_id}"): (lambda a: {"run_id": a.done_run}, None, DENIED),
    ("GET", "/runs/{run_id}/events"): (lambda a: {"run_id": a.waiting_run}, None, DENIED),
    ("POST", "/runs/{run_id}/cancel"): (lambda a: {"run_id": a.waiting_run}, None, DENIED),
    ("POST", "/runs/{run_id}/replay"): (lambda a: {"run_id": a.done_run}, None, DENIED),
    ("POST", "/runs/{run_id}/reschedule"): (lambda a: {"run_id": a.batch_run}, lambda a: {"delay": 1}, DENIED),
    ("POST", "/auth/public-tokens"): (None, lambda a: {"runs": [a.done_run]}, DENIED),
    ("GET", "/health"): (None, None, OWN),
    ("POST", "/worker/register"): (None, lambda a: {"node_id": "intruder", "version": "local", "tasks": []}, OWN),
    ("POST", "/worker/claim"): (None, lambda a: {"node_id": "intruder", "task_ids": ["which", A_ONLY_TASK],
                                                 "versions": [a.version], "max_runs": 5, "wait": 0}, OWN),
    ("POST", "/worker/heartbeat"): (None, lambda a: {"node_id": "intruder", "attempts": [
        {"run_id": a.waiting_run, "attempt": 1, "waiting": [a.token, a.completed_token]}]}, OWN),
    ("POST", "/worker/report"): (None, lambda a: {
        "logs": [{"run_id": a.waiting_run, "attempt": 1, "message": "intruder", "time": datetime.now(UTC).isoformat()}],
        "metadata": [{"run_id": a.waiting_run, "ops": [{"op": "set", "key": "owned", "value": True}]}],
        "completions": [{"run_id": a.waiting_run, "attempt": 1, "outcome": "ok", "output": "intruder"}]}, OWN),
    ("POST", "/worker/wait"): (None, lambda a: _worker(a, key="k", spec={"kind": "token", "token_id": a.token}),
                               DENIED),
    ("POST", "/worker/suspend"): (None, lambda a: _worker(a, mode="kept_alive", waiting=[a.token]), DENIED),
    ("POST", "/worker/resume"): (None, lambda a: _worker(a), DENIED),
    ("POST", "/worker/token"): (None, lambda a: {"run_id": a.waiting_run, "complete_id": a.token, "data": 1}, DENIED),
    ("POST", "/schedules"): (None, lambda a: {"task": "which", "cron": "0 4 * * *", "external_id": "b-tenant"}, OWN),
    ("GET", "/schedules"): (None, None, OWN),
    ("GET", "/schedules/{schedule_id}"): (lambda a: {"schedule_id": a.schedule}, None, DENIED),
    ("PATCH", "/schedules/{schedule_id}"): (lambda a: {"schedule_id": a.schedule}, lambda a: {"cron": "* * * * *"},
                                            DENIED),
    ("DELETE", "/schedules/{schedule_id}"): (lambda a: {"schedule_id": a.schedule}, None, DENIED),
    ("POST", "/schedules/{schedule_id}/activate"): (lambda a: {"schedule_id": a.schedule}, None, DENIED),
    ("POST", "/schedules/{schedule_id}/deactivate"): (lambda a: {"schedule_id": a.schedule}, None, DENIED),
    ("POST", "/waitpoints/tokens"): (None, lambda a: {"timeout": 60, "idempotency_key": "b-own"}, OWN),
    ("POST", "/waitpoints/tokens/{token_id}/complete"): (lambda a: {"token_id": a.token}, lambda a: {"data": 1},
                                                         DENIED),
    ("POST", "/waitpoints/tokens/{token_id}/callback/{secret}"): (
        lambda a: {"token_id": a.token, "secret": "not-" + a.token_secret[4:]}, lambda a: {"by": "intruder"},
        SECRET_URL),
    ("GET", "/waitpoints/{waitpoint_id}"): (lambda a: {"waitpoint_id": a.token}, None, DENIED),
    ("POST", "/deployments"): (None, None, OWN),  # no bundle: a 4xx naming it
    ("GET", "/deployments"): (None, None, OWN),
    ("GET", "/deployments/{version}"): (lambda a: {"version": a.version}, None, DENIED),
    ("POST", "/deployments/promote"): (None, lambda a: {"version": a.version}, DENIED),
    ("POST", "/deployments/rollback"): (None, None, OWN),
    ("GET", "/env-vars"): (None, None, OWN),
    # An upsert of B's own variable of that name: allowed, and A's stays as it was (checked below).
    ("PUT", "/env-vars/{name}"): (lambda a: {"name": a.env_var}, lambda a: {"value": "b-value"}, OWN),
    ("DELETE", "/env-vars/{name}"): (lambda a: {"name": a.env_var}, None, OWN),
    ("GET", "/worker/deployments"): (None, None, OWN),
    ("GET", "/worker/deployments/{version}/bundle"): (lambda a: {"version": a.version}, None, DENIED),
    ("GET", "/worker/env-vars"): (None, None, OWN),
    ("GET", "/worker/nodes/{node_id}"): (lambda a: {"node_id": a.node}, None, DENIED),
    ("POST", "/worker/nodes/{node_id}/drain"): (lambda a: {"node_id": a.node}, None, DENIED),
    ("POST", "/environments/{env_id}/keys/rotate"): (lambda a: {"env_id": "prod"}, None, DENIED),
    # Routes of features being built alongside (present when their modules are).
    ("GET", "/runs/subscribe"): (None, None, OWN),
    ("GET", "/runs/{run_id}/subscribe"): (lambda a: {"run_id": a.waiting_run}, None, DENIED),
    ("GET", "/runs/{run_id}/streams"): (lambda a: {"run_id": a.done_run}, None, DENIED),
    ("GET", "/runs/{run_id}/streams/{name}"): (lambda a: {"run_id": a.done_run, "name": "default"}, None, DENIED),
    ("POST", "/worker/streams"): (None, lambda a: {"run_id": a.done_run, "attempt": 1, "append": {
        "name": "default", "first_seq": 0, "chunks": ["intruder"]}}, DENIED),
    ("POST", "/bulk-actions"): (None, lambda a: {"action": "cancel", "filter": {"tag": ["a-only"]}}, OWN),
    ("GET", "/bulk-actions/{bulk_action_id}"): (lambda a: {"bulk_action_id": a.bulk_action}, None, DENIED),
    ("GET", "/queues"): (None, None, OWN),
    # Queue names are per environment: B may ask for its own queue of that name, and must learn nothing of A's.
    ("GET", "/queues/{name}"): (lambda a: {"name": A_QUEUE}, None, OWN),
}
# Query parameters naming A's tags, tasks and external ids: B's listings filtered by them must come back empty.
QUERIES = {
    ("GET", "/runs"): lambda a: {"tag": "a-only", "task": A_ONLY_TASK},
    ("GET", "/schedules"): lambda a: {"external_id": "a-only-tenant"},
    ("GET", "/runs/subscribe"): lambda a: {"tag": "a-only"},
}
STREAMING = {"/runs/subscribe", "/runs/{run_id}/subscribe"}  # server-sent events: read a little, then stop


def request_of(a: VictimData, method: str, path: str) -> tuple[str, object]:
    params, body, _ = ROUTES[(method, path)]
    url = path.format(**params(a)) if params else path
    if (method, path) in QUERIES:
        url += "?" + urlencode(QUERIES[(method, path)](a))
    return url, (body(a) if body else None)


def walk(runtime: RuntimeProcess, a: VictimData, method: str, path: str) -> httpx.Response:
    url, body = request_of(a, method, path)
    if path not in STREAMING:
        return call(runtime, SECRET_KEY, method, url, body)
    with httpx.Client(timeout=httpx.Timeout(30, read=2)) as client, client.stream(
            method, f"{runtime.url}/api/v1{url}", headers={"Authorization": f"Bearer {SECRET_KEY}"}) as response:
        seen = b""
        try:
            for chunk in response.iter_bytes():
                seen += chunk
        except httpx.ReadTimeout:  # a stream with nothing more to say for now
            pass
        return httpx.Response(response.status_code, content=seen)


def problems_of(runtime: RuntimeProcess, a: VictimData, twin: VictimData) -> list[str]:
    document = httpx.get(f"{runtime.url}/api/v1/openapi.json", timeout=30).json()
    routes = [(m.upper(), p.removeprefix("/api/v1")) for p, ops in document["paths"].items() for m in ops]
    unknown = [f"{m} {p}" for m, p in routes if (m, p) not in ROUTES]
    assert not unknown, f"routes the walk does not know how to call (add them to ROUTES): {unknown}"
    problems = []
    for method, path in routes:
        response = walk(runtime, a, method, path)
        expected, text = ROUTES[(method, path)][2], response.text
        # What B sent may come back (an upsert's name, a heartbeat's "stop" list); anything else of A's may not.
        sent = json.dumps(request_of(a, method, path))
        leaked = sorted(marker for marker in a.markers if marker in text and marker not in sent)
        same_for_nothing = walk(runtime, twin, method, path)
        if response.status_code >= 500:
            problems.append(f"{method} {path}: {response.status_code} {text[:300]}")
        elif expected in (DENIED, SECRET_URL) and response.status_code not in (403, 404):
            problems.append(f"{method} {path}: {response.status_code} instead of 403/404: {text[:300]}")
        elif leaked and response.status_code < 300:
            problems.append(f"{method} {path}: {response.status_code} with A's {leaked}: {text[:300]}")
        elif same_for_nothing.status_code != response.status_code:
            problems.append(f"{method} {path}: {response.status_code} for A's ids but {same_for_nothing.status_code} "
                            f"for ids that name nothing: B can tell A's ids exist")
    return problems


def assert_victim_untouched(runtime: RuntimeProcess, a: VictimData) -> None:
    waiting = ok(call(runtime, a.key, "GET", f"/runs/{a.waiting_run}"))
    assert waiting["status"] == RunStatus.WAITING.value, waiting
    assert "owned" not in (waiting.get("metadata") or {}), waiting
    events = json.dumps(ok(call(runtime, a.key, "GET", f"/runs/{a.waiting_run}/events")))
    assert "intruder" not in events, events
    assert ok(call(runtime, a.key, "GET", f"/waitpoints/{a.token}"))["status"] == "PENDING"
    delayed = ok(call(runtime, a.key, "GET", f"/runs/{a.batch_run}"))
    assert delayed["status"] == RunStatus.DELAYED.value, delayed
    schedule = ok(call(runtime, a.key, "GET", f"/schedules/{a.schedule}"))
    assert schedule["cron"] == "0 3 * * *" and schedule["active"], schedule
    assert [v["name"] for v in ok(call(runtime, a.key, "GET", "/env-vars"))] == [a.env_var]
    current = [d for d in ok(call(runtime, a.key, "GET", "/deployments")) if d.get("current")]
    assert [d["version"] for d in current] == [a.version], current
    assert call(runtime, a.key, "GET", "/runs").status_code == 200, "A's key was not rotated by B"
    node = ok(call(runtime, a.key, "GET", f"/worker/nodes/{a.node}"))
    assert node["drain_requested_at"] is None, "B asked A's node to drain"


@pytest.fixture
def runtime(tmp_path, store) -> RuntimeProcess:
    started = runtime_process(tmp_path, store, project=None).start()
    yield started
    started.close()


def test_every_route_is_sealed_between_environments(runtime, tmp_path):
    a = seed_victim(runtime, tmp_path)
    problems = problems_of(runtime, a, made_up_twin(a))
    assert not problems, "environment B reached A's data:\n" + "\n".join(problems)
    assert_victim_untouched(runtime, a)


# --- the dashboard (not in the OpenAPI document): logged in with B's key, A's ids in every page and form ---

DASHBOARD = {
    ("GET", "/"): lambda a: ("/?" + urlencode({"tag": "a-only", "version": a.version, "schedule": a.schedule}), OWN),
    ("GET", "/runs/{run_id}"): lambda a: (f"/runs/{a.waiting_run}", DENIED),
    ("GET", "/runs/{run_id}/live"): lambda a: (f"/runs/{a.waiting_run}/live", DENIED),
    ("GET", "/runs/{run_id}/subscribe"): lambda a: (f"/runs/{a.waiting_run}/subscribe", DENIED),
    ("GET", "/bulk/{job_id}"): lambda a: (f"/bulk/{a.bulk_action}", DENIED),
    ("GET", "/tokens"): lambda a: ("/tokens", OWN),
    ("GET", "/schedules"): lambda a: ("/schedules", OWN),
    ("GET", "/deployments"): lambda a: ("/deployments", OWN),
    ("GET", "/queues"): lambda a: ("/queues", OWN),
    ("GET", "/env-vars"): lambda a: ("/env-vars", OWN),
    ("GET", "/nodes"): lambda a: ("/nodes", OWN),
    ("GET", "/login"): lambda a: ("/login", OWN),
    ("POST", "/login"): lambda a: ("/login", OWN),  # B's key again: B's session
    ("POST", "/logout"): None,  # ends the walk's session: called last, on its own
    # A selection becomes B's own bulk job over B's runs among those named: none of A's (A's runs stay as they were).
    ("POST", "/runs/bulk"): lambda a: ("/runs/bulk", OWN),
    ("POST", "/runs/{run_id}/cancel"): lambda a: (f"/runs/{a.waiting_run}/cancel", DENIED),
    ("POST", "/runs/{run_id}/replay"): lambda a: (f"/runs/{a.done_run}/replay", DENIED),
    ("POST", "/tokens/{token_id}/complete"): lambda a: (f"/tokens/{a.token}/complete", DENIED),
    ("POST", "/deployments/promote"): lambda a: ("/deployments/promote", DENIED),
    ("POST", "/deployments/rollback"): lambda a: ("/deployments/rollback", OWN),
    ("POST", "/schedules/{schedule_id}/active"): lambda a: (f"/schedules/{a.schedule}/active", DENIED),
}


def dashboard_routes() -> list[tuple[str, str]]:
    import outlast.runtime.api.app  # noqa: F401 - the app first: the dashboard's modules import its routers
    from outlast.runtime.dashboard import actions, live, pages

    return [(method, route.path) for module in (pages, actions, live) for route in module.router.routes
            for method in route.methods if method != "HEAD"]


def dashboard_problems(runtime: RuntimeProcess, a: VictimData) -> list[str]:
    unknown = [f"{m} {p}" for m, p in dashboard_routes() if (m, p) not in DASHBOARD]
    assert not unknown, f"dashboard routes the walk does not know how to call (add them to DASHBOARD): {unknown}"
    problems = []
    with httpx.Client(base_url=runtime.url, timeout=httpx.Timeout(30, read=5)) as browser:
        login = browser.post("/login", data={"secret_key": SECRET_KEY})
        assert login.status_code == 303, login.text
        form = {"run": [a.waiting_run, a.done_run], "action": "cancel", "version": a.version, "approve": "1",
                "active": "0", "secret_key": SECRET_KEY}
        for (method, path), route in DASHBOARD.items():
            if route is None:
                continue
            url, expected = route(a)
            # The session's CSRF token (a login starts a new session): a refused form would prove nothing.
            form["csrf"] = re.search(r'name="csrf" value="([^"]+)"', browser.get("/tokens").text).group(1)
            try:
                response = (browser.get(url) if method == "GET" else browser.post(url, data=form))
            except httpx.ReadTimeout:  # a live stream B may open: it has nothing to say
                continue
            leaked = sorted(m for m in a.markers if m in response.text and m not in url)
            if response.status_code >= 500:
                problems.append(f"dashboard {method} {path}: {response.status_code}")
            elif expected == DENIED and response.status_code not in (403, 404):
                problems.append(f"dashboard {method} {path}: {response.status_code} instead of 403/404")
            elif leaked and response.status_code < 400:
                problems.append(f"dashboard {method} {path}: {response.status_code} with A's {leaked}")
            elif path == "/runs/bulk" and response.status_code == 303:  # B's own job: over none of A's runs
                job_id = response.headers["location"].split("?")[0].rstrip("/").split("/")[-1]
                job = ok(call(runtime, SECRET_KEY, "GET", f"/bulk-actions/{job_id}"))
                if job["total"]:
                    problems.append(f"dashboard {method} {path}: B's bulk job took {job['total']} of A's runs")
    return problems


def test_every_dashboard_page_and_form_is_sealed_between_environments(runtime, tmp_path):
    a = seed_victim(runtime, tmp_path)
    problems = dashboard_problems(runtime, a)
    assert not problems, "environment B reached A's data through the dashboard:\n" + "\n".join(problems)
    assert_victim_untouched(runtime, a)
