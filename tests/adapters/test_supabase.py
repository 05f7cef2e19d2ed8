"""Supabase adapter: the SQL `outlast supabase setup` emits runs on the real PostgreSQL, the requests its
triggers ask pg_net to send are replayed to the receiver, and the tasks they route to run on a real runtime.

pg_net is not installed here, so a stand-in `net.http_post` with pg_net's signature records each request
(url, headers, body) in a table, inside the transaction, as pg_net queues them.
"""

from __future__ import annotations

import http.server
import importlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import httpx
import psycopg
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from outlast import Client
from outlast._adapter import AdapterSettings
from outlast._errors import RuntimeUnavailableError
from outlast.adapters.supabase import OutboxDrainer, Router, SupabaseEvent, asgi_app, parse_event, supabase_client
from outlast.cli import app as cli
from tests.conftest import (
    PG_ADMIN_URL,
    PROJECTS,
    SECRET_KEY,
    RuntimeProcess,
    _create_pg_database,
    _drop_pg_database,
    runtime_process,
    wait_for,
)

SECRET = "sb_test_secret_4f1c"
STAND_IN = """
create schema net;
create table net.sent (id bigserial primary key, url text, body jsonb, headers jsonb, timeout_ms int);
create function net.http_post(url text, body jsonb default '{}', params jsonb default '{}',
                              headers jsonb default '{"Content-Type": "application/json"}',
                              timeout_milliseconds integer default 5000) returns bigint
language sql as $$
  insert into net.sent (url, body, headers, timeout_ms) values (url, body, headers, timeout_milliseconds) returning id
$$;
create table public.orders (id bigserial primary key, email text not null, status text not null);
create table public.customers (id bigserial primary key, name text);
create table public.payments (id bigserial primary key, amount int not null);

-- A webhook made in the Supabase dashboard: its trigger function builds the event and hands it to pg_net
-- with the headers typed into the dashboard (here the receiver's secret header).
create schema supabase_functions;
create function supabase_functions.http_request() returns trigger language plpgsql as $$
begin
  perform net.http_post(
    url := tg_argv[0],
    body := jsonb_build_object('old_record', case when tg_op = 'INSERT' then null else to_jsonb(old) end,
                               'record', case when tg_op = 'DELETE' then null else to_jsonb(new) end,
                               'type', tg_op, 'table', tg_table_name, 'schema', tg_table_schema),
    headers := tg_argv[2]::jsonb,
    timeout_milliseconds := tg_argv[4]::int);
  return null;
end $$;
create table public.invoices (id bigserial primary key, email text not null, status text not null);
"""
DASHBOARD_HOOK = """
create trigger invoices_hook after insert or update on public.invoices for each row execute function
  supabase_functions.http_request('https://app.example.com/outlast/supabase', 'POST',
                                  '{"Content-Type": "application/json", "x-outlast-secret": "%s"}', '{}', '1000')
"""


@pytest.fixture(scope="module")
def routes():
    path = str(PROJECTS / "supabase_shop")
    sys.path.insert(0, path)
    try:
        yield importlib.import_module("sb_routes").router
    finally:
        sys.path.remove(path)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    runtime = runtime_process(tmp_path_factory.mktemp("supabase-runtime"), None, project="supabase_shop")
    try:
        yield runtime.start()
    finally:
        runtime.close()


def _setup(database_url: str, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, ["supabase", "setup", *args, "--apply", database_url], env=env)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh database with the stand-in pg_net and the webhook (orders, customers) and outbox (payments)."""
    name = _create_pg_database()
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(STAND_IN)
            conn.execute(DASHBOARD_HOOK.replace("%s", SECRET))
        env = {"OUTLAST_SUPABASE_SECRET": SECRET}
        for table in ("public.orders", "public.customers"):
            result = _setup(url, "--table", table, "--events", "insert,update,delete",
                            "--url", "https://app.example.com/outlast/supabase", env=env)
            assert result.exit_code == 0, result.output
        result = _setup(url, "--table", "payments", "--outbox", "--url", "https://app.example.com/outlast/supabase",
                        env=env)  # both paths: the webhook, and the outbox as its safety net
        assert result.exit_code == 0, result.output
        yield url
    finally:
        _drop_pg_database(name)


@pytest.fixture
def db(database: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("truncate net.sent, public.orders, public.customers, public.payments, public.invoices, "
                     "outlast.outbox")
        yield conn


@pytest.fixture(scope="module")
def receiver(runtime: RuntimeProcess, routes) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OUTLAST_API_URL", runtime.url)
        patch.setenv("OUTLAST_SECRET_KEY", SECRET_KEY)
        patch.setenv("OUTLAST_SUPABASE_SECRET", SECRET)
        app = asgi_app(routes)
    with TestClient(app) as client:
        yield client


def sent(db: psycopg.Connection) -> list[tuple[str, dict, dict]]:
    return db.execute("select url, headers, body from net.sent order by id").fetchall()


def replay(receiver: TestClient, request: tuple[str, dict, dict]) -> httpx.Response:
    """Send what the trigger asked pg_net to send, to the receiver's path."""
    url, headers, body = request
    assert url == "https://app.example.com/outlast/supabase"
    return receiver.post("/supabase", json=body, headers=headers)


