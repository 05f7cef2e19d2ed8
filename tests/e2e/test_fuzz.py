"""Property-based fuzzing of the runtime's OpenAPI document (schemathesis), on SQLite and PostgreSQL.

Every operation gets generated requests, valid and invalid, with the dev key; the test fails on any
5xx and on any answer that violates the document. Bounded by `FUZZ_EXAMPLES` per operation (50, about half a
minute per store; OUTLAST_FUZZ_EXAMPLES=200 for a deeper run); no shrinking: a failure is reported as
first found. Excluded, and why:
- `POST /deployments`: its body is a tar.gz bundle (not described by the document), and each accepted
  one starts a build (a virtualenv): fuzzing it measures pip, not input validation.
- `POST /deployments/promote` and `/rollback`: they change which version serves the shared runtime's
  tasks, which would make the other operations' answers depend on the order hypothesis picks.
- `POST /environments/{env_id}/keys/rotate`: an accepted one replaces the shared runtime's dev key (its
  input checks are tested in tests/e2e/test_keys.py).
`GET /runs/subscribe` (tag or batch, ENDLESS) is fuzzed too, but an accepted one is closed once its status
and content type are in: a tag subscription never ends.
"""

from __future__ import annotations

import os

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from tests.conftest import SECRET_KEY
from tests.e2e._shared import shared_runtime_fixture

shared_runtime = shared_runtime_fixture()
FUZZ_EXAMPLES = int(os.environ.get("OUTLAST_FUZZ_EXAMPLES", "50"))
# Accepted, a tag subscription never ends: of this operation only the refusals are read whole.
ENDLESS = {"GET /api/v1/runs/subscribe"}


def _operations(url: str) -> list:
    api = schemathesis.openapi.from_url(url + "/api/v1/openapi.json")
    api = (api.exclude(path="/api/v1/deployments", method="POST")
           .exclude(path="/api/v1/deployments/promote").exclude(path="/api/v1/deployments/rollback")
           .exclude(path="/api/v1/environments/{env_id}/keys/rotate"))
    return [result.ok() for result in api.get_all_operations()]


def _fuzzer(operation, url: str):
    """A hypothesis test of one operation: positive and negative cases, sent with the dev key."""
    headers = {"Authorization": f"Bearer {SECRET_KEY}"}

    @given(case=st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                          operation.as_strategy(GenerationMode.NEGATIVE)))
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],  # no shrinking: the report says what failed
              suppress_health_check=list(HealthCheck))
    def fuzz(case) -> None:
        claim = operation.label == "POST /api/v1/worker/claim" and isinstance(case.body, dict)
        wait = case.body.get("wait") if claim else None
        if isinstance(wait, (int, float)) and not isinstance(wait, bool) and wait > 0.5:
            case.body["wait"] = 0.5  # a valid long-poll of up to 60 s would make the run minutes long
        if operation.label in ENDLESS:
            response = _status_of_a_stream(case, url, headers)
            if response is None:
                return  # an accepted subscription: its status and type were checked, it does not end
        else:
            response = case.call(base_url=url, headers=headers, timeout=30)
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

    return fuzz


def _status_of_a_stream(case, url: str, headers: dict[str, str]) -> httpx.Response | None:
    """Send the case; an accepted (200) Server-Sent-Events answer is closed once its headers are in (None),
    any other answer is read whole and returned for validation."""
    sent = case.as_transport_kwargs(base_url=url, headers=headers)
    with httpx.stream(sent["method"], sent["url"], params=sent.get("params"), headers=sent.get("headers"),
                      cookies=sent.get("cookies"), timeout=30) as response:
        if response.status_code == 200:
            assert response.headers["content-type"].startswith("text/event-stream"), response.headers
            return None
        response.read()
    return response


def test_no_input_causes_a_server_error(shared_runtime):
    failures: list[str] = []
    operations = _operations(shared_runtime.url)
    assert len(operations) > 30  # the document was read, and the exclusions left the rest
    for operation in operations:
        # Not schemathesis' pytest plugin (it does not run under this pytest): its strategies, driven here.
        try:
            _fuzzer(operation, shared_runtime.url)()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup is a BaseExceptionGroup
            causes = getattr(exc, "exceptions", [exc])
            failures.append(f"{operation.label}: " + " | ".join(repr(cause)[:1500] for cause in causes))
    assert not failures, "\n\n".join(failures)
