"""The router's fleet view and drain: /metrics carries every replica's metrics with a `replica` label; a draining
replica leaves the rotation without losing a request; draining the router drains its replicas and exits."""

from __future__ import annotations

import concurrent.futures as cf
import re
import time

import httpx
import pytest

from tests.serving.conftest import API_KEY

H = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def fleet(tiny_model_dir):
    from llmspeed.serving.router import RouterConfig, create_router_app
    from llmspeed.serving.server import ThreadedServer

    args = ("--model", str(tiny_model_dir("llama")), "--served-model-name", "tiny", "--threads", "1",
            "--cache-l1", "0", "--cache-l2", "none", "--kv-cache-tokens", "4096", "--drain-timeout", "60",
            "--compile", "off")
    app = create_router_app(RouterConfig(replicas=2, lb="least-conn", worker_args=args, health_interval=0.3,
                                         start_timeout=120, api_key=API_KEY, drain_timeout=60,
                                         worker_env={"LLMSPEED_API_KEY": API_KEY}))
    srv = ThreadedServer(app).start(timeout=180)
    rs = app.state.replicas
    t0 = time.monotonic()
    while len(rs.healthy()) < 2 and time.monotonic() - t0 < 120:
        time.sleep(0.2)
    assert len(rs.healthy()) == 2
    yield srv, rs
    srv.stop()


def _body(i: int) -> dict:
    return {"prompt": f"Now is the winter of our discontent {i}", "max_tokens": 120, "temperature": 0,
            "ignore_eos": True}


def test_router_metrics_expose_every_replica_with_a_label(fleet) -> None:
    srv, _ = fleet
    for i in range(4):
        assert httpx.post(f"{srv.url}/v1/completions", json=_body(i) | {"max_tokens": 2}, headers=H,
                          timeout=60).status_code == 200
    m = httpx.get(f"{srv.url}/metrics", headers=H, timeout=30).text
    assert re.search(r"^llmspeed_router:requests_total\{replica=\"\d\"\} ", m, re.M)
    for i in ("0", "1"):
        assert re.search(rf'^llmspeed:kv_cache_blocks_total\{{replica="{i}"\}} \d', m, re.M), m[-2000:]
    served = sum(float(v) for v in re.findall(r'^llmspeed:request_success_total\{finished_reason="length",'
                                              r'replica="\d"\} (\S+)$', m, re.M))
    assert served >= 4
    assert m.count("# TYPE llmspeed:kv_cache_blocks_total gauge") == 1  # one family, both replicas' samples


def test_a_draining_replica_leaves_the_rotation_and_loses_nothing(fleet) -> None:
    srv, rs = fleet
    victim = rs.replicas[0]
    with cf.ThreadPoolExecutor(6) as ex:
        futs = [ex.submit(httpx.post, f"{srv.url}/v1/completions", json=_body(i), headers=H, timeout=180)
                for i in range(6)]
        t0 = time.monotonic()
        while victim.in_flight < 1 and time.monotonic() - t0 < 30:
            time.sleep(0.01)
        r = httpx.post(f"{victim.url}/admin/drain", headers=H, timeout=10)  # e.g. a rolling restart
        assert r.status_code == 202
        after = [ex.submit(httpx.post, f"{srv.url}/v1/completions", json=_body(10 + i), headers=H, timeout=180)
                 for i in range(4)]
        codes = [f.result().status_code for f in futs + after]
    assert codes == [200] * 10
    t0 = time.monotonic()  # it exits once drained and the router restarts it
    while (victim.restarts < 1 or len(rs.healthy()) < 2) and time.monotonic() - t0 < 120:
        time.sleep(0.2)
    assert victim.restarts >= 1 and len(rs.healthy()) == 2


def test_draining_the_router_finishes_in_flight_requests_and_stops_the_fleet(fleet) -> None:
    srv, rs = fleet
    procs = [r.proc for r in rs.replicas]
    with cf.ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(httpx.post, f"{srv.url}/v1/completions", json=_body(20 + i), headers=H, timeout=180)
                for i in range(4)]
        t0 = time.monotonic()
        while sum(r.in_flight for r in rs.replicas) < 4 and time.monotonic() - t0 < 30:
            time.sleep(0.01)
        assert httpx.post(f"{srv.url}/admin/drain", timeout=10).status_code == 401
        assert httpx.post(f"{srv.url}/admin/drain", headers=H, timeout=10).status_code == 202
        late = httpx.post(f"{srv.url}/v1/completions", json=_body(99), headers=H, timeout=30)
        results = [f.result() for f in futs]
    assert late.status_code == 503 and late.json()["error"]["code"] == "draining" and "retry-after" in late.headers
    assert [r.status_code for r in results] == [200] * 4
    assert all(r.json()["usage"]["completion_tokens"] == 120 for r in results)
    srv.thread.join(90)
    assert not srv.thread.is_alive()
    assert all(p.poll() == 0 for p in procs)  # every replica drained and exited cleanly
