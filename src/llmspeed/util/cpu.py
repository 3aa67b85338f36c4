"""CPU facts read from Linux's /proc/cpuinfo (model name, ISA flags, physical cores), parsed in one place.

Every speed figure names the CPU it came from, and the kernels, phase plans and mixed-precision layers dispatch on
these flags. Parsed once per process on first use; elsewhere than Linux the facts degrade to `platform`'s.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]
    physical_cores: int

    def isa_summary(self) -> str:
        """The flags that decide llmspeed's kernels, e.g. 'avx2 avx512f avx512bw avx512_vnni avx512_bf16'."""
        keep = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx_vnni", "avx512_vnni", "avx512_bf16",
                "amx_tile", "amx_bf16", "amx_int8", "avx512_fp16")
        return " ".join(f for f in keep if f in self.flags) or "no AVX2"


def parse_cpuinfo(text: str, cpu_count: int | None = None) -> CpuInfo:
    """Pure: /proc/cpuinfo text -> CpuInfo (tests feed it other CPUs' text)."""
    model, flags = "", frozenset[str]()
    cores: set[tuple[str, str]] = set()
    phys = "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and not model:
            model = value
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        elif key == "physical id":
            phys = value
        elif key == "core id":
            cores.add((phys, value))
    n = cpu_count or os.cpu_count() or 1
    return CpuInfo(model=model or platform.processor() or platform.machine(), flags=flags,
                   physical_cores=min(len(cores), n) if cores else n)


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CpuInfo, read once."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        text = ""
    return parse_cpuinfo(text)


def cpu_flags() -> frozenset[str]:
    return cpu_info().flags


def fast_half_matmul(dtype_name: str) -> bool:
    """Whether the CPU multiplies `bfloat16` / `float16` matrices natively (AVX512-BF16/AMX; AVX512-FP16/AMX-FP16)."""
    flags = cpu_flags()
    if dtype_name in ("bfloat16", "bf16"):
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    if dtype_name in ("float16", "fp16"):
        return bool(flags & {"avx512_fp16", "amx_fp16"})
    raise ValueError(f"not a half-precision dtype: {dtype_name!r}")