def test_setup_prints_the_sql_and_refuses_bad_options():
    runner = CliRunner()
    printed = runner.invoke(cli, ["supabase", "setup", "--table", "public.orders", "--events", "insert,update",
                                  "--url", "https://x.example/hook"], env={"OUTLAST_SUPABASE_SECRET": "s3'cret"})
    assert printed.exit_code == 0, printed.output
    assert "create trigger outlast_webhook after insert or update on \"public\".\"orders\"" in printed.output
    assert "'s3''cret'" in printed.output  # the secret goes into outlast.webhooks, quoted
    no_secret = runner.invoke(cli, ["supabase", "setup", "--table", "orders", "--url", "https://x.example/hook",
                                    "--secret-env", "NOT_SET_ANYWHERE"], env={"NOT_SET_ANYWHERE": ""})
    assert no_secret.exit_code == 2 and "NOT_SET_ANYWHERE" in no_secret.output
    bad_event = runner.invoke(cli, ["supabase", "setup", "--table", "orders", "--events", "insert,truncate",
                                    "--outbox"])
    assert bad_event.exit_code == 2 and "truncate" in bad_event.output
    no_target = runner.invoke(cli, ["supabase", "setup", "--table", "orders"])
    assert no_target.exit_code == 2 and "--url" in no_target.output


def test_recorded_webhooks_replayed_to_the_receiver_run_their_tasks(db, receiver, runtime):
    with db.transaction():
        db.execute("insert into orders (email, status) values ('ada@example.com', 'paid'), "
                   "('bo@example.com', 'pending')")
    db.execute("update orders set status = 'shipped' where email = 'ada@example.com'")
    db.execute("delete from orders where email = 'bo@example.com'")
    requests = sent(db)
    assert [r[2]["type"] for r in requests] == ["INSERT", "INSERT", "UPDATE", "DELETE"]
    assert requests[0][1]["x-outlast-secret"] == SECRET
    assert requests[0][2]["primary_key"] == ["id"] and requests[0][2]["commit_timestamp"]

    answers = [replay(receiver, request) for request in requests]
    assert [a.status_code for a in answers] == [202, 200, 202, 202], [a.text for a in answers]
    assert answers[1].json()["ignored"] is True  # pending order: the route's when() said no
    client = runtime.client()
    ada, bo = requests[0][2]["record"]["id"], requests[1][2]["record"]["id"]
    outputs = {}
    for answer in (answers[0], answers[2], answers[3]):
        (started,) = answer.json()["runs"]
        run = client.poll(started["id"], timeout=60)
        assert run.status == "COMPLETED", run.error
        outputs[run.task] = run.output
    assert outputs == {
        "sb-fulfil-order": {"order_id": ada, "email": "ada@example.com", "type": "INSERT"},
        "sb-order-shipped": {"order_id": ada, "was": "paid", "now": "shipped"},
        "sb-order-deleted": {"deleted": bo},
    }


def test_a_repeated_delivery_runs_once(db, receiver, runtime):
    db.execute("insert into orders (email, status) values ('cy@example.com', 'paid')")
    (request,) = sent(db)
    first, again = replay(receiver, request), replay(receiver, request)
    assert first.status_code == 202 and again.status_code == 200, (first.text, again.text)
    assert again.json()["runs"][0] == {**first.json()["runs"][0], "duplicate": True}
    order_id = request[2]["record"]["id"]
    runs = [r for r in runtime.client().iter_runs(task="sb-fulfil-order") if r.payload["record"]["id"] == order_id]
    assert len(runs) == 1


