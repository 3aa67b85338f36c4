"""One request never fails another, through the HTTP API: every float field is validated (NaN/inf are a
400, tiny positive temperature/top_p mean greedy), and a request whose sampling raises gets a 500 while the
other requests of its batch return exactly what they return without it; the server keeps serving."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.serving.conftest import API_KEY

H = {"Authorization": f"Bearer {API_KEY}"}
PROMPTS = ["Hello there", "Now is the winter of our discontent", "O Romeo, Romeo", "A", "Friends, Romans",
           "To be or not", "What light through yonder window"]
BASE = {"max_tokens": 12, "temperature": 0, "ignore_eos": True}
MARK = 7777  # a top_k no real request uses: the monkeypatched sampler recognises the poisoned row by it


@pytest.fixture(scope="module")
def srv(make_server):
    return make_server(api_key=API_KEY, max_queue=64, cache_l1=0)  # no response cache: every request computes


def _post(url: str, body: dict | bytes, path: str = "/v1/completions") -> httpx.Response:
    if isinstance(body, bytes):
        return httpx.post(f"{url}{path}", content=body, headers=H | {"content-type": "application/json"}, timeout=60)
    return httpx.post(f"{url}{path}", json=body, headers=H, timeout=120)


def _gate(srv, monkeypatch, n: int) -> None:
    """Hold the engine's first inbox drain until `n` requests are queued: they run as one batch."""
    sched = srv.server.config.app.state.engine_loop.engine.scheduler
    real = sched.drain_inbox

    def gated() -> None:
        t0 = time.monotonic()
        while sched._inbox.qsize() < n and time.monotonic() - t0 < 30:
            time.sleep(0.005)
        monkeypatch.setattr(sched, "drain_inbox", real)
        real()

    monkeypatch.setattr(sched, "drain_inbox", gated)


def _together(url: str, bodies: list[dict]) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(bodies)) as ex:
        return list(ex.map(lambda b: _post(url, b), bodies))


@pytest.fixture(scope="module")
def reference(srv) -> list[str]:
    """The 7 requests' texts when they run as a batch of their own."""
    mp = pytest.MonkeyPatch()
    try:
        _gate(srv, mp, len(PROMPTS))
        rs = _together(srv.url, [BASE | {"prompt": p} for p in PROMPTS])
    finally:
        mp.undo()
    assert all(r.status_code == 200 for r in rs)
    return [r.json()["choices"][0]["text"] for r in rs]


