"""Unit tests of `outlast trigger` and `outlast runs`, with a MockTransport-backed client."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from outlast._client import Client
from outlast.cli.runs import register

runner = CliRunner()


def run_json(run_id: str = "run_1", status: str = "COMPLETED", **fields: Any) -> dict[str, Any]:
    return {
        "id": run_id, "task": "email/send", "env": "dev", "status": status, "max_attempts": 3, "attempts": 1,
        "queue": "task/email/send", "created_at": "2024-05-01T12:00:00Z", "updated_at": "2024-05-01T12:00:01Z",
        "execution_ms": 1500, **fields,
    }


class FakeRuntime:
    """Answers the runs API from canned data and records what it was asked."""

    def __init__(self, final_status: str = "COMPLETED") -> None:
        self.final_status = final_status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path.endswith("/trigger") or path.endswith("/replay"):
            return httpx.Response(200, json={"id": "run_new", "task": "email/send"})
        if path == "/api/v1/runs":
            data = [run_json("run_a"), run_json("run_b", "FAILED", error={"type": "ValueError", "message": "[/]"})]
            return httpx.Response(200, json={"data": data, "next_cursor": "cur_2"})
        if path.endswith("/events"):
            event = {"id": 1, "run_id": "run_a", "time": "2024-05-01T12:00:00Z", "kind": "log", "message": "hi [b]"}
            return httpx.Response(200, json=[event])
        if path.endswith("/cancel"):
            return httpx.Response(409, json={"error": "conflict", "message": "run run_a already finished"})
        if path == "/api/v1/runs/missing":
            return httpx.Response(404, json={"error": "not_found", "message": "no run missing"})
        return httpx.Response(200, json=run_json(path.rsplit("/", 1)[-1], self.final_status))


def make_app(runtime: FakeRuntime) -> typer.Typer:
    app = typer.Typer()

    def factory(api_url: str | None, secret_key: str | None) -> Client:
        return Client(api_url or "http://runtime.test", secret_key or "sk_test", transport=httpx.MockTransport(runtime))

    register(app, client_factory=factory)
    return app


def test_bad_payload_names_the_option_and_exits_2() -> None:
    runtime = FakeRuntime()
    result = runner.invoke(make_app(runtime), ["trigger", "email/send", "--payload", "{not json"])
    assert result.exit_code == 2
    assert "error: --payload is not valid JSON" in result.stderr
    assert "Traceback" not in result.output
    assert runtime.requests == []


def test_bad_option_names_the_flag_and_exits_2() -> None:
    result = runner.invoke(make_app(FakeRuntime()), ["trigger", "t", "--ttl", "forever"])
    assert result.exit_code == 2
    assert "error: invalid --ttl" in result.stderr


def test_trigger_prints_the_run_id_and_sends_options() -> None:
    runtime = FakeRuntime()
    args = ["trigger", "email/send", "--payload", '{"to": "a@b.c"}', "--delay", "90", "--tag", "a", "--tag", "b",
            "--priority", "5", "--secret-key", "sk_cli"]
    result = runner.invoke(make_app(runtime), args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "run_new"
    sent = json.loads(runtime.requests[0].content)
    assert sent["payload"] == {"to": "a@b.c"}
    assert (sent["options"]["delay"], sent["options"]["tags"], sent["options"]["priority"]) == (90.0, ["a", "b"], 5)
    assert runtime.requests[0].headers["authorization"] == "Bearer sk_cli"


@pytest.mark.parametrize(("status", "exit_code"), [("COMPLETED", 0), ("FAILED", 1)])
def test_trigger_wait_exit_code_follows_the_run(status: str, exit_code: int) -> None:
    result = runner.invoke(make_app(FakeRuntime(status)), ["trigger", "email/send", "--wait"])
    assert result.exit_code == exit_code
    assert status in result.stdout


def test_runs_ls_table_and_cursor() -> None:
    runtime = FakeRuntime()
    result = runner.invoke(make_app(runtime), ["runs", "ls", "--status", "failed", "--tag", "x", "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert "run_a" in result.stdout and "run_b" in result.stdout and "FAILED" in result.stdout
    assert "next cursor: cur_2" in result.stdout
    params = runtime.requests[0].url.params
    assert (params["status"], params["tag"], params["limit"]) == ("FAILED", "x", "2")


def test_runs_ls_json() -> None:
    result = runner.invoke(make_app(FakeRuntime()), ["runs", "ls", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["next_cursor"] == "cur_2"


def test_runs_show_prints_fields_and_timeline() -> None:
    result = runner.invoke(make_app(FakeRuntime()), ["runs", "show", "run_a"])
    assert result.exit_code == 0, result.output
    assert "email/send" in result.stdout and "hi [b]" in result.stdout

    result = runner.invoke(make_app(FakeRuntime()), ["runs", "show", "run_a", "--json"])
    shown = json.loads(result.stdout)
    assert shown["run"]["id"] == "run_a" and shown["events"][0]["message"] == "hi [b]"


def test_client_errors_print_error_and_exit_1() -> None:
    app = make_app(FakeRuntime())
    result = runner.invoke(app, ["runs", "show", "missing"])
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: no run missing"

    result = runner.invoke(app, ["runs", "cancel", "run_a"])
    assert result.exit_code == 1
    assert "error: run run_a already finished" in result.stderr


def test_replay_prints_the_new_run_id() -> None:
    result = runner.invoke(make_app(FakeRuntime()), ["runs", "replay", "run_a"])
    assert result.exit_code == 0
    assert result.stdout.strip() == "run_new"


def test_missing_secret_key_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUTLAST_SECRET_KEY", raising=False)
    app = typer.Typer()
    register(app)
    result = runner.invoke(app, ["runs", "ls"])
    assert result.exit_code == 1
    assert "OUTLAST_SECRET_KEY" in result.stderr
    assert "Traceback" not in result.output