def test_the_same_row_changed_again_later_is_a_new_run(db, receiver):
    db.execute("insert into orders (email, status) values ('di@example.com', 'paid')")
    db.execute("update orders set status = 'shipped'")
    db.execute("update orders set status = 'paid'")
    db.execute("update orders set status = 'shipped'")
    updates = [r for r in sent(db) if r[2]["type"] == "UPDATE"]
    shipped = [replay(receiver, r).json()["runs"] for r in (updates[0], updates[2])]
    assert shipped[0][0]["id"] != shipped[1][0]["id"]  # two transactions shipped it: two runs


def test_wrong_or_missing_secret_is_401(db, receiver):
    db.execute("insert into orders (email, status) values ('eve@example.com', 'paid')")
    _, headers, body = sent(db)[0]
    wrong = receiver.post("/supabase", json=body, headers={**headers, "x-outlast-secret": SECRET + "x"})
    missing = receiver.post("/supabase", json=body)
    assert wrong.status_code == missing.status_code == 401
    assert wrong.json()["field"] == "x-outlast-secret"


def test_bad_shapes_are_4xx_naming_the_problem_and_unknown_tables_are_acknowledged(db, receiver, caplog):
    secret = {"x-outlast-secret": SECRET}
    not_json = receiver.post("/supabase", content=b"{nope", headers=secret)
    assert not_json.status_code == 422 and not_json.json()["field"] == "body"
    no_type = receiver.post("/supabase", json={"table": "orders", "schema": "public", "record": {"id": 1}},
                            headers=secret)
    assert no_type.status_code == 422 and no_type.json()["field"] == "type", no_type.text
    no_record = receiver.post("/supabase", json={"type": "INSERT", "table": "orders", "schema": "public"},
                              headers=secret)
    assert no_record.status_code == 422 and no_record.json()["field"] == "record", no_record.text
    no_key = receiver.post("/supabase", json={"type": "INSERT", "table": "orders", "schema": "public",
                                              "record": {"email": "x", "status": "paid"}}, headers=secret)
    assert no_key.status_code == 422 and no_key.json()["field"] == "record.id", no_key.text

    db.execute("insert into customers (name) values ('Ada')")
    (request,) = sent(db)
    with caplog.at_level("WARNING", logger="outlast.adapters.supabase"):
        unknown = replay(receiver, request)
    assert unknown.status_code == 200 and unknown.json() == {
        "ignored": True, "reason": "no route for table public.customers", "runs": []}
    assert "no route for table public.customers" in caplog.text


def test_outbox_loses_nothing_while_the_runtime_is_down(db, routes, tmp_path):
    # A runtime of its own, on the same port across the restart, so the drainer's client finds it again.
    runtime = runtime_process(tmp_path, None, project="supabase_shop").start()
    stop = threading.Event()
    drainer = OutboxDrainer(db.info.dsn, routes, client=Client(api_url=runtime.url, secret_key=SECRET_KEY, timeout=5,
                                                            retry_for=1),
                            poll_interval=0.2)
    try:
        runtime.stop()
        for amount in (1, 2):
            db.execute("insert into payments (amount) values (%s)", (amount * 100,))
        with pytest.raises(RuntimeUnavailableError):
            drainer.drain_once()
        assert db.execute("select count(*) from outlast.outbox").fetchone()[0] == 2  # nothing taken
        thread = threading.Thread(target=drainer.run, args=(stop,), daemon=True)
        thread.start()
        for amount in (3, 4, 5):  # more transactions while the drainer runs and nothing can take them
            db.execute("insert into payments (amount) values (%s)", (amount * 100,))
        assert db.execute("select count(*) from outlast.outbox").fetchone()[0] == 5
        runtime.start()
        wait_for(lambda: db.execute("select count(*) from outlast.outbox").fetchone()[0] == 0, timeout=60,
                 message="the outbox to drain")
        client = runtime.client()
        runs = list(client.iter_runs(task="sb-record-payment"))
        assert sorted(r.payload["record"]["amount"] for r in runs) == [100, 200, 300, 400, 500]
        for run in runs:
            assert client.poll(run.id, timeout=60).status == "COMPLETED"
            assert run.tags == ["payments"]
    finally:
        stop.set()
        runtime.close()
    thread.join(10)
    assert not thread.is_alive()


