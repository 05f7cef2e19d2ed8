"""Realtime in Debian's Chromium (Playwright, never a downloaded browser) against a real runtime: the
dashboard's run page follows the run over SSE (no polling), and the browser module in the example page
(examples/realtime/index.html, served from another origin) reads a 1,000-chunk stream in order across
a connection cut mid-stream, and is refused with a wrong or expired token."""

from __future__ import annotations

import functools
import threading
import time
import uuid
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode, urlparse

import pytest

from tests.browser import chromium_context, needs_chromium
from tests.conftest import SECRET_KEY, runtime_process
from tests.realtime.proxy import CuttingProxy

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "realtime"
ARTIFACTS = Path(__file__).resolve().parent.parent / ".artifacts" / "realtime"

pytest.importorskip("playwright.sync_api")
pytestmark = needs_chromium


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    process = runtime_process(tmp_path_factory.mktemp("realtime-browser"), None, project="realtime", slots=4,
                              extra_env={"OUTLAST_CHECKPOINT_AFTER": "1"})
    yield process.start()
    process.close()


@pytest.fixture(scope="module")
def client(runtime):
    return runtime.client()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield from chromium_context(tmp_path_factory.mktemp("chromium-profile"))


@pytest.fixture(scope="module")
def example_site():
    """The example page on an origin of its own, as an app would serve it."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(EXAMPLE))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _login(browser, runtime):
    page = browser.new_page()
    page.goto(runtime.url + "/login")
    page.fill("input[name=secret_key]", SECRET_KEY)
    page.click("form[action='/login'] button")
    page.wait_for_selector("table#runs")
    return page


RECORD_STATUSES = """() => {
  window.__statuses = [document.querySelector('#run-status').innerText];
  new MutationObserver(() => {
    const now = document.querySelector('#run-status')?.innerText;
    if (now && window.__statuses[window.__statuses.length - 1] !== now) window.__statuses.push(now);
  }).observe(document.body, {childList: true, subtree: true});
}"""


def test_the_run_page_follows_the_run_over_sse_without_polling(browser, runtime, client):
    page = _login(browser, runtime)
    marker = uuid.uuid4().hex
    handle = client.trigger("gated", {"marker": marker})
    fragments: list[str] = []
    subscriptions: list[str] = []
    page.on("request", lambda r: fragments.append(r.url) if r.url.endswith(f"/runs/{handle.id}/live") else None)
    page.on("request", lambda r: subscriptions.append(r.url) if "/subscribe" in r.url else None)
    page.goto(runtime.url + f"/runs/{handle.id}")
    page.wait_for_function("() => document.querySelector('#metadata').innerText.includes('\"step\": 1')",
                           timeout=30_000)
    page.evaluate(RECORD_STATUSES)
    settled = len(fragments)
    time.sleep(3)  # nothing changes: a polled page would fetch its fragment about three times here
    assert len(fragments) == settled, f"the page fetched its fragment with no change: {fragments[settled:]}"
    assert subscriptions and urlparse(subscriptions[0]).path == f"/runs/{handle.id}/subscribe"
    (runtime.scratch / f"{marker}.go").write_text("1")
    page.wait_for_selector("#run-status.status-COMPLETED", timeout=30_000)
    assert page.evaluate("window.__statuses")[-1] == "COMPLETED", "the page was reloaded"
    assert '"step": 2' in page.inner_text("#metadata")
    page.close()


def test_the_run_page_goes_executing_waiting_completed_over_sse(browser, runtime, client):
    page = _login(browser, runtime)
    handle = client.trigger("change-and-wait", {"marker": uuid.uuid4().hex, "seconds": 4})
    page.goto(runtime.url + f"/runs/{handle.id}")
    page.evaluate(RECORD_STATUSES)
    page.wait_for_selector("#run-status.status-COMPLETED", timeout=90_000)
    statuses = page.evaluate("window.__statuses")
    assert statuses is not None, "the page was reloaded"
    assert statuses.index("EXECUTING") < statuses.index("WAITING") < statuses.index("COMPLETED"), statuses
    assert '"phase": "after"' in page.inner_text("#metadata")
    assert "progress" in page.inner_text("#streams")  # its stream, with chunk and byte counts
    page.screenshot(path=str(ARTIFACTS / "run-page-sse.png"), full_page=True)
    page.close()


def test_the_browser_module_reads_1000_chunks_in_order_across_a_cut_connection(browser, runtime, client,
                                                                                example_site):
    marker = uuid.uuid4().hex
    handle = client.trigger("stream-gated", {"marker": marker, "first": 500, "second": 500})
    token = client.create_public_token(handle.id).token
    proxy = CuttingProxy(urlparse(runtime.url).port, cut_path="/streams/tokens", cut_after=20_000)
    page = browser.new_page()
    try:
        page.goto(example_site + "/index.html?" + urlencode({"api": proxy.url, "run": handle.id, "token": token}))
        page.wait_for_function("() => Number(document.querySelector('#count').innerText) >= 500", timeout=60_000)
        assert proxy.cuts == 1, "the stream's first connection was cut mid-stream"
        (runtime.scratch / f"{marker}.go").write_text("1")
        page.wait_for_selector("body[data-stream-ended=yes]", timeout=60_000)
        assert page.inner_text("#story") == "".join(f"token-{i}|" for i in range(1000)), \
            "a chunk was lost or repeated across the reconnect"
        assert page.inner_text("#count") == "1000"
        page.wait_for_function("() => document.querySelector('#status').innerText === 'COMPLETED'")
        assert page.inner_text("#error") == ""
        page.screenshot(path=str(ARTIFACTS / "example-page.png"), full_page=True)
    finally:
        page.close()
        proxy.close()


@pytest.mark.parametrize("which", ["wrong", "expired"])
def test_the_browser_module_is_refused_with_a_bad_token(browser, runtime, client, example_site, which):
    handle = client.trigger("stream-sync", {"count": 1, "name": "tokens"})
    if which == "wrong":
        token = client.create_public_token(handle.id).token[:-4] + "AAAA"
    else:
        token = client.create_public_token(handle.id, ttl=0.5).token
        time.sleep(1.0)
    page = browser.new_page()
    page.goto(example_site + "/index.html?" + urlencode({"api": runtime.url, "run": handle.id, "token": token}))
    page.wait_for_function("() => document.querySelector('#error').innerText.includes('refused')", timeout=30_000)
    assert page.inner_text("#story") == "" and page.inner_text("#count") == "0"
    page.close()
