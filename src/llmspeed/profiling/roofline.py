"""Machine roofline: measured memory bandwidth and matmul FLOP/s (cached per machine), and the
bytes / FLOPs a model moves per decode step and per prefill.

Calibration is measured once per (CPU model, torch version) and cached as JSON under
`$LLMSPEED_CACHE/calibration/`; `recalibrate=True` measures again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from llmspeed.util.cache import cache_path
from llmspeed.util.cpu import cpu_info
from llmspeed.util.timing import best_time

log = logging.getLogger(__name__)
MiB = 1 << 20
CALIBRATION_FORMAT = 1


@dataclass(frozen=True)
class CalibrationConfig:
    buffer_mib: int = 0  # 0 -> max(512 MiB, 2 x last-level cache)
    repeats: int = 5
    matmul_size: int = 1024  # square fp32 / bf16 GEMM
    threads: int = 0  # 0 -> torch's current setting

    def __post_init__(self) -> None:
        if self.buffer_mib < 0 or self.repeats <= 0 or self.matmul_size <= 0 or self.threads < 0:
            raise ValueError("calibration: buffer_mib/threads must be >= 0, repeats and matmul_size > 0")


@dataclass(frozen=True)
class Calibration:
    cpu_model: str
    torch_version: str
    threads: int
    buffer_mib: int
    copy_gbs: float  # stream copy: (read + write) bytes / s
    sum_gbs: float  # read-only reduction: bytes read / s
    fp32_gflops: float
    bf16_gflops: float
    measured_at: float = 0.0

    @property
    def bandwidth_gbs(self) -> float:
        """The roofline's memory slope: decode is read-dominated, so the read (sum) figure, or copy if higher."""
        return max(self.copy_gbs, self.sum_gbs)

    @property
    def bf16_slowdown(self) -> float:
        """fp32 / bf16 GEMM throughput (>1: bf16 slower on this CPU)."""
        return self.fp32_gflops / self.bf16_gflops if self.bf16_gflops > 0 else float("inf")

    def to_dict(self) -> dict[str, float | int | str]:
        d = dataclasses.asdict(self)
        d["bandwidth_gbs"] = self.bandwidth_gbs
        d["bf16_slowdown"] = self.bf16_slowdown
        return d


def cpu_model_name() -> str:
    return cpu_info().model


def last_level_cache_bytes() -> int:
    """Largest cache size reported by sysfs (0 when unknown)."""
    best = 0
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        m = re.match(r"(\d+)([KMG]?)", f.read_text().strip())
        if m:
            best = max(best, int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)])
    return best




def measure_bandwidth(buffer_bytes: int, repeats: int = 5) -> tuple[float, float]:
    """(copy GB/s counting read + write, sum GB/s counting bytes read) over buffers far larger than the LLC."""
    n = buffer_bytes // 4
    src = torch.ones(n, dtype=torch.float32)
    dst = torch.empty_like(src)
    t_copy = best_time(lambda: dst.copy_(src), repeats)
    t_sum = best_time(lambda: src.sum(), repeats)
    return 2 * buffer_bytes / t_copy / 1e9, buffer_bytes / t_sum / 1e9


def measure_matmul_gflops(n: int, dtype: torch.dtype, repeats: int = 5, budget_s: float = 2.0) -> float:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    t0 = time.perf_counter()
    torch.mm(a, b)
    first = time.perf_counter() - t0
    reps = max(1, min(repeats, int(budget_s / max(first, 1e-6))))  # a slow dtype gets fewer repeats
    return 2 * n**3 / best_time(lambda: torch.mm(a, b), reps) / 1e9


