"""Property-based fuzzing of the OpenAI API with schemathesis over the server's own /openapi.json: valid and
invalid requests alike get no 5xx (status or SSE error event), and the server keeps serving. Bounded: a fixed
number of derandomized examples per operation and a time budget."""

from __future__ import annotations

import time

import httpx

from tests.serving.conftest import API_KEY

H = {"Authorization": f"Bearer {API_KEY}"}
EXAMPLES = 30  # per operation and generation mode (positive: schema-valid bodies; negative: invalid ones)
BUDGET_S = 75.0  # past this, remaining examples are drawn but not sent


def test_fuzzed_requests_never_get_a_server_error(make_server) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode

    srv = make_server(api_key=API_KEY, engine={"kv_cache_tokens": 256, "max_batch": 8}, request_timeout=60.0)
    schema = schemathesis.openapi.from_url(f"{srv.url}/openapi.json", headers=H, timeout=30)
    ops = [r.ok() for r in schema.get_all_operations()]
    ops = [op for op in ops if op.path != "/admin/drain"]  # shuts the server down by design (tests/serving/test_drain.py)
    assert {(op.method.upper(), op.path) for op in ops} >= {("POST", "/v1/completions"),
                                                           ("POST", "/v1/chat/completions"), ("POST", "/tokenize"),
                                                           ("POST", "/detokenize")}
    stop_at = time.monotonic() + BUDGET_S
    sent: list[tuple[str, int]] = []

    def no_sse_error(ctx, response, case):  # type: ignore[no-untyped-def]
        """A stream that failed still has status 200: its error event must not be a server error."""
        assert '"type": "server_error"' not in response.text, response.text[-500:]

    for op in ops:
        strategy = st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case) -> None:  # type: ignore[no-untyped-def]
            if time.monotonic() > stop_at:
                return
            r = case.call_and_validate(base_url=srv.url, headers=H, checks=[not_a_server_error, no_sse_error],
                                       timeout=90)
            sent.append((case.operation.label, r.status_code))

        run()
    assert len(sent) >= 20, sent  # the budget let a real number of requests through
    assert not [s for s in sent if s[1] >= 500]
    r = httpx.post(f"{srv.url}/v1/completions", json={"prompt": "Still here?", "max_tokens": 3, "temperature": 0},
                   headers=H, timeout=30)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
