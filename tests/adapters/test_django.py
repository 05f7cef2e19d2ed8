"""Django adapter, with pytest-django, against a real runtime started as `python manage.py outlast dev`.

The Django project is tests/projects/django_shop. Its SQLite database is one file that this test process
(pytest-django's test database) and the runtime's task processes (which set Django up from
DJANGO_SETTINGS_MODULE) share, so a task's ORM writes are visible here.

Django is configured by this module (not by DJANGO_SETTINGS_MODULE in the environment), so that the
runtimes other test modules start never inherit this project's settings.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import django
import httpx
import pytest
from asgiref.sync import async_to_sync
from django.conf import settings

from outlast import InvalidRequestError
from outlast._adapter import sign_webhook
from tests.conftest import PROJECTS, ROOT, SECRET_KEY, RuntimeProcess, free_port, wait_for

PROJECT = PROJECTS / "django_shop"
SCRATCH = Path(tempfile.mkdtemp(prefix="outlast-django-"))
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)  # after pytest-django has dropped the test database
DATABASE = SCRATCH / "shop.sqlite3"
PORT = free_port()
URL = f"http://127.0.0.1:{PORT}"

if not settings.configured:
    sys.path.insert(0, str(PROJECT))
    from djshop import settings as project_settings

    values = {name: getattr(project_settings, name) for name in dir(project_settings) if name.isupper()}
    values["DATABASES"] = {"default": {**values["DATABASES"]["default"], "NAME": str(DATABASE),
                                       "TEST": {"NAME": str(DATABASE)}}}
    values["OUTLAST"] = {**values["OUTLAST"], "API_URL": URL, "SECRET_KEY": SECRET_KEY}
    settings.configure(**values)
    django.setup()

from django.core.management import CommandError, call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django.test import AsyncClient, Client  # noqa: E402

from outlast.adapters.django import endpoints, trigger_on_commit  # noqa: E402

pytestmark = pytest.mark.skipif(settings.ROOT_URLCONF != "djshop.urls",
                                reason="Django was configured by another project in this process")


@pytest.fixture(scope="module")
def runtime(django_db_setup) -> Iterator[RuntimeProcess]:
    """`manage.py outlast dev`: an embedded runtime whose tasks are the installed apps' tasks modules."""
    from django.db import connection

    # The database pytest-django created (under pytest-xdist its name carries the worker's suffix).
    env = {**os.environ, "DJSHOP_DB": connection.settings_dict["NAME"], "DJANGO_SETTINGS_MODULE": "djshop.settings",
           "OUTLAST_TASK_PASS_ENV": "DJSHOP_DB",  # the settings read it in task processes too
           "OUTLAST_API_URL": URL, "OUTLAST_SECRET_KEY": SECRET_KEY, "OUTLAST_HEARTBEAT_INTERVAL": "0.5"}
    env.pop("OUTLAST_DATABASE_URL", None)
    args = [sys.executable, str(PROJECT / "manage.py"), "outlast", "dev", "--data-dir", str(SCRATCH / "data")]
    runtime = RuntimeProcess(args=args, env=env, url=URL, scratch=SCRATCH, log_path=SCRATCH / "runtime.log")
    try:
        runtime.start()
        wait_for(lambda: "dj-fulfil-order" in _task_ids(), timeout=60, message="the project's tasks")
        yield runtime
    finally:
        runtime.close()


def _task_ids(url: str = URL) -> set[str]:
    answer = httpx.get(url + "/api/v1/tasks", headers={"Authorization": f"Bearer {SECRET_KEY}"})
    return {task["id"] for task in answer.json()} if answer.status_code == 200 else set()


def _order(order_id: int):
    from shop.models import Order

    return Order.objects.get(id=order_id)


@pytest.mark.django_db(transaction=True)
def test_view_triggers_after_commit_and_the_task_uses_the_orm(runtime):
    answer = Client().post("/orders/", {"email": "ada@example.com"}, content_type="application/json")
    assert answer.status_code == 201, answer.content
    order_id, run_id = answer.json()["order_id"], answer.json()["run_id"]
    assert run_id  # the trigger went out when the view's transaction committed

    run = runtime.client().poll(run_id, timeout=60)
    assert run.status == "COMPLETED", (run.error, runtime.log())
    assert run.output == {"order_id": order_id, "email": "ada@example.com", "status": "fulfilled"}
    assert _order(order_id).status == "fulfilled"  # written by the task process through the ORM