def test_outbox_keeps_rows_the_runtime_refuses_and_delivers_the_rest(db, routes, runtime):
    from outlast.adapters.supabase import Router

    refused = Router([*routes.routes])
    refused.on_insert("public.payments", task="no-such-task")
    db.execute("insert into payments (amount) values (7)")
    drainer = OutboxDrainer(db.info.dsn, refused, client=runtime.client())
    try:
        result = drainer.drain_once()
    finally:
        drainer.close()
    assert (result.triggered, result.deferred) == (0, 1)
    attempts, error = db.execute("select attempts, last_error from outlast.outbox").fetchone()
    assert attempts == 1 and "no-such-task" in error


class _PostgREST(http.server.BaseHTTPRequestHandler):
    """Answers every query with one row and remembers what it was asked."""

    seen: ClassVar[list[tuple[str, str | None]]] = []
    changes: ClassVar[list[tuple[str, str, str | None, dict]]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("apikey")))
        self._answer()

    def do_PATCH(self) -> None:
        sent = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.changes.append(("PATCH", self.path, self.headers.get("apikey"), sent))
        self._answer()

    def _answer(self) -> None:
        body = json.dumps([{"id": 1, "status": "paid"}]).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_supabase_client_helper_reads_the_run_environment(monkeypatch):
    from outlast import ConfigurationError

    monkeypatch.delenv("SUPABASE_URL", raising=False)
    with pytest.raises(ConfigurationError, match="SUPABASE_URL"):
        supabase_client()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PostgREST)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("SUPABASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.delenv("SUPABASE_SERVICE_ROLE_KEY", raising=False)
        monkeypatch.delenv("SUPABASE_SECRET_KEY", raising=False)
        with pytest.raises(ConfigurationError, match="SUPABASE_SERVICE_ROLE_KEY"):
            supabase_client()
        monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "service-role-key")
        client = supabase_client()
        assert client is supabase_client()  # one per process, reused by later runs
        rows = client.table("orders").select("*").eq("status", "paid").execute().data
    finally:
        server.shutdown()
    assert rows == [{"id": 1, "status": "paid"}]
    assert _PostgREST.seen == [("/rest/v1/orders?select=%2A&status=eq.paid", "service-role-key")]


def test_event_keys_identify_the_row_and_the_transaction():
    base = {"type": "UPDATE", "table": "orders", "schema": "public", "record": {"id": 5, "s": "b"},
            "old_record": {"id": 5, "s": "a"}, "commit_timestamp": "2026-01-01T00:00:00.000001Z",
            "transaction_id": "42", "primary_key": ["id"]}
    key = SupabaseEvent.model_validate(base).idempotency_key()
    assert key.startswith("supabase:public.orders:UPDATE:")
    assert SupabaseEvent.model_validate({**base, "record": {"id": 5, "s": "c"}}).idempotency_key() == key
    assert SupabaseEvent.model_validate({**base, "transaction_id": "43"}).idempotency_key() != key
    assert SupabaseEvent.model_validate({**base, "record": {"id": 6, "s": "b"}}).idempotency_key() != key


def test_receiver_mounts_in_a_fastapi_app_through_the_adapter_core(db, routes, runtime):
    from fastapi import FastAPI

    from outlast.adapters.fastapi import Outlast
    from outlast.adapters.supabase import mount

    app = FastAPI()
    outlast = Outlast(app, api_url=runtime.url, secret_key=SECRET_KEY)
    mount(outlast, routes, secret=SECRET)
    db.execute("insert into orders (email, status) values ('fay@example.com', 'paid')")
    _, headers, body = sent(db)[0]
    with TestClient(app) as http:
        answer = http.post("/outlast/supabase", json=body, headers=headers)
        assert answer.status_code == 202, answer.text
        assert http.post("/outlast/supabase", json=body).status_code == 401
    run = runtime.client().poll(answer.json()["runs"][0]["id"], timeout=60)
    assert run.status == "COMPLETED" and run.output["email"] == "fay@example.com"


def test_drain_command_delivers_the_outbox_once(db, routes, runtime):
    db.execute("insert into payments (amount) values (42)")
    env = {"OUTLAST_API_URL": runtime.url, "OUTLAST_SECRET_KEY": SECRET_KEY}
    args = ["supabase", "drain", "--database-url", db.info.dsn, "--routes", "sb_routes:router", "--once"]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    assert "triggered 1" in result.output
    assert db.execute("select count(*) from outlast.outbox").fetchone()[0] == 0
    again = CliRunner().invoke(cli, args, env=env)
    assert "triggered 0" in again.output
    bad = CliRunner().invoke(cli, [*args[:-2], "sb_routes:nothing", "--once"], env=env)
    assert bad.exit_code == 2 and "is not a Router" in bad.output


