"""Run changes and streams over SSE against a real runtime, on SQLite and PostgreSQL: order, resumption
with Last-Event-ID after a dropped connection (nothing lost or repeated), credentials, limits, environments."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time

import httpx
import pytest

from outlast import AuthenticationError, runs, streams
from outlast.wire import TriggerOptions
from tests.conftest import SECRET_KEY, wait_for
from tests.realtime.sse import auth, read_events

PROJECT = "realtime"


@pytest.fixture
def rt(make_runtime):
    return make_runtime(project=PROJECT, extra_env={"OUTLAST_STREAM_MAX_CHUNK_BYTES": "1000"})


def _changes(events):
    return [(e.id, e.event, e.data.get("kind"), e.data.get("status")) for e in events]


def _prod_key(runtime) -> str:
    return re.search(r"prod\s+OUTLAST_SECRET_KEY=(\S+)", runtime.log())[1]


def test_run_changes_resume_after_a_dropped_connection(rt):
    client = rt.client()
    run = client.trigger("gated", {"marker": "m1"})
    url = f"{rt.url}/api/v1/runs/{run.id}/subscribe"
    first = read_events(url, headers=auth(SECRET_KEY), count=2)  # then the connection is dropped
    assert [e.data["status"] for e in first if e.data["kind"] == "status"][:1] == ["QUEUED"]
    (rt.scratch / "m1.go").write_text("1")
    client.poll(run.id, timeout=30)
    rest = read_events(url, headers={**auth(SECRET_KEY), "Last-Event-ID": first[-1].id})
    whole = read_events(url, headers=auth(SECRET_KEY))
    assert _changes(first + rest) == _changes(whole), "a resumed subscription lost or repeated a change"
    ids = [e.id for e in whole if e.event != "end"]  # `end` repeats the last id: a reconnect resumes after it
    assert len(set(ids)) == len(ids)
    assert whole[-1].event == "end" and whole[-1].data == {"run_id": run.id, "status": "COMPLETED"}
    statuses = [e.data["status"] for e in whole if e.event == "run" and e.data["kind"] == "status"]
    assert statuses == ["QUEUED", "EXECUTING", "COMPLETED"]
    assert [e.data.get("kind") for e in whole].count("metadata") == 2  # step 1, step 2
    final = [e for e in whole if e.event == "run"][-1].data["run"]
    assert final["status"] == "COMPLETED" and final["output"] == {"gate": True}
    # The SDK's iterator reads the same changes, and so does its async twin from a cursor on.
    assert [(c.cursor, c.kind) for c in runs.subscribe(run.id, client=client)] == [
        (e.id, e.data["kind"]) for e in whole if e.event == "run"]

    async def after_first() -> list[str]:
        return [c.cursor async for c in runs.subscribe(run.id, after=first[0].id, client=client)]
    assert asyncio.run(after_first()) == [e.id for e in whole if e.event == "run"][1:]


def test_a_stream_of_1000_chunks_arrives_in_order_and_resumes(rt):
    client = rt.client()
    run = client.trigger("stream-tokens", {"count": 1000})
    expected = [f"token-{i}" for i in range(1000)]
    assert [chunk.data for chunk in streams.read(run.id, "tokens", client=client)] == expected
    url = f"{rt.url}/api/v1/runs/{run.id}/streams/tokens"
    first = read_events(url, headers=auth(SECRET_KEY), count=300)
    rest = read_events(url, headers={**auth(SECRET_KEY), "Last-Event-ID": first[-1].id})
    assert rest[-1].event == "end"
    data = [e.data["data"] for e in first + rest[:-1]]
    assert data == expected, "a resumed stream lost or repeated a chunk"
    by_query = read_events(url, headers=auth(SECRET_KEY), params={"after": rest[199].id})
    assert [e.data["data"] for e in by_query[:-1]] == expected[500:]

    async def read_async() -> list[str]:
        return [chunk.data async for chunk in streams.read(run.id, "tokens", client=client)]
    assert asyncio.run(read_async()) == expected
    listing = httpx.get(f"{rt.url}/api/v1/runs/{run.id}/streams", headers=auth(SECRET_KEY)).json()
    assert listing == [{"name": "tokens", "chunks": 1000, "bytes": sum(len(t) + 2 for t in expected)}]


def test_a_stream_is_read_while_the_run_executes(rt):
    client = rt.client()
    run = client.trigger("gated", {"marker": "m2"})
    handle = client.trigger("stream-sync", {"count": 5, "name": "lines"})
    got = [c.data for c in streams.read(handle.id, "lines", client=client)]
    assert got == [{"n": i} for i in range(5)]
    (rt.scratch / "m2.go").write_text("1")
    client.poll(run.id, timeout=30)


def test_tag_subscription_sees_the_tag_in_its_environment_only(rt):
    client = rt.client()
    prod = rt.client(_prod_key(rt))
    tagged = client.trigger("stream-sync", {"count": 1}, TriggerOptions(tags=["realtime-t1"]))
    other = client.trigger("stream-sync", {"count": 1}, TriggerOptions(tags=["realtime-t2"]))
    elsewhere = prod.trigger("stream-sync", {"count": 1}, TriggerOptions(tags=["realtime-t1"]))
    for handle, owner in ((tagged, client), (other, client), (elsewhere, prod)):
        owner.poll(handle.id, timeout=30)
    seen: list[tuple[str, str | None]] = []
    later = None
    subscription = runs.subscribe_to_tag("realtime-t1", after="0-0", client=client)
    for change in subscription:
        seen.append((change.run_id, change.status))
        if (tagged.id, "COMPLETED") in seen and later is None:
            later = client.trigger("stream-sync", {"count": 1}, TriggerOptions(tags=["realtime-t1"]))
        if later is not None and (later.id, "COMPLETED") in seen:
            subscription.close()
    assert {run_id for run_id, _ in seen} == {tagged.id, later.id}
    assert [s for r, s in seen if r == later.id and s] == ["QUEUED", "EXECUTING", "COMPLETED"]


def test_wrong_expired_or_foreign_credentials_are_refused(rt):
    client = rt.client()
    run = client.trigger("stream-sync", {"count": 2})
    other = client.trigger("stream-sync", {"count": 2})
    client.poll(run.id, timeout=30)
    url = f"{rt.url}/api/v1/runs/{run.id}/subscribe"
    wrong = httpx.get(url, headers=auth("ol_dev_wrong"))
    assert wrong.status_code == 401 and wrong.json()["field"] == "authorization"
    token = client.create_public_token(run.id).token
    assert read_events(url, params={"token": token})[-1].event == "end"  # as EventSource sends it
    assert read_events(f"{rt.url}/api/v1/runs/{run.id}/streams/lines", headers=auth(token))[-1].event == "end"
    foreign = httpx.get(f"{rt.url}/api/v1/runs/{other.id}/subscribe", params={"token": token})
    assert foreign.status_code == 401 and "does not cover" in foreign.json()["message"]
    tag_refused = httpx.get(f"{rt.url}/api/v1/runs/subscribe", params={"tag": "x", "token": token})
    assert tag_refused.status_code == 401
    short = client.create_public_token(run.id, ttl=0.5).token
    time.sleep(1.0)
    expired = httpx.get(url, params={"token": short})
    assert expired.status_code == 401 and "expired" in expired.json()["message"]
    key_in_url = httpx.get(url, params={"token": SECRET_KEY})
    assert key_in_url.status_code == 401 and key_in_url.json()["field"] == "token"
    bad_cursor = httpx.get(url, headers={**auth(SECRET_KEY), "Last-Event-ID": "nope"})
    assert bad_cursor.status_code == 422 and bad_cursor.json()["field"] == "last-event-id"
    prod_reads_dev = httpx.get(url, headers=auth(_prod_key(rt)))
    assert prod_reads_dev.status_code == 404
    with pytest.raises(AuthenticationError, match="not cover"):
        list(runs.subscribe(other.id, token=token, client=client))


def test_stream_limits_are_enforced_with_a_clear_error(rt):
    client = rt.client()
    refused = client.poll(client.trigger("stream-refused", {"size": 2000}).id, timeout=30)
    assert "the limit is 1000 bytes" in refused.output["refused"]
    assert "OUTLAST_STREAM_MAX_CHUNK_BYTES" in refused.output["refused"]
    accepted = client.poll(client.trigger("stream-refused", {"size": 500}).id, timeout=30)
    assert accepted.output == {"refused": None}


def test_changes_reach_a_subscriber_on_another_replica(make_runtime, store):
    if store is None:
        pytest.skip("replicas share a PostgreSQL store")
    worker = make_runtime(project=PROJECT)
    api_only = make_runtime(project=None)
    client = worker.client()
    run = client.trigger("gated", {"marker": "m3"})
    url = f"/api/v1/runs/{run.id}/subscribe"
    first = read_events(api_only.url + url, headers=auth(SECRET_KEY), count=2)
    (worker.scratch / "m3.go").write_text("1")
    # Live on the API-only replica: the changes come from the other one's commits (NOTIFY, or the backstop).
    live = read_events(api_only.url + url, headers={**auth(SECRET_KEY), "Last-Event-ID": first[-1].id}, count=1)
    rest = read_events(worker.url + url, headers={**auth(SECRET_KEY), "Last-Event-ID": live[-1].id})
    whole = read_events(api_only.url + url, headers=auth(SECRET_KEY))
    assert _changes(first + live + rest) == _changes(whole)
    assert whole[-1].data["status"] == "COMPLETED"
    wait_for(lambda: client.retrieve_run(run.id).status.is_final)


def test_batch_subscription_ends_when_every_run_is_final(rt):
    from outlast.wire import BatchItem

    client = rt.client()
    batch = client.batch_trigger([BatchItem(task="stream-sync", payload={"count": i}) for i in range(3)])
    ids = {handle.id for handle in batch.runs}
    changes = list(runs.subscribe_to_batch(batch, client=client))  # ends by itself
    finals = {c.run_id: c.status for c in changes if c.status in ("COMPLETED", "FAILED")}
    assert finals == dict.fromkeys(ids, "COMPLETED")
    assert {c.run_id for c in changes} == ids
    url = f"{rt.url}/api/v1/runs/subscribe"
    neither = httpx.get(url, headers=auth(SECRET_KEY))
    assert neither.status_code == 422 and neither.json()["field"] == "batch"
    unknown = httpx.get(url, headers=auth(SECRET_KEY), params={"batch": f"{batch.runs[0].id},run_nope"})
    assert unknown.status_code == 404 and unknown.json()["field"] == "batch.1"
    too_many = httpx.get(url, headers=auth(SECRET_KEY), params={"batch": ",".join(f"run_{i}" for i in range(101))})
    assert too_many.status_code == 422 and too_many.json()["field"] == "batch"


def test_a_stream_and_the_changes_survive_a_checkpoint_of_the_writer(rt):
    client = rt.client()
    run = client.trigger("change-and-wait", {"marker": "m4", "seconds": 3})
    progress = streams.read(run.id, "progress", client=client)
    changes = list(runs.subscribe(run.id, client=client))
    assert [c.data for c in progress] == ["before the wait", "after the wait"]
    statuses = [c.status for c in changes if c.kind == "status"]
    assert statuses.index("EXECUTING") < statuses.index("WAITING") < statuses.index("COMPLETED"), statuses
    assert [c.kind for c in changes].count("metadata") == 2 and changes[-1].run.metadata == {"phase": "after"}
    checkpoints = [e.data["checkpoint"].get("mode") for e in client.run_events(run.id) if e.data.get("checkpoint")]
    health = httpx.get(f"{rt.url}/api/v1/health").json()
    if health.get("checkpoints", {}).get("enabled"):
        assert "criu" in checkpoints, checkpoints  # the writer's process was dumped and restored in between


def test_open_subscriptions_do_not_hold_the_runtimes_shutdown(rt):
    import threading

    client = rt.client()
    run = client.trigger("gated", {"marker": "m5"})  # never opened: its subscription stays open
    seen: list[str] = []

    def follow() -> None:
        with contextlib.suppress(httpx.HTTPError), httpx.stream(
                "GET", f"{rt.url}/api/v1/runs/{run.id}/subscribe", headers=auth(SECRET_KEY), timeout=120) as answer:
            for line in answer.iter_lines():
                if line.startswith("event:"):
                    seen.append(line)
        seen.append("closed")

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    wait_for(lambda: seen.count("event: run") >= 2, message="the subscription's first changes")
    rt.process.send_signal(signal.SIGTERM)
    rt.process.wait(60)
    assert rt.process.returncode == -signal.SIGTERM, "the runtime stopped on SIGTERM (not killed after a wait)"
    reader.join(10)
    assert seen[-1] == "closed" and "event: end" not in seen, seen  # ended without `end`: a client reconnects



def test_a_subscription_stops_when_its_public_token_expires(rt):
    client = rt.client()
    run = client.trigger("gated", {"marker": "m6"})
    token = client.create_public_token(run.id, ttl=2).token
    events = read_events(f"{rt.url}/api/v1/runs/{run.id}/subscribe", params={"token": token})  # until closed
    assert events and "end" not in [e.event for e in events]
    assert client.retrieve_run(run.id).status == "EXECUTING", "closed for the token, not for the run"
    (rt.scratch / "m6.go").write_text("1")
    client.poll(run.id, timeout=30)
