"""int4 group sizes against a model's layer widths (compress/quant/int4.py)."""

from __future__ import annotations

import pytest


def test_fitting_groups() -> None:
    """SmolLM2-135M's shapes: K = 576 (attention, gate/up) and 1536 (down) take groups of 32 and 64, not 128."""
    from torch import nn

    from llmspeed.compress.quant.int4 import check_groups, fitting_groups

    m = nn.Sequential(nn.Linear(576, 8), nn.Linear(1536, 8))
    assert fitting_groups(m) == (32, 64)
    assert fitting_groups(nn.Sequential(nn.Linear(1536, 8))) == (32, 64, 128)
    assert fitting_groups(nn.Sequential(nn.Linear(40, 8))) == ()
    with pytest.raises(ValueError, match="group sizes that fit this model: 32, 64"):
        check_groups(m, 128, (), "int4-g128")