FLOAT_FIELDS = ["temperature", "top_p", "presence_penalty", "frequency_penalty", "repetition_penalty"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("field", FLOAT_FIELDS)
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_nonfinite_float_fields_are_400(srv, path: str, field: str, literal: str) -> None:
    """Python's JSON parser (what FastAPI uses) turns NaN/Infinity literals and 1e999 into float nan/inf:
    the server sees real non-finite floats and must refuse them by name."""
    assert json.loads(f'{{"x": {literal}}}')["x"] != 1.0  # the server does receive a non-finite float
    head = '{"prompt": "Hark"' if path == "/v1/completions" else '{"messages": [{"role": "user", "content": "Hark"}]'
    r = _post(srv.url, f'{head}, "max_tokens": 2, "{field}": {literal}}}'.encode(), path)
    assert r.status_code == 400, r.text
    e = r.json()["error"]
    assert e["param"] == field and "finite" in e["message"] and e["type"] == "invalid_request_error"


def test_nonfinite_inside_an_object_is_400(srv) -> None:
    r = _post(srv.url, b'{"prompt": "Hark", "logit_bias": {"17": -Infinity}}')
    assert r.status_code == 400 and r.json()["error"]["param"] == "logit_bias"


@pytest.mark.parametrize(("body", "param"), [
    ({"temperature": 2.5}, "temperature"), ({"temperature": -5e-324}, "temperature"), ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"), ({"top_p": -5e-324}, "top_p"), ({"seed": 2**64}, "seed"),
    ({"presence_penalty": 5e-324}, "presence_penalty"),  # not the default: unsupported, refused by name
])
def test_out_of_range_values_are_400(srv, body: dict, param: str) -> None:
    r = _post(srv.url, {"prompt": "Hark", "max_tokens": 2} | body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_lone_surrogate_is_400_not_500(srv) -> None:
    r = _post(srv.url, b'{"prompt": "caf\\udce9", "max_tokens": 2}')
    assert r.status_code == 400 and "surrogate" in r.json()["error"]["message"]
    r = _post(srv.url, b'{"messages": [{"role": "user", "content": "x"}], "\\ud800": 1}', "/v1/chat/completions")
    assert r.status_code == 400


@pytest.mark.parametrize("body", [{"temperature": 5e-324}, {"temperature": 1.0, "top_p": 5e-324},
                                  {"temperature": 2.0, "top_p": 1e-7, "seed": 5}])
def test_subnormal_temperature_or_top_p_is_greedy(srv, reference, body: dict) -> None:
    r = _post(srv.url, BASE | {"prompt": PROMPTS[1]} | body)
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == reference[1]


def test_subnormal_top_p_request_in_a_batch_of_8(srv, reference, monkeypatch) -> None:
    _gate(srv, monkeypatch, 8)
    bodies = [BASE | {"prompt": p} for p in PROMPTS]
    odd = BASE | {"prompt": PROMPTS[2], "temperature": 1.0, "top_p": 5e-324}
    rs = _together(srv.url, [*bodies[:4], odd, *bodies[4:]])
    assert all(r.status_code == 200 for r in rs), [r.text for r in rs if r.status_code != 200]
    texts = [r.json()["choices"][0]["text"] for r in rs]
    assert texts[:4] + texts[5:] == reference
    assert texts[4] == reference[2]  # normalised to greedy


def test_failing_request_is_500_alone_and_the_batch_completes(srv, reference, monkeypatch) -> None:
    import llmspeed.runtime.model_runner as runner

    real = runner.sample_batch
    raised: list[int] = []

    def poisoned(logits, temps, top_ks, top_ps, gens):  # type: ignore[no-untyped-def]
        if MARK in top_ks:
            raised.append(len(top_ks))
            raise RuntimeError("sampling blew up")
        return real(logits, temps, top_ks, top_ps, gens)

    monkeypatch.setattr(runner, "sample_batch", poisoned)
    _gate(srv, monkeypatch, 8)
    bodies = [BASE | {"prompt": p} for p in PROMPTS]
    rs = _together(srv.url, [*bodies[:3], BASE | {"prompt": PROMPTS[0], "top_k": MARK}, *bodies[3:]])
    assert raised == [8, 1]  # the batched call, then the culprit alone; the other rows were sampled one by one
    bad = rs.pop(3)
    assert bad.status_code == 500, bad.text
    e = bad.json()["error"]
    assert e["type"] == "server_error" and e["code"] == "engine_error" and "sampling blew up" in e["message"]
    assert [r.status_code for r in rs] == [200] * 7
    assert [r.json()["choices"][0]["text"] for r in rs] == reference
    # a failing stream ends with an error event and [DONE]; the server keeps serving
    with httpx.stream("POST", f"{srv.url}/v1/completions", headers=H, timeout=60,
                      json=BASE | {"prompt": "Hi", "top_k": MARK, "stream": True}) as s:
        events = [ln[6:] for ln in s.iter_lines() if ln.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["code"] == "engine_error"
    monkeypatch.setattr(runner, "sample_batch", real)
    ok = _post(srv.url, BASE | {"prompt": PROMPTS[3]})
    assert ok.status_code == 200 and ok.json()["choices"][0]["text"] == reference[3]
    assert httpx.get(f"{srv.url}/health", headers=H, timeout=10).status_code == 200
    metrics = httpx.get(f"{srv.url}/metrics", headers=H, timeout=10).text
    failures = [ln for ln in metrics.splitlines() if ln.startswith("llmspeed:request_failures_total ")]
    assert failures and float(failures[0].split()[1]) >= 2


def test_engine_stats_snapshot_is_consistent_after_requests(srv) -> None:
    loop = srv.server.config.app.state.engine_loop
    assert _post(srv.url, BASE | {"prompt": "Once more"}).status_code == 200
    st = loop.stats()
    assert st.num_running == 0 and st.num_waiting == 0 and st.kv_blocks_used == 0 < st.kv_blocks_total
    assert st.num_steps > 0 and st.prefix_cache_query_tokens > 0
