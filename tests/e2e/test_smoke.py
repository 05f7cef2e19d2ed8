from outlast import RunStatus


def test_trigger_and_complete(client):
    handle = client.trigger("echo", {"x": 1})
    run = client.poll(handle.id, timeout=30)
    assert run.status is RunStatus.COMPLETED
    assert run.output["payload"] == {"x": 1}
