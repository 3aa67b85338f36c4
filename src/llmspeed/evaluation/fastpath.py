"""Does the fast path compute the same model? Top-1 agreement and KL of the ENGINE's steps vs a reference.

The fast path is what `generate` and the server run: the engine's prefill, then decode steps (fused
projections, llmspeed's low-bit kernels, the compiled graph when the recipe has `compile`, the measured prefill
path). The reference is the same weights computed the plain way: one full causal forward, separate q/k/v and
gate/up projections, every quantized layer as a float32 GEMM on its dequantized weight, nothing compiled.

Teacher forcing keeps both on the same text: each window's first `prompt_len` tokens are the prompt; after every
step the token the engine sampled is replaced by the text's next token, so step j predicts token prompt_len + j
exactly as the reference's position prompt_len + j - 1 does.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F

from llmspeed.evaluation.agreement import AgreementAccumulator
from llmspeed.runtime.plans import reference_paths
from llmspeed.runtime.sequence import SamplingParams

log = logging.getLogger(__name__)


def fast_path_agreement(llm: Any, tokens: list[int], windows: int = 8, prompt_len: int = 128,
                        new_tokens: int = 250, original: Any = None) -> dict[str, Any]:
    """Teacher-forced engine steps vs the reference on `windows` disjoint windows of `tokens`.

    Returns top-1 agreement and KL over all windows * new_tokens predictions (step 0 of each window is the
    prefill's last position; the rest are decode steps) plus the decode-only agreement. With `original` (e.g. the
    float32 model the recipe came from), the reference is that model's plain forward instead: the quality of
    what decode really computes, against the original, on the same teacher-forced steps.
    """
    span = prompt_len + new_tokens
    if len(tokens) < windows * span:
        raise ValueError(f"need {windows * span} tokens for {windows} windows of {span}, got {len(tokens)}")
    engine = llm.reset_engine(enable_prefix_cache=False, max_batch=1)
    all_acc, dec_acc = AgreementAccumulator(), AgreementAccumulator()
    nll_fast: list[torch.Tensor] = []
    nll_ref: list[torch.Tensor] = []
    try:
        for w in range(windows):
            ids = tokens[w * span:(w + 1) * span]
            ref_llm = original if original is not None else llm
            with reference_paths(ref_llm.model):
                ref = ref_llm.logits(torch.tensor([ids[:-1]]))[0, prompt_len - 1:]  # [new_tokens, V]
            ref_lp = F.log_softmax(ref.float(), -1)
            got: list[torch.Tensor] = []
            engine.on_logits = lambda batch, logits, got=got: got.append(logits[0].float().clone())  # [V]
            seq = engine.make_sequence(ids[:prompt_len], SamplingParams(max_new_tokens=new_tokens, ignore_eos=True))
            engine.add(seq)
            while not seq.finished:
                engine.step()
                j = len(seq.output_ids) - 1
                seq.output_ids[j] = ids[prompt_len + j]  # teacher forcing: the next step reads the text's token
            fast_lp = F.log_softmax(torch.stack(got), -1)  # [new_tokens, V]
            if fast_lp.shape != ref_lp.shape:
                raise RuntimeError(f"engine produced {fast_lp.shape[0]} steps, expected {ref_lp.shape[0]}")
            truth = torch.tensor(ids[prompt_len:])  # [new_tokens]: the text's next tokens (teacher forcing)
            nll_fast.append(-fast_lp.gather(1, truth[:, None])[:, 0])
            nll_ref.append(-ref_lp.gather(1, truth[:, None])[:, 0])
            all_acc.add(ref_lp, fast_lp)
            dec_acc.add(ref_lp[1:], fast_lp[1:])
            log.info("fast-path window %d/%d: top-1 %.4f so far", w + 1, windows, all_acc.agree / all_acc.count)
    finally:
        engine.on_logits = None
    out = all_acc.report()
    out["decode_top1_agreement"] = dec_acc.report()["top1_agreement"]
    # perplexity of the text's next tokens as the ENGINE's steps predict them vs as the reference does
    out["ppl_fast"] = float(torch.cat(nll_fast).double().mean().exp()) if nll_fast else float("nan")
    out["ppl_reference"] = float(torch.cat(nll_ref).double().mean().exp()) if nll_ref else float("nan")
    out["delta_ppl_pct"] = 100.0 * (out["ppl_fast"] / out["ppl_reference"] - 1.0)
    out.update(windows=windows, prompt_len=prompt_len, new_tokens=new_tokens)
    return out
