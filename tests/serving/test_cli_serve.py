"""`llmspeed serve` as a user runs it: a subprocess on 127.0.0.1, the openai client, a clean SIGTERM shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest

from llmspeed.serving.server import bind_socket


def test_serve_cli_end_to_end(tiny_model_dir, tmp_path) -> None:
    sock = bind_socket()
    port = sock.getsockname()[1]
    sock.close()
    cmd = [sys.executable, "-m", "llmspeed.cli.main", "serve", "--model", str(tiny_model_dir("llama")),
           "--port", str(port), "--threads", "1", "--served-model-name", "tiny", "--kv-cache-tokens", "2048",
           "--cache-l2", f"sqlite:{tmp_path / 'r.sqlite'}", "--compile", "off"]
    proc = subprocess.Popen(cmd, env=os.environ | {"LLMSPEED_API_KEY": "cli-key"}, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="cli-key", max_retries=0, timeout=60)
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                           temperature=0)
        assert r.usage.completion_tokens <= 4
        assert httpx.get(f"{url}/v1/models").status_code == 401  # the env key is enforced
        models = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer cli-key"}).json()["data"][0]
        assert models["id"] == "tiny" and models["llmspeed"]["description"].startswith("model directory")
        doc = httpx.get(f"{url}/openapi.json", headers={"Authorization": "Bearer cli-key"}).json()
        assert "/v1/chat/completions" in doc["paths"]
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(30)
    assert rc == 0
    assert (tmp_path / "r.sqlite").exists()


def test_serve_cli_bad_args_one_line_error() -> None:
    from llmspeed.cli.main import main

    assert main(["serve", "--cache-policy", "random", "--model", "/nonexistent"]) == 2
    assert main(["serve", "--backend", "k8s"]) == 2
    assert main(["serve", "--lb", "random", "--replicas", "2"]) == 2
    assert main(["serve", "--compile", "sometimes"]) == 2


@pytest.mark.parametrize(("flags", "background"), [([], True), (["--compile", "on"], False),
                                                   (["--compile", "off"], None)])
def test_serve_compiles_decode_in_the_background_by_default(tiny_model_dir, monkeypatch, flags, background) -> None:
    """No flags: the engine gets a compiled decode step that builds its graphs off the decode thread."""
    from llmspeed.cli.main import main
    from llmspeed.serving import server

    apps = []
    monkeypatch.setattr(server, "serve_forever", lambda app, *_a, **_k: apps.append(app))
    assert main(["serve", "--model", str(tiny_model_dir("llama")), "--cache-l2", "none", *flags]) == 0
    fn = apps[0].state.engine_loop.engine.decode_fn
    assert (None if fn is None else fn.cfg.background) == background


def test_serve_takes_the_same_model_values_in_every_mode(tmp_path, capsys) -> None:
    """One parser for --model: a bad value fails before any worker starts, whatever the mode; valid forms pass."""
    from llmspeed.cli.main import main
    from llmspeed.models.spec import parse_model_spec

    for extra in ([], ["--replicas", "2"], ["--backend", "ray"]):
        capsys.readouterr()
        assert main(["serve", "--model", str(tmp_path / "missing"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: model not found"), err
        assert main(["serve", "--model", f"{tmp_path}:native", *extra]) == 2  # ':native' is for GGUF sources
    for value in ("default", "default:native", "default:fp32", str(tmp_path)):
        parse_model_spec(value)  # what serve checks before starting workers (was: 'model not found: default:native')
