"""The `isa` fixture shared by the kernel tests: run a test once per instruction-set path of the C++ kernels.

A test module may define `isa_levels(detected: int) -> list[int]` to choose the levels it covers (default: every
level from the detected one down to 0 = scalar). The previous level is restored after each test.
"""

from __future__ import annotations

import pytest
import torch

from llmspeed import kernels
from llmspeed.kernels import build

ISA_NAMES = {2: "avx512", 1: "avx2", 0: "scalar"}


def _detected() -> int:
    assert kernels.available(), f"C++ kernels failed to build/load: {build.status()}"
    return int(torch.ops.llmspeed.isa(-1))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "isa" in metafunc.fixturenames:
        detected = _detected()
        choose = getattr(metafunc.module, "isa_levels", lambda d: list(range(d, -1, -1)))  # e.g. [2, 1, 0]
        metafunc.parametrize("isa", choose(detected), ids=ISA_NAMES.get, indirect=True)


@pytest.fixture
def isa(request: pytest.FixtureRequest):
    ops = torch.ops.llmspeed
    detected = int(ops.isa(-1))
    ops.isa(request.param)
    yield request.param
    ops.isa(detected)
