"""Graceful drain: SIGTERM (or POST /admin/drain with the key) stops admission with 503 + Retry-After, every
admitted request completes, then the server exits 0."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import threading
import time

import httpx

from llmspeed.serving.server import bind_socket
from tests.serving.conftest import API_KEY

H = {"Authorization": f"Bearer {API_KEY}"}


def _wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        assert proc is None or proc.poll() is None
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become healthy")


def test_sigterm_under_load_completes_every_admitted_request(tiny_model_dir) -> None:
    sock = bind_socket()
    port = sock.getsockname()[1]
    sock.close()
    cmd = [sys.executable, "-m", "llmspeed.cli.main", "serve", "--model", str(tiny_model_dir("llama")),
           "--port", str(port), "--threads", "1", "--served-model-name", "tiny", "--kv-cache-tokens", "4096",
           "--max-batch", "4", "--cache-l1", "0", "--cache-l2", "none", "--drain-timeout", "120", "--compile", "off"]
    proc = subprocess.Popen(cmd, env=os.environ | {"LLMSPEED_API_KEY": API_KEY}, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    n, new_tokens = 8, 230  # 8 requests over a batch of 4: half of them are queued when SIGTERM arrives
    try:
        _wait_healthy(url, proc)

        def one(i: int) -> tuple[int, int]:
            body = {"prompt": f"Once more unto the breach {i}", "max_tokens": new_tokens, "temperature": 0,
                    "ignore_eos": True, "stream": i % 2 == 1}
            if body["stream"]:
                with httpx.stream("POST", f"{url}/v1/completions", json=body | {"stream_options": {
                        "include_usage": True}}, headers=H, timeout=180) as r:
                    lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
                usage = [ln for ln in lines if '"usage": {' in ln]
                import json

                return r.status_code, json.loads(usage[-1][6:])["usage"]["completion_tokens"] if usage else -1
            r = httpx.post(f"{url}/v1/completions", json=body, headers=H, timeout=180)
            return r.status_code, r.json()["usage"]["completion_tokens"] if r.status_code == 200 else -1

        with cf.ThreadPoolExecutor(n) as ex:
            futs = [ex.submit(one, i) for i in range(n)]
            t0 = time.monotonic()
            while time.monotonic() - t0 < 60:  # every request admitted (running or queued) before SIGTERM
                h = httpx.get(f"{url}/health", timeout=5).json()
                if h["running"] + h["waiting"] == n:
                    break
                time.sleep(0.02)
            assert h["running"] + h["waiting"] == n, h
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            late = httpx.post(f"{url}/v1/completions", json={"prompt": "late", "max_tokens": 2}, headers=H, timeout=30)
            health = httpx.get(f"{url}/health", timeout=5)
            results = [f.result(timeout=300) for f in futs]
        assert late.status_code == 503 and late.json()["error"]["code"] == "draining"
        assert int(late.headers["retry-after"]) >= 1
        assert health.status_code == 503
        assert results == [(200, new_tokens)] * n  # no admitted request lost
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_admin_drain_needs_the_key_and_refuses_new_requests(make_server) -> None:
    open_srv = make_server()  # no --api-key: draining over HTTP is refused
    r = httpx.post(f"{open_srv.url}/admin/drain", timeout=10)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    srv = make_server(api_key=API_KEY, drain_timeout=60.0)
    eng = srv.server.config.app.state.engine_loop.engine
    gate, step = threading.Event(), eng.step
    eng.step = lambda: (gate.wait(60), step())[1]  # hold the engine: the request below stays in flight
    with cf.ThreadPoolExecutor(1) as ex:
        held = ex.submit(httpx.post, f"{srv.url}/v1/completions", json={"prompt": "held", "max_tokens": 3},
                         headers=H, timeout=120)
        t0 = time.monotonic()
        while srv.server.config.app.state.engine_loop.num_in_flight < 1 and time.monotonic() - t0 < 30:
            time.sleep(0.01)
        assert httpx.post(f"{srv.url}/admin/drain", timeout=10).status_code == 401
        r = httpx.post(f"{srv.url}/admin/drain", headers=H, timeout=10)
        assert r.status_code == 202 and r.json()["in_flight"] == 1
        refused = httpx.post(f"{srv.url}/v1/completions", json={"prompt": "x", "max_tokens": 1}, headers=H,
                             timeout=10)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
        assert refused.headers["retry-after"] == "1"
        assert httpx.get(f"{srv.url}/health", timeout=10).status_code == 503
        assert srv.thread.is_alive()  # still finishing the held request
        gate.set()
        assert held.result(60).status_code == 200  # the admitted request completes
    srv.thread.join(30)  # then the server exits by itself
    assert not srv.thread.is_alive()
