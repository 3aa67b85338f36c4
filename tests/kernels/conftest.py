"""The `isa` fixture shared by the kernel tests: run a test once per instruction-set level of the C++ kernels.

The levels are those this CPU runs (`kernels.isa_levels()`: avx512-vnni, avx512, avx2-vnni, avx2, scalar, where
present). A test module may define `isa_levels(levels: list[int]) -> list[int]` to choose the ones it covers
(default: all of them). The previous level is restored after each test.
"""

from __future__ import annotations

import pytest
import torch

from llmspeed import kernels
from llmspeed.kernels import build


def _levels() -> list[int]:
    assert kernels.available(), f"C++ kernels failed to build/load: {build.status()}"
    return list(kernels.isa_levels())  # highest first


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "isa" in metafunc.fixturenames:
        choose = getattr(metafunc.module, "isa_levels", lambda levels: levels)
        metafunc.parametrize("isa", choose(_levels()), ids=kernels.ISA_NAMES.get, indirect=True)


@pytest.fixture
def isa(request: pytest.FixtureRequest):
    ops = torch.ops.llmspeed
    previous = int(ops.isa(-1))
    assert int(ops.isa(request.param)) == request.param, "a level this CPU runs must be selectable"
    yield request.param
    ops.isa(previous)
