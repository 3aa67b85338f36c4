"""Build (once per machine and source version) and load llmspeed's C++ CPU kernels (csrc/*.cpp).

`load()` is lazy and idempotent: the first call compiles with torch.utils.cpp_extension into
`<$LLMSPEED_CACHE or ~/.cache/llmspeed>/kernels/<torch version>-<source hash>/` (one INFO line, ~30-40 s on
2 cores), later processes just load the cached library (milliseconds). Any failure logs ONE warning with the
reason and returns False, after which llmspeed.kernels uses the pure-torch reference. `LLMSPEED_KERNELS=0`
disables the C++ path altogether.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import torch

from llmspeed.util.cache import cache_path

log = logging.getLogger(__name__)

NAME = "llmspeed_lowbit"
CSRC = Path(__file__).with_name("csrc")
SOURCES = ("lowbit.cpp", "lowbit_x86.cpp", "lowbit_int8g.cpp", "lowbit_q8.cpp", "lowbit_q8_quant.cpp",
           "lowbit_q8_vnni512.cpp", "lowbit_q8_avx512.cpp", "lowbit_q8_vnni256.cpp", "lowbit_q8_vnni256x.cpp",
           "lowbit_q8_avx2.cpp", "attention.cpp", "aoti_shims.cpp")
HEADERS = ("lowbit.h", "lowbit_q8_tiles512.h", "lowbit_q8_tiles256.h")
# No -march: the SIMD functions carry their own target attributes and are chosen at runtime, so one build
# serves any x86-64 CPU. -ffp-contract=off keeps `u * s + m` two rounded ops (dequantize is bit-exact with the
# reference); the kernels use explicit FMA intrinsics where they want them. -fopenmp makes at::parallel_for
# parallel (torch's own libgomp.so.1 is already loaded and is reused).
CFLAGS = ("-O3", "-fopenmp", "-ffp-contract=off", "-fno-math-errno")
LDFLAGS = ("-fopenmp",)
EXPECTED_BUILD_S = 30

_lock = threading.Lock()
_state: dict[str, object] = {}  # "ok": bool, "reason": str, "path": str


def enabled() -> bool:
    """False when the environment asks for the reference (LLMSPEED_KERNELS=0/false/off/no)."""
    return os.environ.get("LLMSPEED_KERNELS", "1").strip().lower() not in ("0", "false", "off", "no")


def source_hash() -> str:
    """Hash of the sources, headers, flags and compiler name: any change gets a fresh build directory."""
    h = hashlib.sha256()
    for name in (*SOURCES, *HEADERS):
        h.update(name.encode() + b"\0" + (CSRC / name).read_bytes() + b"\0")
    h.update(repr((CFLAGS, LDFLAGS, os.environ.get("CXX", "c++"))).encode())
    return h.hexdigest()[:16]


def build_dir() -> Path:
    return cache_path("kernels", f"{torch.__version__}-{source_hash()}")


def _short_reason(exc: BaseException) -> str:
    """One line out of a compiler log: the first `error:` line if there is one, else the exception's first line."""
    text = str(exc)
    for line in text.splitlines():
        if "error:" in line or "Error:" in line:
            return line.strip()[:300]
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"{type(exc).__name__}: {first[:300]}"


def _compile(directory: Path) -> str:
    from torch.utils import cpp_extension

    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.prefix) / "bin"), old_path])  # a pip-installed ninja
    try:
        if shutil.which(os.environ.get("CXX", "c++")) is None:
            raise RuntimeError(f"no C++ compiler ({os.environ.get('CXX', 'c++')}) on PATH")
        if not cpp_extension.is_ninja_available():
            raise RuntimeError("ninja not found (pip install ninja)")
        directory.mkdir(parents=True, exist_ok=True)
        return cpp_extension.load(
            name=NAME,
            sources=[str(CSRC / s) for s in SOURCES],
            extra_cflags=list(CFLAGS),
            extra_ldflags=list(LDFLAGS),
            extra_include_paths=[str(CSRC)],
            build_directory=str(directory),
            is_python_module=False,
            verbose=False,
        )
    finally:
        os.environ["PATH"] = old_path


def load() -> bool:
    """Build if needed and load the kernels into torch.ops.llmspeed; True on success. Cached per process."""
    if "ok" in _state:
        return bool(_state["ok"])
    with _lock:
        if "ok" in _state:
            return bool(_state["ok"])
        ok, reason, path = False, "", ""
        if not enabled():
            reason = "disabled by LLMSPEED_KERNELS=0"
        else:
            try:
                directory = build_dir()
                lib = directory / f"{NAME}.so"
                if lib.is_file():
                    torch.ops.load_library(str(lib))
                    path = str(lib)
                else:
                    log.info("building llmspeed CPU kernels (once, ~%d s) in %s", EXPECTED_BUILD_S, directory)
                    t0 = time.perf_counter()
                    path = _compile(directory)
                    log.debug("built %s in %.1f s", path, time.perf_counter() - t0)
                ok = hasattr(torch.ops.llmspeed, "int4_linear")
                reason = "" if ok else "library loaded but torch.ops.llmspeed.int4_linear is missing"
            except Exception as exc:  # any build/load failure: one warning, then the reference
                reason = _short_reason(exc)
            if not ok:
                log.warning("llmspeed CPU kernels unavailable, using the pure-torch reference: %s", reason)
        _state.update(ok=ok, reason=reason, path=path)
        return ok


def status() -> dict[str, object]:
    """{"ok", "reason", "path"} after `load()`; empty before."""
    return dict(_state)
