"""Tensor-parallel shard loading: every rank reads only its slice (get_slice), never a whole sharded weight."""

from __future__ import annotations

import pytest
import torch

import llmspeed
from llmspeed.layers.parallel import ParallelLMHead, RowParallelLinear, TPGroup, VocabParallelEmbedding, vocab_shard
from llmspeed.models.sharded import check_tp, hf_gpt2_key, load_shard, shard_of


class _Spy:
    """Wraps safetensors' safe_open handle and records which tensors were read whole."""

    whole: list[str] = []

    def __init__(self, inner):
        self.inner = inner

    def __enter__(self):
        self.h = self.inner.__enter__()
        return self

    def __exit__(self, *a):
        return self.inner.__exit__(*a)

    def keys(self):
        return self.h.keys()

    def get_slice(self, k):
        return self.h.get_slice(k)

    def get_tensor(self, k):
        _Spy.whole.append(k)
        return self.h.get_tensor(k)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_rank_holds_only_its_shard(tiny_model_dir, monkeypatch, arch: str) -> None:
    import safetensors

    d = tiny_model_dir(arch)
    ref_llm = llmspeed.load(d)
    full, cfg = ref_llm.model.state_dict(), ref_llm.config
    real = safetensors.safe_open
    monkeypatch.setattr(safetensors, "safe_open", lambda *a, **k: _Spy(real(*a, **k)))
    _Spy.whole = []
    for rank in range(2):
        tp = TPGroup(rank, 2)
        shard = load_shard(d, "float32", tp).model
        sd = shard.state_dict()
        # every 2-D weight that is sharded holds half of one dimension; replicated ones are whole
        for key, t in sd.items():
            spec = shard_of(cfg, key, tp)
            ref = full[key]
            if spec is None:
                assert t.shape == ref.shape, key
                continue
            assert t.numel() * 2 == ref.numel() or key.endswith(("embed_tokens.weight", "wte.weight", "lm_head.weight"))
            part = torch.cat([ref.narrow(spec.dim, a, b - a) for a, b in spec.ranges], dim=spec.dim)
            assert torch.equal(t[: part.shape[0]], part), key  # the right slice, not just the right shape
        n_full = sum(t.numel() for k, t in full.items() if k != "lm_head.weight" or not cfg.tie_embeddings)
        n_shard = sum(t.numel() for k, t in sd.items() if k != "lm_head.weight" or not cfg.tie_embeddings)
        assert n_shard < 0.6 * n_full
        attn = (shard.model.layers[0].self_attn if arch != "gpt2" else shard.transformer.h[0].attn)
        if arch != "gpt2":
            assert attn.n_heads == cfg.n_heads // 2 and attn.n_kv_heads == cfg.n_kv_heads // 2
            assert isinstance(attn.o_proj, RowParallelLinear)
        else:
            assert isinstance(attn.c_proj, RowParallelLinear) and attn.c_proj.bias is not None
        assert isinstance(shard.lm_head, ParallelLMHead)
    # only replicated tensors (norms, positions, row-parallel biases) were ever read whole
    assert _Spy.whole
    for k in _Spy.whole:
        key = hf_gpt2_key(k) if arch == "gpt2" else k
        assert key is not None and shard_of(cfg, key, TPGroup(0, 2)) is None, k


def test_uneven_vocabulary_is_padded(tiny_model_dir, tiny_tokenizer_json, tmp_path) -> None:
    from tests.conftest import build_tiny_hf

    d = build_tiny_hf(tmp_path / "v515", "llama", tiny_tokenizer_json, vocab_size=515)
    assert vocab_shard(515, 2, 1) == (258, 257, 258)
    full = llmspeed.load(d).model.model.embed_tokens.weight
    emb = load_shard(d, "float32", TPGroup(1, 2)).model.model.embed_tokens
    assert isinstance(emb, VocabParallelEmbedding) and emb.weight.shape == (258, full.shape[1])
    assert torch.equal(emb.weight[:257], full[258:]) and not emb.weight[257].any()


def test_tp_must_divide_heads(tiny_model_dir) -> None:
    cfg = llmspeed.load(tiny_model_dir("llama")).config  # 4 heads, 2 KV heads
    check_tp(cfg, 2)
    with pytest.raises(ValueError, match="does not divide the model's 4 attention heads"):
        check_tp(cfg, 3)
    with pytest.raises(ValueError, match="2 KV heads"):
        check_tp(cfg, 4)
