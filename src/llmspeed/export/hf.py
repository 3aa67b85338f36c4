"""Hugging Face directory export: config.json + model.safetensors (dense float32) + tokenizer files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from llmspeed.export.dense import dense_state_dict

log = logging.getLogger(__name__)


def write_hf_dir(llm: Any, out: Path) -> None:
    """Write `llm` (an llmspeed.LLM, possibly compressed) into the existing, empty directory `out`."""
    from safetensors.torch import save_file

    from llmspeed.models.registry import TO_HF

    cfg = llm.config
    sd, _ = dense_state_dict(llm.model)
    sd = TO_HF[cfg.arch](sd)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    hf = cfg.to_hf()
    hf["torch_dtype"] = "float32"
    if llm.recipe:
        hf["llmspeed_recipe"] = list(llm.recipe)  # provenance only; transformers ignores unknown keys
    (out / "config.json").write_text(json.dumps(hf, indent=2))
    llm.tokenizer.save(out)
    log.info("hf export: %d tensors -> %s", len(sd), out)
