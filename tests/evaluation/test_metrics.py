"""Perplexity, KL / top-1 agreement and last-word accuracy checked against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import llmspeed
from llmspeed.data import texts as datasets
from llmspeed.evaluation.agreement import agreement, kl_per_token
from llmspeed.evaluation.perplexity import perplexity, token_windows
from llmspeed.evaluation.tasks import lastword_correct, lastword_passages
from llmspeed.layers.attention import AttnBatch

SMALL = dict(max_tokens=300, ood_max_tokens=100, window=128, lastword_n=12, lastword_context=24)


def test_perplexity_is_exp_mean_nll_by_hand(tiny_llm) -> None:
    wins = token_windows(tiny_llm.tokenizer, datasets.eval_plays(), max_tokens=300, window=128)
    assert [w.numel() for w in wins.windows] == [128, 128, 44] and wins.n_tokens == 300
    shares = [37, 37, 37, 37, 38, 38, 38, 38]  # 300 tokens shared by the 8 held-out plays
    assert wins.part_tokens == dict(zip(datasets.EVAL_PLAYS, shares, strict=True))
    ids = torch.tensor([t for p, n in zip(datasets.EVAL_PLAYS, shares, strict=True)
                        for t in tiny_llm.tokenizer.encode(datasets.read_play(p) + "\n\n",
                                                           add_special_tokens=False)[:n]])
    nll = []
    for s in range(0, 300, 128):
        w = ids[s: s + 128]
        logits = tiny_llm.model(w.unsqueeze(0), AttnBatch.no_cache(1, w.numel()))[0]  # [T, V]
        nll.append(F.cross_entropy(logits[:-1].double(), w[1:], reduction="none"))
    expect = math.exp(torch.cat(nll).mean().item())
    res = perplexity(tiny_llm, wins)
    assert res["n_predicted"] == 297 and res["n_windows"] == 3
    assert res["ppl"] == pytest.approx(expect, rel=1e-6)  # float32 log-softmax vs float64 by hand
    assert "non-overlapping 128-token windows over 300 tokens" in res["convention"]


def test_kl_of_model_vs_itself_is_zero_and_top1_is_one(tiny_llm) -> None:
    res = llmspeed.evaluate(tiny_llm, baseline=tiny_llm, **SMALL)
    assert res["kl_mean"] == 0.0 and res["kl_p99"] == 0.0 and res["top1_agreement"] == 1.0
    assert res["delta_ppl_pct"] == 0.0 and res["kl_tokens"] == 297
    assert res["lastword_accuracy"] == res["baseline_lastword_accuracy"]
    assert res["ood"]["n_tokens"] == 100 and res["ppl_ood"] > 1
    assert res["lastword"]["n_passages"] == 12


def test_kl_matches_definition_between_different_models(tiny_llm, tiny_model_dir) -> None:
    other = llmspeed.load(tiny_model_dir("llama", seed=1))
    wins = token_windows(tiny_llm.tokenizer, datasets.eval_plays(), max_tokens=64, window=64)
    res = agreement(tiny_llm, other, wins)
    ids = wins.windows[0].unsqueeze(0)
    p, q = tiny_llm.logits(ids)[0, :-1].double(), other.logits(ids)[0, :-1].double()
    by_hand = F.kl_div(q.log_softmax(-1), p.log_softmax(-1), log_target=True, reduction="none").sum(-1)  # [T]
    torch.testing.assert_close(kl_per_token(p, q), by_hand, rtol=1e-5, atol=1e-6)  # float32 math
    assert res["kl_mean"] == pytest.approx(by_hand.mean().item(), rel=1e-5)
    assert res["kl_p99"] == pytest.approx(torch.quantile(by_hand, 0.99).item(), rel=1e-5)
    assert res["top1_agreement"] == pytest.approx((p.argmax(-1) == q.argmax(-1)).double().mean().item())
    assert 0 < res["kl_mean"] and res["top1_agreement"] < 1


def test_lastword_teacher_forced_check_equals_greedy_decoding(tiny_llm) -> None:
    passages = lastword_passages(tiny_llm.tokenizer, n=300, context_tokens=32)
    assert len(passages) == 300 and {p.play for p in passages} <= set(datasets.EVAL_PLAYS)
    assert all(len(p.context) == 32 and p.target for p in passages)
    assert all(tiny_llm.tokenizer.decode(list(p.target)) == " " + p.word for p in passages[:20])
    sub = passages[::30]
    fast = lastword_correct(tiny_llm, sub, batch_size=4)
    for p, ok in zip(sub, fast.tolist(), strict=True):
        ids = list(p.context)
        for _ in p.target:  # plain greedy decoding, one sequence at a time
            ids.append(int(tiny_llm.logits(torch.tensor([ids]))[0, -1].argmax()))
        assert ok == (tuple(ids[len(p.context):]) == p.target)


def test_lastword_accuracy_is_one_when_the_model_is_forced_right(tiny_llm) -> None:
    passages = lastword_passages(tiny_llm.tokenizer, n=8, context_tokens=16)

    class Oracle:  # logits that put all mass on the true next token of each passage row
        def logits(self, ids: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(*ids.shape, 512)
            out[:, :-1].scatter_(-1, ids[:, 1:].unsqueeze(-1), 1.0)
            return out

    assert bool(lastword_correct(Oracle(), passages).all())