@pytest.mark.django_db(transaction=True)
def test_rolled_back_transaction_triggers_nothing(runtime):
    from shop.models import Order

    declined = Client().post("/orders/", {"email": "bo@example.com", "decline": True},
                             content_type="application/json")
    assert declined.status_code == 402
    assert not Order.objects.exists()
    client = runtime.client()
    # The view has returned: a trigger sent on commit would already be in the runtime.
    assert client.list_runs(tag="email:bo@example.com").data == []

    paid = Client().post("/orders/", {"email": "bo@example.com"}, content_type="application/json")
    assert paid.status_code == 201
    assert [r.id for r in client.list_runs(tag="email:bo@example.com").data] == [paid.json()["run_id"]]


@pytest.mark.django_db(transaction=True)
def test_batch_trigger_on_commit_starts_one_run_per_order(runtime):
    from shop.models import Order

    answer = Client().post("/orders/bulk/", {"emails": ["a@x.io", "b@x.io", "c@x.io"]},
                           content_type="application/json")
    assert answer.status_code == 201, answer.content
    client = runtime.client()
    for run_id in answer.json()["run_ids"]:
        assert client.poll(run_id, timeout=60).status == "COMPLETED"
    assert sorted(Order.objects.values_list("status", flat=True)) == ["fulfilled"] * 3


@pytest.mark.django_db(transaction=True)
def test_bad_options_fail_inside_the_transaction_not_after_it(runtime):
    from shop.tasks import fulfil_order

    with pytest.raises(InvalidRequestError) as caught, transaction.atomic():
        trigger_on_commit(fulfil_order, {"order_id": 1}, priority="urgent")
    assert caught.value.field == "priority"


@pytest.mark.django_db(transaction=True)
def test_adapter_endpoints_under_wsgi_and_asgi(runtime):
    from shop.models import Order

    # (Only this project's task is checked: other test modules may have declared tasks in this process.)
    wsgi = Client().get("/outlast/health").json()
    asgi = async_to_sync(AsyncClient().get)("/outlast/health").json()
    for health in (wsgi, asgi):
        assert health["runtime_reachable"] and health["key_valid"], health
        assert health["tasks"]["dj-fulfil-order"]["deployed"] is True

    order = Order.objects.create(email="cy@example.com")
    body = json.dumps({"order_id": order.id}).encode()
    signed = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in sign_webhook("whsec_djshop", body).items()}
    strict = Client(enforce_csrf_checks=True)  # the views are CSRF-exempt: a webhook has no CSRF token
    answer = strict.post("/outlast/webhooks/orders", body, content_type="application/json", **signed)
    assert answer.status_code == 202, answer.content
    assert runtime.client().poll(answer.json()["run_id"], timeout=60).status == "COMPLETED"
    forged = strict.post("/outlast/webhooks/orders", body, content_type="application/json",
                         **{**signed, "HTTP_OUTLAST_WEBHOOK_SIGNATURE": "v1=00"})
    assert forged.status_code == 401


def _sse(chunks: list[bytes]) -> list[dict]:
    return [json.loads(line[6:]) for line in b"".join(chunks).decode().splitlines() if line.startswith("data: ")]


@pytest.mark.django_db(transaction=True)
def test_run_stream_is_sent_as_it_goes_under_wsgi_and_asgi(runtime):
    run_id = Client().post("/orders/", {"email": "di@example.com"}, content_type="application/json").json()["run_id"]
    token = runtime.client().create_public_token(run_id).token
    path = f"/outlast/runs/{run_id}/stream?token={token}"

    wsgi = Client().get(path)
    assert wsgi.status_code == 200 and wsgi["content-type"] == "text/event-stream"
    assert not isinstance(wsgi.streaming_content, bytes)
    assert _sse(list(wsgi.streaming_content))[-1]["status"] == "COMPLETED"

    async def read_asgi() -> tuple[int, list[bytes]]:
        response = await AsyncClient().get(path)
        return response.status_code, [chunk async for chunk in response.streaming_content]

    status, chunks = async_to_sync(read_asgi)()
    assert status == 200 and _sse(chunks)[-1]["status"] == "COMPLETED"
    assert Client().get(f"/outlast/runs/{run_id}").status_code == 401


@pytest.mark.django_db(transaction=True)
def test_supabase_receiver_mounts_in_django(runtime):
    from shop.models import Order
    from shop.tasks import fulfil_order

    from outlast.adapters.supabase import Router, mount

    router = Router()
    router.on_insert("public.shop_order", task=fulfil_order, payload=lambda event: {"order_id": event.record["id"]})
    if ("POST", "/supabase") not in endpoints().routes:
        mount(endpoints(), router, secret="sb_django")
    order = Order.objects.create(email="eve@example.com")
    event = {"type": "INSERT", "schema": "public", "table": "shop_order", "record": {"id": order.id},
             "old_record": None, "commit_timestamp": "2026-11-27T10:00:00.000000Z", "transaction_id": "7"}
    answer = Client().post("/outlast/supabase", event, content_type="application/json",
                           HTTP_X_OUTLAST_SECRET="sb_django")
    assert answer.status_code == 202, answer.content
    (started,) = answer.json()["runs"]
    assert runtime.client().poll(started["id"], timeout=60).status == "COMPLETED"
    assert _order(order.id).status == "fulfilled"
    wrong = Client().post("/outlast/supabase", event, content_type="application/json", HTTP_X_OUTLAST_SECRET="nope")
    assert wrong.status_code == 401


