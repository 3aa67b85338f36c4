"""The screening speed run is the benchmark's run with its own repeat count: every front point is one, so it
must not be a single short run."""

from __future__ import annotations

import llmspeed
from llmspeed.auto.config import AutoConfig
from llmspeed.auto.measure import LLMMeasurer
from llmspeed.auto.space import Candidate


def test_screening_speed_run_settings(tiny_model_dir) -> None:
    base = llmspeed.load(tiny_model_dir("llama"))
    m = LLMMeasurer(base, AutoConfig(new_tokens=8, repeats=1, screen_repeats=2, profile=False))
    sp = m.speed(Candidate(steps=("int8",)))
    assert sp["settings"]["new_tokens"] == 8 and sp["settings"]["repeats"] == 2
    assert sp["decode_tok_s"] > 0
