"""`evaluate(..., workers=2)` / `llmspeed eval --workers 2`: every metric identical to one process."""

from __future__ import annotations

import json

import pytest

import llmspeed
from llmspeed.evaluation.parallel import chunks

KW = dict(max_tokens=1500, ood_max_tokens=400, lastword_n=40, window=128)


def _strip(res: dict) -> dict:
    return {k: v for k, v in res.items() if k not in ("seconds", "workers")}


def test_chunks_keep_order_and_batches() -> None:
    items = list(range(37))
    parts = chunks(items, 3, align=16)
    assert [x for p in parts for x in p] == items and [len(p) for p in parts] == [16, 16, 5]
    assert chunks(items, 2) == [items[:19], items[19:]]


def test_two_workers_equal_one_process(tiny_model_dir) -> None:
    d = tiny_model_dir("llama")
    llm = llmspeed.load(d)
    llm.compress_("int8")  # changed after loading: workers read a saved copy
    assert llm.load_args is None
    one = llmspeed.evaluate(llm, baseline=str(d), **KW)
    two = llmspeed.evaluate(llm, baseline=str(d), workers=2, **KW)
    assert two["workers"] == 2 and one["kl_tokens"] > 500 and one["kl_mean"] > 0
    assert _strip(two) == _strip(one)  # bit-identical: ppl, KL mean/p99, agreement, OOD, last-word


def test_cli_eval_workers(tiny_model_dir, capsys: pytest.CaptureFixture[str]) -> None:
    from llmspeed.cli.main import main

    args = ["eval", "--model", str(tiny_model_dir("gpt2")), "--baseline", "none", "--max-tokens", "1024",
            "--ood-max-tokens", "0", "--lastword-n", "0", "--json"]
    assert main(args) == 0
    one = json.loads(capsys.readouterr().out)
    assert main([*args, "--workers", "2"]) == 0
    two = json.loads(capsys.readouterr().out)
    assert two["ppl"] == one["ppl"] and two["n_predicted"] == one["n_predicted"]
    assert main([*args, "--workers", "0"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err
