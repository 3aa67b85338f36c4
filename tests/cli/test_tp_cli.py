"""`--tp` on the command line: the same text as one process; bad values are one `error:` line, exit 2."""

from __future__ import annotations

import json

import pytest

from llmspeed.cli.main import main


def test_generate_tp2_same_tokens(tiny_model_dir, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tiny_model_dir("qwen2"))
    args = ["generate", "To be, or not to be", "--model", d, "--max-new-tokens", "10", "--ignore-eos", "--json",
            "--threads", "1"]
    assert main(args) == 0
    one = json.loads(capsys.readouterr().out)
    assert main([*args, "--tp", "2"]) == 0
    two = json.loads(capsys.readouterr().out)
    assert two["token_ids"] == one["token_ids"] and len(two["token_ids"]) == 10


@pytest.mark.parametrize("cmd, extra, needle", [
    ("generate", ["hi", "--tp", "3"], "--tp 3 does not divide the model's 4 attention heads"),
    ("generate", ["hi", "--tp", "4"], "--tp 4 does not divide the model's 2 KV heads"),
    ("generate", ["hi", "--tp", "0"], "--tp must be >= 1"),
    ("generate", ["hi", "--tp", "2", "--recipe", "int8"], "cannot be sharded"),
    ("serve", ["--tp", "2", "--replicas", "2"], "without --replicas"),
    ("bench", ["--tp", "0"], "--tp must be >= 1"),
])
def test_tp_errors_are_one_line(tiny_model_dir, cmd: str, extra: list[str], needle: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    model = ["--model", str(tiny_model_dir("llama"))]
    capsys.readouterr()  # building the fixture model may print progress
    args = [cmd, *extra[:1], *model, *extra[1:]] if cmd == "generate" else [cmd, *model, *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_default_native_model_cannot_be_sharded(capsys: pytest.CaptureFixture[str]) -> None:
    """The embedded SmolLM2 has 9 heads / 3 KV heads: --tp 2 does not divide them (--tp 3 would)."""
    assert main(["generate", "hi", "--tp", "2"]) == 2
    assert "does not divide the model's 9 attention heads" in capsys.readouterr().err


def test_torchrun_launch(tiny_model_dir) -> None:
    """Under torchrun every rank runs the same command: rank 0 prints, rank 1 follows and exits 0."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    d = str(tiny_model_dir("llama"))
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = os.environ | {"PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1",
                        "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "llmspeed.cli.main", "generate", "To be, or not to be", "--model", d, "--tp", "2", "--threads", "1",
           "--max-new-tokens", "6", "--ignore-eos", "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout[res.stdout.index("{"):])
    import llmspeed

    want = llmspeed.load(d).generate("To be, or not to be", max_new_tokens=6, ignore_eos=True)[0].token_ids
    assert out["token_ids"] == want
