"""The dashboard in Debian's Chromium (Playwright, never a downloaded browser) against one real runtime.

The run page's live part is polled by htmx (every second, only that fragment): the checks below see
it change with no reload. Screenshots of the main pages go to tests/.artifacts/dashboard/.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from outlast.wire import TriggerOptions
from tests.browser import chromium_context, needs_chromium
from tests.conftest import SECRET_KEY, runtime_process

ARTIFACTS = Path(__file__).resolve().parent.parent / ".artifacts" / "dashboard"

pytest.importorskip("playwright.sync_api")
pytestmark = needs_chromium


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    process = runtime_process(tmp_path_factory.mktemp("dashboard"), None, project="waits", slots=4,
                              extra_env={"OUTLAST_CHECKPOINT_AFTER": "1"})
    yield process.start()
    process.close()


@pytest.fixture(scope="module")
def client(runtime):
    return runtime.client()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    yield from chromium_context(tmp_path_factory.mktemp("chromium-profile"))


@pytest.fixture(scope="module")
def page(browser, runtime):
    """A page logged in to the dev environment."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page()
    page.goto(runtime.url + "/")
    page.wait_for_url("**/login**")
    page.fill("input[name=secret_key]", SECRET_KEY)
    page.click("form[action='/login'] button")
    page.wait_for_selector("table#runs")
    return page


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_a_wrong_key_is_refused(browser, runtime):
    page = browser.new_page()
    page.goto(runtime.url + "/login")
    page.fill("input[name=secret_key]", "ol_dev_not_a_key")
    page.click("form[action='/login'] button")
    assert "matches no environment" in page.inner_text("#login-error")
    shot(page, "login-refused")
    page.goto(runtime.url + "/runs/run_x")
    assert "/login" in page.url, "no session: every page sends you to the login"
    page.close()


def test_the_runs_list_filters_by_task_and_status(page, runtime, client):
    done = client.trigger("double", {"value": 2})
    client.poll(done.id, timeout=60)
    slow = client.trigger("slow", {"seconds": 30})
    page.goto(runtime.url + "/?task=double&status=COMPLETED")
    ids = page.locator("table#runs tbody tr[data-run]").evaluate_all("rows => rows.map(r => r.dataset.run)")
    assert done.id in ids and slow.id not in ids
    page.goto(runtime.url + "/?task=slow")
    ids = page.locator("table#runs tbody tr[data-run]").evaluate_all("rows => rows.map(r => r.dataset.run)")
    assert ids == [slow.id]
    page.goto(runtime.url + "/?created_after=yesterday")
    assert "created_after" in page.inner_text("#error-message")
    client.cancel_run(slow.id)


def test_a_run_page_follows_the_run_and_approving_its_token_resumes_it(page, runtime, client):
    marker = uuid.uuid4().hex
    handle = client.trigger("approval", {"marker": marker})
    page.goto(runtime.url + f"/runs/{handle.id}")
    seen = set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not page.locator("#checkpoint").count():
        seen.add(page.inner_text("#run-status"))
        time.sleep(0.2)
    seen.add(page.inner_text("#run-status"))
    assert "WAITING" in seen, seen
    assert "mode criu" in page.inner_text("#timeline") or "criu" in page.inner_text("#checkpoint")
    shot(page, "run-waiting")
    page.click(".token-form button[name=approve]")
    page.wait_for_url(f"**/runs/{handle.id}")
    page.wait_for_selector("#run-status.status-COMPLETED", timeout=90_000)  # polled in, no reload
    assert json.loads(page.inner_text("#output"))["data"] == {"approved": True}
    shot(page, "run-completed")


RECORD_STATUSES = """() => {
  window.__statuses = [document.querySelector('#run-status').innerText];
  new MutationObserver(() => {
    const now = document.querySelector('#run-status')?.innerText;
    if (now && window.__statuses[window.__statuses.length - 1] !== now) window.__statuses.push(now);
  }).observe(document.body, {childList: true, subtree: true});
}"""


def test_a_run_page_goes_from_executing_through_waiting_to_completed_without_reload(page, runtime, client):
    # ~50 MB of state built before the wait: the run is EXECUTING for a few seconds, then checkpointed.
    handle = client.trigger("stateful-wait", {"marker": uuid.uuid4().hex, "seconds": 4})
    page.goto(runtime.url + f"/runs/{handle.id}")
    page.evaluate(RECORD_STATUSES)  # every status the polled fragment shows, in order; lost on a reload
    page.wait_for_selector("#run-status.status-COMPLETED", timeout=120_000)
    statuses = page.evaluate("window.__statuses")
    assert statuses is not None, "the page was reloaded"
    assert statuses[-1] == "COMPLETED"
    assert statuses.index("EXECUTING") < statuses.index("WAITING") < statuses.index("COMPLETED"), statuses
    assert "checkpointed" in page.inner_text("#timeline")
    shot(page, "run-page")


def test_bulk_cancel_of_a_selection(page, runtime, client):
    handles = [client.trigger("slow", {"seconds": 60}, TriggerOptions(tags=["bulk"])) for _ in range(3)]
    keep = client.trigger("slow", {"seconds": 60}, TriggerOptions(tags=["bulk-keep"]))
    page.goto(runtime.url + "/?tag=bulk")
    for handle in handles:
        page.check(f"input[value='{handle.id}']")
    shot(page, "runs")
    page.click("button[value=cancel]")
    # One durable bulk job (not run by run from the request): its page follows it until it is done.
    page.wait_for_selector("#bulk-progress[data-state=COMPLETED]", timeout=30_000)
    job_id = page.url.rsplit("/", 1)[-1]
    assert job_id.startswith("bulk_")
    assert "3 of 3 runs handled: 3 cancelled" in page.inner_text("#bulk-progress")
    shot(page, "bulk-job")
    job = httpx.get(f"{runtime.url}/api/v1/bulk-actions/{job_id}", headers={"Authorization": f"Bearer {SECRET_KEY}"})
    assert job.json()["action"] == "cancel" and job.json()["total"] == 3, job.text
    for handle in handles:
        assert client.retrieve_run(handle.id).status.value == "CANCELED"
    assert client.retrieve_run(keep.id).status.value != "CANCELED"
    client.cancel_run(keep.id)


def test_a_forged_form_post_is_refused(page, runtime, client):
    handle = client.trigger("slow", {"seconds": 60})
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    forged = httpx.post(runtime.url + f"/runs/{handle.id}/cancel", cookies=cookies, data={"csrf": "forged"})
    assert forged.status_code == 403 and "CSRF" in forged.text
    missing = httpx.post(runtime.url + "/runs/bulk", cookies=cookies, data={"run": handle.id, "action": "cancel"})
    assert missing.status_code == 403
    assert client.retrieve_run(handle.id).status.value != "CANCELED"
    client.cancel_run(handle.id)


def test_screenshots_of_every_main_page(page, runtime):
    for path, name in (("/", "runs-list"), ("/tokens", "tokens"), ("/schedules", "schedules"),
                       ("/deployments", "deployments"), ("/queues", "queues"), ("/env-vars", "env-vars"),
                       ("/nodes", "nodes")):
        response = page.goto(runtime.url + path)
        assert response.status == 200, path
        shot(page, name)
    assert "checkpointing" in page.inner_text("#health")