def test_webhook_and_outbox_of_the_same_change_start_one_run(db, routes, receiver, runtime):
    db.execute("insert into payments (amount) values (99)")
    (request,) = sent(db)
    delivered = replay(receiver, request)
    assert delivered.status_code == 202, delivered.text
    drainer = OutboxDrainer(db.info.dsn, routes, client=runtime.client())
    try:
        result = drainer.drain_once()
    finally:
        drainer.close()
    assert result.triggered == 1
    payment = request[2]["record"]["id"]
    runs = [r for r in runtime.client().iter_runs(task="sb-record-payment") if r.payload["record"]["id"] == payment]
    assert [r.id for r in runs] == [delivered.json()["runs"][0]["id"]]


def test_routes_are_declared_by_call_decorator_or_table_and_checked_at_once():
    from outlast import InvalidRequestError, task
    from outlast.adapters.supabase import Router

    router = Router()

    @router.on_update("invoices", when=lambda row, old: row["total"] != old["total"])
    @task(id="sb-test-reprice")
    def reprice(event: dict) -> None: ...

    (route,) = router.routes
    assert (route.table, route.event, route.task) == ("public.invoices", "UPDATE", "sb-test-reprice")
    table = Router.from_table({"billing.invoices": {"insert": reprice, "delete": ["audit", reprice]}})
    assert [(r.table, r.event, r.task) for r in table.routes] == [
        ("billing.invoices", "INSERT", "sb-test-reprice"), ("billing.invoices", "DELETE", "audit"),
        ("billing.invoices", "DELETE", "sb-test-reprice")]
    with pytest.raises(InvalidRequestError) as caught:
        router.on_insert("invoices", task=reprice, priority="high")
    assert caught.value.field == "priority"
    with pytest.raises(ValueError, match="truncate"):
        router.add("invoices", "truncate", reprice)
    with pytest.raises(ValueError, match=r"schema\.table"):
        router.on_insert("a.b.c", task=reprice)


def test_receiver_mounts_in_a_flask_app_through_the_adapter_core(db, routes, runtime):
    from flask import Flask

    from outlast.adapters.flask import Outlast
    from outlast.adapters.supabase import mount

    outlast = Outlast()
    mount(outlast, routes, secret=SECRET)
    app = Flask(__name__)
    app.config.update(OUTLAST_API_URL=runtime.url, OUTLAST_SECRET_KEY=SECRET_KEY)
    outlast.init_app(app)
    db.execute("insert into orders (email, status) values ('gus@example.com', 'paid')")
    _, headers, body = sent(db)[0]
    http = app.test_client()
    answer = http.post("/outlast/supabase", json=body, headers=headers)
    assert answer.status_code == 202, answer.text
    assert http.post("/outlast/supabase", json=body, headers={"x-outlast-secret": "nope"}).status_code == 401
    run = runtime.client().poll(answer.get_json()["runs"][0]["id"], timeout=60)
    assert run.status == "COMPLETED" and run.output["email"] == "gus@example.com"


def test_the_example_app_runs_as_documented(db, tmp_path):
    """examples/supabase_app: its routes and standalone receiver, its tasks on a runtime whose SUPABASE_URL
    is a local stand-in for the project's REST API, which records what the task changes."""
    from tests.adapters._support import EXAMPLES, app_env, load_example

    api = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PostgREST)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    runtime = runtime_process(tmp_path, None, project=None, extra_args=["--project", str(EXAMPLES / "supabase_app")],
                              extra_env={"SUPABASE_URL": f"http://127.0.0.1:{api.server_address[1]}",
                                         "SUPABASE_SERVICE_ROLE_KEY": "service-role-key",
                                         "OUTLAST_TASK_PASS_ENV": "SUPABASE_*"})
    try:
        runtime.start()
        example = load_example("supabase_app", "receiver", app_env(runtime, OUTLAST_SUPABASE_SECRET=SECRET))
        db.execute("insert into orders (email, status) values ('hal@example.com', 'paid')")
        _, headers, body = sent(db)[0]
        with TestClient(example.app) as receiver:
            answer = receiver.post("/supabase", json=body, headers=headers)
        assert answer.status_code == 202, answer.text
        run = runtime.client().poll(answer.json()["runs"][0]["id"], timeout=60)
        assert run.status == "COMPLETED", (run.error, runtime.log())
    finally:
        runtime.close()
        api.shutdown()
    order = body["record"]["id"]
    assert run.output == {"order_id": order} and run.tags == ["orders"]
    assert _PostgREST.changes == [("PATCH", f"/rest/v1/orders?id=eq.{order}", "service-role-key",
                                   {"status": "fulfilling"})]


