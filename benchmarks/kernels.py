"""Microbenchmark of llmspeed's C++ low-bit kernels vs torch's CPU kernels at SmolLM2-135M's linear shapes.

    python benchmarks/kernels.py [--group 32] [--threads N] [--budget 0.4] [--m 1 8 64] [--levels]

For each (N, K) and M: own int4 (`llmspeed.kernels.int4_linear`, float32 x), own int4 x int8 activations
(`llmspeed.kernels.int4_linear_q8`, integer dot products) vs torch's
`aten._weight_int4pack_mm_for_cpu` (bfloat16 x, weights packed as in compress/quant/common.py), own int8
and own int8 x int8 activations (`int8_linear_q8`) vs `torch._weight_int8pack_mm`, and float32 `F.linear`.
Every call uses the next of a rotating set of weight copies whose total exceeds the last-level cache, so the
figures are DRAM-bound (what a decode step sees), not in-cache. Reports the median (or, --stat min, best-of-N)
µs per call, GB/s of weight bytes streamed, and ratios. On a shared machine the numbers are noisy: compare them
within one run, prefer --stat min.

--levels: instead, the two q8 kernels (int4_linear_q8, int8_linear_q8) at every instruction-set level this CPU
runs (forced one by one with torch.ops.llmspeed.isa: avx512-vnni, avx512, avx2-vnni, avx2, scalar), side by side,
with each level's speed-up over avx2 (default shapes LEVEL_SHAPES, M = 1 and 8).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from llmspeed import kernels

SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536), (49152, 576)]  # (N, K) of SmolLM2-135M
LEVEL_SHAPES = [(1536, 576), (576, 1536), (960, 576)]  # 576->1536 (up), 1536->576 (down), 576->960 (qkv)


def llc_bytes() -> int:
    """Size of the largest CPU cache (sysfs), 32 MiB if unknown."""
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        t = f.read_text().strip()
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1], 1)
        sizes.append(int(t.rstrip("KMG")) * mult)
    return max(sizes, default=32 << 20)


def copies(make: Callable[[], tuple[torch.Tensor, ...]], nbytes: int, total: int) -> list[tuple[torch.Tensor, ...]]:
    """Enough independent copies of one weight set (`nbytes` each) to exceed `total` bytes (at least 2)."""
    first = make()
    n = max(2, -(-total // max(nbytes, 1)))
    return [first] + [tuple(t.clone() for t in first) for _ in range(n - 1)]


STAT: dict[str, Callable[[list[float]], float]] = {"median": statistics.median, "min": min}
_stat = statistics.median


def time_rotating(fn: Callable[[tuple[torch.Tensor, ...]], object], sets: list[tuple[torch.Tensor, ...]],
                  budget_s: float) -> float:
    """Median (or best, --stat min) seconds per call, each call on the next weight copy; >= 5 calls, ~`budget_s`."""
    fn(sets[0])  # warm-up (lazy inits)
    times: list[float] = []
    start, i = time.perf_counter(), 1
    while len(times) < 5 or (time.perf_counter() - start < budget_s and len(times) < 10_000):
        w = sets[i % len(sets)]
        t0 = time.perf_counter()
        fn(w)
        times.append(time.perf_counter() - t0)
        i += 1
    return _stat(times)


def measure(x: torch.Tensor, group: int, budget: float,
            sets: dict[str, tuple[list[tuple[torch.Tensor, ...]], int]]) -> dict[str, tuple[float, int]]:
    """x [M, K] float32 -> {kernel: (median seconds per call, weight bytes per call)}."""
    xb = x.bfloat16()  # torch's int4 kernel takes bfloat16 activations
    fns: dict[str, Callable[[tuple[torch.Tensor, ...]], object]] = {
        "own4": lambda w: kernels.int4_linear(x, w[0], w[1], w[2], group),
        "own4q8": lambda w: kernels.int4_linear_q8(x, w[0], w[1], w[2], group),
        "torch4": lambda w: torch.ops.aten._weight_int4pack_mm_for_cpu(xb, w[0], group, w[1]),
        "own8": lambda w: kernels.int8_linear(x, w[0], w[1]),
        "own8q8": lambda w: kernels.int8_linear_q8(x, w[0], w[1]),
        "torch8": lambda w: torch._weight_int8pack_mm(x, w[0], w[1]),
        "fp32": lambda w: F.linear(x, w[0]),
    }
    return {name: (time_rotating(fns[name], ws, budget), nbytes) for name, (ws, nbytes) in sets.items()}


def bench_shape(n: int, k: int, ms: list[int], group: int, total: int, budget: float) -> list[list[str]]:
    g = torch.Generator().manual_seed(0)
    u = torch.randint(0, 16, (n, k), generator=g, dtype=torch.int32)  # [N, K]
    sc = (torch.rand(n, k // group, generator=g) * 0.02).half()  # [N, K/g]
    mn = (torch.randn(n, k // group, generator=g) * 0.1).half()
    packed = kernels.pack_nibbles(u)  # [N, K/2]
    own4_bytes = packed.numel() + 2 * sc.numel() * 2
    own4 = copies(lambda: (packed, sc, mn), own4_bytes, total)
    tpacked = torch.ops.aten._convert_weight_to_int4pack_for_cpu(u, 1)  # torch's own layout
    sz = torch.stack([sc.float().t(), (mn.float() + 8 * sc.float()).t()], dim=-1).to(torch.bfloat16).contiguous()
    t4_bytes = tpacked.numel() + sz.numel() * 2
    t4 = copies(lambda: (tpacked, sz), t4_bytes, total)
    del u
    q = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)  # [N, K]
    s8 = torch.rand(n, generator=g) * 0.01  # [N]
    i8_bytes = q.numel() + 4 * n
    i8 = copies(lambda: (q, s8), i8_bytes, total)
    w32 = torch.randn(n, k, generator=g)  # [N, K]
    f32 = copies(lambda: (w32,), w32.numel() * 4, total)
    rows = []
    for m in ms:
        x = torch.randn(m, k, generator=g)  # [M, K]
        t = measure(x, group, budget, {"own4": (own4, own4_bytes), "own4q8": (own4, own4_bytes),
                                        "torch4": (t4, t4_bytes), "own8": (i8, i8_bytes), "own8q8": (i8, i8_bytes),
                                        "torch8": (i8, i8_bytes), "fp32": (f32, w32.numel() * 4)})
        row = [f"{n}x{k}", str(m)]
        for sec, nbytes in t.values():
            row.append(f"{sec * 1e6:9.1f} {nbytes / sec / 1e9:5.1f}")
        row += [f"{t['torch4'][0] / t['own4'][0]:.2f}", f"{t['torch4'][0] / t['own4q8'][0]:.2f}",
                f"{t['torch8'][0] / t['own8'][0]:.2f}", f"{t['own8'][0] / t['own8q8'][0]:.2f}",
                f"{t['fp32'][0] / t['own4'][0]:.2f}"]
        rows.append(row)
    return rows


def bench_levels(n: int, k: int, ms: list[int], group: int, total: int, budget: float) -> list[list[str]]:
    """Rows (shape, M, kernel, one "µs GB/s" cell per level, speed-ups over avx2) for the two q8 kernels."""
    ops = torch.ops.llmspeed
    levels = kernels.isa_levels()
    g = torch.Generator().manual_seed(0)
    u = torch.randint(0, 16, (n, k), generator=g, dtype=torch.int32)  # [N, K]
    sc = (torch.rand(n, k // group, generator=g) * 0.02).half()  # [N, K/g]
    mn = (torch.randn(n, k // group, generator=g) * 0.1).half()
    packed = kernels.pack_nibbles(u)  # [N, K/2]
    i4_bytes = packed.numel() + 2 * sc.numel() * 2
    q = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)  # [N, K]
    s8 = torch.rand(n, generator=g) * 0.01  # [N]
    i8_bytes = q.numel() + 4 * n
    sets = {"int4q8": (copies(lambda: (packed, sc, mn), i4_bytes, total), i4_bytes),
            "int8q8": (copies(lambda: (q, s8), i8_bytes, total), i8_bytes)}
    rows = []
    top = int(ops.isa(-1))
    try:
        for m in ms:
            x = torch.randn(m, k, generator=g)  # [M, K]
            fns: dict[str, Callable[[tuple[torch.Tensor, ...]], object]] = {
                "int4q8": lambda w, x=x: kernels.int4_linear_q8(x, w[0], w[1], w[2], group),
                "int8q8": lambda w, x=x: kernels.int8_linear_q8(x, w[0], w[1]),
            }
            for name, fn in fns.items():
                ws, nbytes = sets[name]
                secs = {}
                for level in levels:
                    ops.isa(level)
                    secs[level] = time_rotating(fn, ws, budget)
                row = [f"{n}x{k}", str(m), name] + [f"{secs[lv] * 1e6:9.1f} {nbytes / secs[lv] / 1e9:5.1f}" for lv in levels]
                row += [f"{secs[1] / secs[lv]:.2f}" for lv in levels if lv != 1 and 1 in secs]
                rows.append(row)
    finally:
        ops.isa(top)
    return rows


def write_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        sys.stdout.write("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--group", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--budget", type=float, default=0.4, help="seconds per (kernel, shape, M)")
    ap.add_argument("--m", type=int, nargs="+", default=None, help="activation rows (default 1 8 64; --levels: 1 8)")
    ap.add_argument("--stat", choices=sorted(STAT), default="median",
                    help="per-cell statistic: min = best-of-N, robust on a shared, noisy machine")
    ap.add_argument("--shapes", type=str, default="", help="e.g. 960x576,3072x576 (default: all SmolLM2 shapes)")
    ap.add_argument("--levels", action="store_true",
                    help="the q8 kernels at every instruction-set level this CPU runs (default M: 1 8)")
    args = ap.parse_args(argv)
    global _stat
    _stat = STAT[args.stat]
    if args.threads:
        torch.set_num_threads(args.threads)
    if not kernels.available():
        sys.stdout.write("warning: C++ kernels unavailable, 'own' columns are the pure-torch reference\n")
    default_shapes = LEVEL_SHAPES if args.levels else SHAPES
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")] if args.shapes else default_shapes
    total = int(llc_bytes() * 1.25)
    if args.levels:
        main_levels(args, shapes, total)
        return
    sys.stdout.write(f"backend {kernels.backend()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
                     f"group {args.group}, rotating weight copies > {total / 2**20:.0f} MiB per kernel\n"
                     f"cells: {args.stat} µs per call and GB/s of weight bytes streamed; ratios > 1 mean own is faster\n")
    header = ["N x K", "M", "own int4 µs GB/s", "own int4q8 µs GB/s", "torch int4 µs GB/s", "own int8 µs GB/s",
              "own int8q8 µs GB/s", "torch int8 µs GB/s", "fp32 µs GB/s", "t4/own4", "t4/own4q8", "t8/own8",
              "own8/own8q8", "fp32/own4"]
    rows: list[list[str]] = []
    for n, k in shapes:
        rows += bench_shape(n, k, args.m or [1, 8, 64], args.group, total, args.budget)
    write_table(header, rows)


def main_levels(args: argparse.Namespace, shapes: list[tuple[int, ...]], total: int) -> None:
    levels = kernels.isa_levels()
    if not levels:
        sys.stdout.write("error: C++ kernels unavailable, no instruction-set levels to compare\n")
        raise SystemExit(2)
    sys.stdout.write(f"q8 kernels per instruction-set level (default {kernels.backend()}), torch {torch.__version__}, "
                     f"threads {torch.get_num_threads()}, group {args.group}, {args.stat} of rotating weight copies "
                     f"> {total / 2**20:.0f} MiB\ncells: µs per call and GB/s of weight bytes; x/avx2 = speed-up over "
                     "the avx2 level in this run (> 1: faster)\n")
    header = ["N x K", "M", "kernel"] + [f"{name} µs GB/s" for name in levels.values()]
    header += [f"{name} x/avx2" for lv, name in levels.items() if lv != 1 and 1 in levels]
    rows: list[list[str]] = []
    for n, k in shapes:
        rows += bench_levels(n, k, args.m or [1, 8], args.group, total, args.budget)
    write_table(header, rows)


if __name__ == "__main__":
    main()