def measure(cfg: CalibrationConfig | None = None) -> Calibration:
    cfg = cfg or CalibrationConfig()
    old = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        mib = cfg.buffer_mib or max(512, 2 * last_level_cache_bytes() // MiB)
        copy_gbs, sum_gbs = measure_bandwidth(mib * MiB, cfg.repeats)
        fp32 = measure_matmul_gflops(cfg.matmul_size, torch.float32, cfg.repeats)
        bf16 = measure_matmul_gflops(cfg.matmul_size, torch.bfloat16, cfg.repeats)
        return Calibration(cpu_model=cpu_model_name(), torch_version=torch.__version__,
                           threads=torch.get_num_threads(), buffer_mib=mib, copy_gbs=copy_gbs, sum_gbs=sum_gbs,
                           fp32_gflops=fp32, bf16_gflops=bf16, measured_at=time.time())
    finally:
        torch.set_num_threads(old)


def calibration_path(threads: int | None = None) -> Path:
    key = f"{cpu_model_name()}-torch{torch.__version__}-t{threads or torch.get_num_threads()}-v{CALIBRATION_FORMAT}"
    return cache_path("calibration", re.sub(r"[^A-Za-z0-9._+-]+", "_", key) + ".json")


def load_or_measure(recalibrate: bool = False, cfg: CalibrationConfig | None = None) -> Calibration:
    """The cached calibration of this machine, measuring (and caching) it when absent or asked to."""
    cfg = cfg or CalibrationConfig()
    path = calibration_path(cfg.threads or None)
    if not recalibrate and path.is_file():
        try:
            return Calibration(**json.loads(path.read_text())["calibration"])
        except (ValueError, KeyError, TypeError) as e:
            log.warning("ignoring unreadable calibration %s: %s", path, e)
    log.info("measuring memory bandwidth and matmul FLOP/s (one time, cached in %s)", path)
    cal = measure(cfg)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"calibration": dataclasses.asdict(cal)}, indent=2))
        os.replace(tmp, path)
    except OSError as e:
        log.warning("cannot cache calibration at %s: %s", path, e)
    return cal


# -- what a model moves --------------------------------------------------------------------------
def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def weight_bytes_per_decode_step(model: nn.Module, batch: int = 1) -> int:
    """Bytes of weights as stored that one decode step reads.

    Every parameter and buffer counts once (shared tensors once), except embedding tables, of which only
    the `batch` rows looked up are read — unless the table is tied to the lm_head, which reads all of it —
    and rotary position tables, of which one row per sequence is read.
    """
    seen: set[int] = set()
    head = getattr(model, "lm_head", None)
    head_ptrs = {p.data_ptr() for p in head.parameters()} if isinstance(head, nn.Module) else set()
    total = 0
    for mod in model.modules():
        partial = isinstance(mod, nn.Embedding) or "rotary" in type(mod).__name__.lower()
        tensors = list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False))
        for _, t in tensors:
            if t is None or t.is_meta or t.data_ptr() in seen:
                continue
            seen.add(t.data_ptr())
            if partial and t.data_ptr() not in head_ptrs and t.dim() >= 2:
                total += batch * t[0].numel() * t.element_size()
            else:
                total += _tensor_bytes(t)
    return total


def kv_bytes_per_decode_step(model: nn.Module, context_len: int, batch: int = 1, kv_bytes_per_elem: int = 4) -> int:
    """K and V of every layer for `context_len` positions, per sequence."""
    cfg = model.config  # type: ignore[attr-defined]
    return 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * kv_bytes_per_elem * context_len * batch


def matmul_macs_per_token(model: nn.Module) -> tuple[int, int]:
    """(multiply-accumulates per token in the blocks, in the lm_head) from the linears' shapes."""
    head = getattr(model, "lm_head", None)
    blocks = lm = 0
    for mod in model.modules():
        fin, fout = getattr(mod, "in_features", None), getattr(mod, "out_features", None)
        if isinstance(fin, int) and isinstance(fout, int):
            if mod is head:
                lm += fin * fout
            else:
                blocks += fin * fout
    return blocks, lm


def prefill_flops(model: nn.Module, prompt_len: int, batch: int = 1) -> int:
    """FLOPs of one prefill: linears (lm_head on the last token only) + causal attention scores and values."""
    cfg = model.config  # type: ignore[attr-defined]
    blocks, lm = matmul_macs_per_token(model)
    attn = 2 * cfg.n_layers * cfg.n_heads * cfg.head_dim * prompt_len * (prompt_len + 1) // 2  # QK^T + PV MACs
    return batch * 2 * (blocks * prompt_len + lm + attn)


def decode_flops(model: nn.Module, context_len: int, batch: int = 1) -> int:
    cfg = model.config  # type: ignore[attr-defined]
    blocks, lm = matmul_macs_per_token(model)
    return batch * 2 * (blocks + lm + 2 * cfg.n_layers * cfg.n_heads * cfg.head_dim * context_len)


def achieved_gbs(bytes_moved: float, seconds: float) -> float:
    return bytes_moved / seconds / 1e9 if seconds > 0 else 0.0


def roofline_time(bytes_moved: float, flops: float, bandwidth_gbs: float, peak_gflops: float) -> float:
    """Lower bound on the time of a kernel sequence: the slower of streaming its bytes and doing its FLOPs."""
    t_mem = bytes_moved / (bandwidth_gbs * 1e9) if bandwidth_gbs > 0 else 0.0
    t_cmp = flops / (peak_gflops * 1e9) if peak_gflops > 0 else 0.0
    return max(t_mem, t_cmp)
