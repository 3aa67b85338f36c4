"""llmspeed's ops as C functions for AOTInductor packages (csrc/aoti_shims.cpp).

`c_shims()` is the value of inductor's `aot_inductor.custom_ops_to_c_shims`: with it, a compiled package calls
`aoti_torch_cpu_<op>` directly instead of going through AOTInductor's proxy executor. The package resolves those
symbols when it is loaded, so the kernel library's symbols are made global first (the library is loaded with
RTLD_LOCAL by torch.ops.load_library; re-opening it with RTLD_NOLOAD only changes its visibility).
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import torch

from llmspeed.kernels import available, build

_T = "AtenTensorHandle"
DECLARATIONS = {  # op -> its C declaration, as csrc/aoti_shims.cpp defines it
    "int4_linear": f"AOTITorchError aoti_torch_cpu_int4_linear({_T} x, {_T} codes, {_T} scales, {_T} mins, "
                   f"int64_t group, {_T}* ret0)",
    "int4_linear_q8": f"AOTITorchError aoti_torch_cpu_int4_linear_q8({_T} x, {_T} codes, {_T} scales, {_T} mins, "
                      f"int64_t group, {_T}* ret0)",
    "int8_linear": f"AOTITorchError aoti_torch_cpu_int8_linear({_T} x, {_T} q, {_T} scales, {_T}* ret0)",
    "int8_linear_q8": f"AOTITorchError aoti_torch_cpu_int8_linear_q8({_T} x, {_T} q, {_T} scales, {_T}* ret0)",
    "int8g_linear": f"AOTITorchError aoti_torch_cpu_int8g_linear({_T} x, {_T} q, {_T} scales, {_T}* ret0)",
    "paged_decode_attention": f"AOTITorchError aoti_torch_cpu_paged_decode_attention({_T} q, {_T} k_cache, "
                              f"{_T} v_cache, {_T} slots, {_T} n_valid, double scale, {_T}* ret0)",
}
_global: list[ctypes.CDLL] = []  # the re-opened library handle, kept for the life of the process


def c_shims() -> dict[Any, list[str]]:
    """{op overload: [C declaration]} for the ops whose C entry point the loaded library exports; {} when the C++
    kernels are not in use (the reference ops are plain torch, nothing to shim)."""
    if not available():
        return {}
    path = str(build.status().get("path") or "")
    if not path:
        return {}
    if not _global:
        try:
            _global.append(ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_GLOBAL | os.RTLD_NOLOAD))
        except OSError:  # not loaded from this path after all: packages keep the proxy executor
            return {}
    lib = _global[0]
    return {getattr(torch.ops.llmspeed, op).default: [decl] for op, decl in DECLARATIONS.items()
            if hasattr(lib, f"aoti_torch_cpu_{op}")}
