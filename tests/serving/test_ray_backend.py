"""`llmspeed serve --backend ray`: the same app as a Ray Serve deployment on a local, loopback-only Ray."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest

from llmspeed.serving.server import bind_socket

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray[serve] is not installed")


def test_ray_backend_serves_openai_api(tiny_model_dir, tmp_path) -> None:
    sock = bind_socket()
    port = sock.getsockname()[1]
    sock.close()
    cmd = [sys.executable, "-m", "llmspeed.cli.main", "serve", "--backend", "ray", "--model",
           str(tiny_model_dir("llama")), "--port", str(port), "--threads", "1", "--served-model-name", "tiny",
           "--cache-l2", "none", "--api-key", "ray-key", "--kv-cache-tokens", "2048", "--compile", "off"]
    log = open(tmp_path / "ray.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=os.environ | {"RAY_USAGE_STATS_ENABLED": "0"})
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        ok = False
        while time.monotonic() - t0 < 150 and not ok:
            assert proc.poll() is None, (tmp_path / "ray.log").read_text()[-2000:]
            try:
                ok = httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert ok, (tmp_path / "ray.log").read_text()[-2000:]
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="ray-key", max_retries=0, timeout=60)
        r = client.completions.create(model="tiny", prompt="Good night, sweet prince", max_tokens=6, temperature=0,
                                      extra_body={"ignore_eos": True})
        assert r.usage.completion_tokens == 6
        chunks = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                                     max_tokens=4, temperature=0, stream=True))
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the session this test started (driver + its Ray processes)
            proc.wait(10)
        log.close()