def test_dashboard_webhooks_reach_the_receiver_and_repeats_still_run_once(db, receiver, runtime):
    """Events from supabase_functions.http_request carry no commit timestamp: their content identifies them."""
    db.execute("insert into invoices (email, status) values ('ida@example.com', 'paid')")
    (request,) = sent(db)
    assert "commit_timestamp" not in request[2]
    first, again = replay(receiver, request), replay(receiver, request)
    assert (first.status_code, again.status_code) == (202, 200), (first.text, again.text)
    assert again.json()["runs"][0]["id"] == first.json()["runs"][0]["id"]
    run = runtime.client().poll(first.json()["runs"][0]["id"], timeout=60)
    assert run.status == "COMPLETED" and run.output["email"] == "ida@example.com"


def test_a_dashboard_webhook_starts_a_run_per_change_and_absorbs_only_quick_repeats(db, routes, runtime):
    """shipped -> paid -> shipped in separate transactions: the two "shipped" deliveries are byte for byte the
    same (a dashboard webhook sends no commit timestamp), yet each change starts its run; the same delivery
    arriving twice within the repeat window starts one."""
    router = Router([*routes.routes])
    router.on_update("public.invoices", task="sb-order-shipped",
                     when=lambda row, old: row["status"] == "shipped" and old["status"] != "shipped")
    window = 1.5
    settings = AdapterSettings.from_mapping({}, api_url=runtime.url, secret_key=SECRET_KEY, prefix="/")
    app = asgi_app(router, secret=SECRET, settings=settings, repeat_window=window)
    db.execute("insert into invoices (email, status) values ('jo@example.com', 'paid')")

    def change(status: str) -> dict:
        """Commit a change, then send what its trigger asked pg_net to send (pg_net sends after commit)."""
        db.execute("update invoices set status = %s where email = 'jo@example.com'", (status,))
        return sent(db)[-1]

    with TestClient(app) as receiver:
        shipped = change("shipped")
        started = time.monotonic()
        first, repeat = replay(receiver, shipped), replay(receiver, shipped)  # a network-level repeat
        assert (first.status_code, repeat.status_code) == (202, 200), (first.text, repeat.text)
        assert repeat.json()["runs"][0] == {**first.json()["runs"][0], "duplicate": True}
        paid = replay(receiver, change("paid"))
        assert paid.json()["ignored"] is True  # the route's when(): not a change to shipped
        time.sleep(max(0.0, window - (time.monotonic() - started)) + 0.5)  # the row changes again later
        shipped_again = change("shipped")
        assert shipped_again[2] == shipped[2]  # nothing in the delivery tells the two changes apart
        again = replay(receiver, shipped_again)
    assert again.status_code == 202, again.text
    runs = [runtime.client().poll(answer.json()["runs"][0]["id"], timeout=60) for answer in (first, again)]
    assert runs[0].id != runs[1].id
    assert [run.output for run in runs] == [{"order_id": shipped[2]["record"]["id"], "was": "paid",
                                             "now": "shipped"}] * 2


def test_only_dashboard_events_hold_their_key_for_the_repeat_window_alone():
    router = Router()
    router.on_update("public.orders", task="sb-order-shipped")
    change = {"type": "UPDATE", "table": "orders", "schema": "public", "record": {"id": 1, "s": "b"},
              "old_record": {"id": 1, "s": "a"}}
    (dashboard,) = router.plan(parse_event(change), repeat_window=3)
    (trigger,) = router.plan(parse_event({**change, "commit_timestamp": "2026-01-01T00:00:00.000001Z",
                                          "transaction_id": "7", "primary_key": ["id"]}))
    assert dashboard.options.idempotency_key_ttl == 3
    assert trigger.options.idempotency_key_ttl is None  # the runtime's default: 30 days
