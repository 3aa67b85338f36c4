"""Baseline: Hugging Face transformers, eager attention, float32, on the same original weights.

`default` and `.gguf` models load with `from_pretrained(dir, gguf_file=...)` (transformers dequantizes the
GGUF itself); HF directories load directly; an llmspeed-saved directory is traced back through its recorded
source to the weights it was made from.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from llmspeed.bench.config import Scenario
from llmspeed.bench.measure import RunResult, path_size

log = logging.getLogger(__name__)


def original_weights(spec: str, _depth: int = 0) -> tuple[str, Path] | None:
    """("gguf" | "hf_dir", path) of the uncompressed weights behind a --model value, or None if unknown."""
    from llmspeed.models.default_model import default_gguf_path
    from llmspeed.models.saved import is_saved_dir

    if _depth > 5:
        return None
    if spec == "default":
        return "gguf", default_gguf_path()
    p = Path(spec).expanduser()
    if p.is_file() and p.suffix.lower() == ".gguf":
        return "gguf", p
    if not p.is_dir() or not (p / "config.json").is_file():
        return None
    if not is_saved_dir(p):
        return "hf_dir", p
    meta = json.loads((p / "config.json").read_text())["llmspeed"]
    source = meta.get("source") or {}
    recipe = json.loads((p / "recipe.json").read_text()).get("steps", [])
    if source.get("gguf"):
        return "gguf", Path(source["gguf"])
    if not recipe:
        return "hf_dir", p  # dense weights under Hugging Face names: loadable as is
    return original_weights(str(source["model"]), _depth + 1) if source.get("model") else None


class HFBackend:
    engine = "hf"

    def __init__(self, spec: str) -> None:
        found = original_weights(spec)
        if found is None:
            raise ValueError(f"cannot find the original weights of {spec} for the HF baseline")
        self.kind, self.path = found
        self.model: Any = None
        self.tokenizer: Any = None

    def load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.kind == "gguf":
            kw = {"gguf_file": self.path.name}
            src = self.path.parent
        else:
            kw, src = {}, self.path
        self.model = AutoModelForCausalLM.from_pretrained(src, attn_implementation="eager", dtype=torch.float32,
                                                          **kw).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(src, **kw)

    @property
    def size_bytes(self) -> int:
        return path_size(self.path)

    def source_name(self) -> str:
        return str(self.path)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def bytes_per_step(self, batch: int, context_len: int) -> float:
        from llmspeed.profiling.roofline import weight_bytes_per_decode_step

        c = self.model.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        kv = 2 * c.num_hidden_layers * kv_heads * head_dim * 4 * context_len * batch
        return weight_bytes_per_decode_step(self.model, batch) + kv

    @torch.inference_mode()
    def run(self, sc: Scenario, new_tokens: int, ids: list[int]) -> RunResult:
        from transformers import LogitsProcessor, LogitsProcessorList

        stamps: list[float] = []

        class Stamp(LogitsProcessor):  # called once per generated token, right after its forward
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
                stamps.append(time.perf_counter())
                return scores

        x = torch.tensor([ids] * sc.batch, dtype=torch.long)  # [B, T], same tokens as every engine
        eos = self.model.generation_config.eos_token_id
        pad = eos[0] if isinstance(eos, list) else eos
        t0 = time.perf_counter()
        out = self.model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, min_new_tokens=new_tokens,
                                  max_new_tokens=new_tokens, logits_processor=LogitsProcessorList([Stamp()]),
                                  pad_token_id=pad, temperature=None, top_p=None, top_k=None)
        e2e = time.perf_counter() - t0
        n = out.shape[1] - x.shape[1]
        return RunResult(ttft_s=(stamps[0] if stamps else time.perf_counter()) - t0, e2e_s=e2e,
                         tokens_per_seq=[n] * sc.batch)