@pytest.mark.django_db(transaction=True)
def test_management_command_wraps_the_cli(runtime, capsys):
    from shop.models import Order

    order = Order.objects.create(email="fay@example.com")
    capsys.readouterr()
    # settings.OUTLAST gives the CLI its runtime and key (this process has no OUTLAST_* variables).
    call_command("outlast", "trigger", "dj-fulfil-order", "--payload", json.dumps({"order_id": order.id}))
    run_id = capsys.readouterr().out.strip()
    assert runtime.client().poll(run_id, timeout=60).status == "COMPLETED"
    call_command("outlast", "runs", "show", run_id, "--json")
    shown = json.loads(capsys.readouterr().out)["run"]
    assert shown["id"] == run_id and shown["output"]["status"] == "fulfilled"
    with pytest.raises(SystemExit) as failed:
        call_command("outlast", "runs", "show", "run_doesnotexist")
    assert failed.value.code == 1 and "run_doesnotexist" in capsys.readouterr().err
    assert os.environ.get("OUTLAST_API_URL") != URL  # the settings were lent to the CLI, not left behind

    import typer

    from outlast.cli import app

    if "deploy" not in typer.main.get_command(app).commands:  # `outlast deploy` is another issue's
        with pytest.raises(CommandError, match="no `deploy` command"):
            call_command("outlast", "deploy")


def test_task_process_sets_django_up_before_importing_tasks(tmp_path):
    """The hook itself: a task module that imports models imports cleanly in a bare interpreter."""
    env = {**os.environ, "DJSHOP_DB": str(tmp_path / "x.sqlite3"), "DJANGO_SETTINGS_MODULE": "djshop.settings",
           "PYTHONPATH": str(PROJECT)}
    code = ("from outlast._libraries import setup_django\nfrom outlast._process import import_tasks\n"
            "setup_django(); import_tasks(['shop.tasks'])\n"
            "from outlast._tasks import registered_tasks; print(sorted(registered_tasks()))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "dj-fulfil-order" in done.stdout


_EXAMPLE_CLIENT = """
import json, os, sys
import django
django.setup()
from django.test.utils import setup_test_environment
setup_test_environment()
from django.test import Client
from outlast import Client as Outlast

placed = Client().post("/orders/", {"email": "ada@example.com", "total_cents": 1250}, content_type="application/json")
assert placed.status_code == 201, placed.content
run = Outlast().poll(placed.json()["run_id"], timeout=60)
stream = Client().get(placed.json()["stream"])
events = [line for line in b"".join(stream.streaming_content).decode().splitlines() if line.startswith("data: ")]
order = Client().get(f"/orders/{placed.json()['order_id']}/").json()
print(json.dumps({"status": run.status.value, "order": order, "last_event": json.loads(events[-1][6:])["status"]}))
"""


def test_the_example_project_runs_as_documented(tmp_path):
    """examples/django_app, in a copy: migrate, `manage.py outlast dev`, place an order, follow its run."""
    project = shutil.copytree(ROOT / "examples" / "django_app", tmp_path / "django_app")
    port = free_port()
    env = {**os.environ, "OUTLAST_API_URL": f"http://127.0.0.1:{port}", "OUTLAST_SECRET_KEY": SECRET_KEY,
           "DJANGO_SETTINGS_MODULE": "mysite.settings", "PYTHONPATH": str(project)}
    env.pop("OUTLAST_DATABASE_URL", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=project, env=env, check=True, timeout=120)
    dev = RuntimeProcess(args=[sys.executable, str(project / "manage.py"), "outlast", "dev"], env=env,
                         url=f"http://127.0.0.1:{port}", scratch=tmp_path, log_path=tmp_path / "dev.log")
    try:
        dev.start()
        wait_for(lambda: "django-send-receipt" in _task_ids(dev.url), timeout=60, message="the example's tasks")
        done = subprocess.run([sys.executable, "-c", _EXAMPLE_CLIENT], cwd=project, env=env, capture_output=True,
                              text=True, timeout=120)
    finally:
        dev.close()
    assert done.returncode == 0, done.stderr + dev.log()
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "COMPLETED" and result["last_event"] == "COMPLETED"
    assert result["order"]["status"] == "receipt_sent"
    assert result["order"]["receipt"].endswith("12.50 EUR, thank you!")
