"""Microbenchmark of llmspeed's paged decode attention (K/V read in place through the slot table) vs the gather path
(index_select of K/V into [B, Hkv, S, D] copies, then matmul / masked softmax / matmul: reference.py).

    python benchmarks/attention_kernel.py [--b 8] [--h 9] [--hkv 3] [--d 64] [--s 256] [--nslots 8192]
                                          [--repeats 200] [--threads N]

Slots are random (scattered rows, like a fragmented block table), n_valid = S for every row (plus a second line
with random n_valid). Reports best-of-N and median µs per call (the machine is shared and noisy: trust best-of-N).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import timed

from llmspeed import kernels
from llmspeed.kernels import reference


def time_calls(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(best, median) seconds per call over `repeats` calls after 3 warm-up calls."""
    median, _, times = timed(fn, repeats, warmup=3)
    return min(times), median


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--b", type=int, default=8)
    ap.add_argument("--h", type=int, default=9)
    ap.add_argument("--hkv", type=int, default=3)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--s", type=int, default=256)
    ap.add_argument("--nslots", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not kernels.available():
        sys.stdout.write("warning: C++ kernels unavailable, 'own' is the pure-torch reference\n")
    g = torch.Generator().manual_seed(0)
    b, h, hkv, d, s, ns = args.b, args.h, args.hkv, args.d, args.s, args.nslots
    q = torch.randn(b, h, d, generator=g)  # [B, H, D]
    k = torch.randn(hkv, ns, d, generator=g)  # [Hkv, NSLOTS, D]
    v = torch.randn(hkv, ns, d, generator=g)
    slots = torch.stack([torch.randperm(ns, generator=g)[:s] for _ in range(b)])  # [B, S]
    scale = d ** -0.5
    sys.stdout.write(f"backend {kernels.backend()}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
                     f"B={b} H={h} Hkv={hkv} D={d} S={s} NSLOTS={ns}, {args.repeats} calls each\n")
    kv_bytes = 2 * b * hkv * s * d * 4
    for label, n_valid in (("n_valid=S", torch.full((b,), s, dtype=torch.int64)),
                           ("n_valid random", torch.randint(1, s + 1, (b,), generator=g))):
        own = time_calls(lambda nv=n_valid: kernels.paged_decode_attention(q, k, v, slots, nv, scale), args.repeats)
        ref = time_calls(lambda nv=n_valid: reference.paged_decode_attention_ref(q, k, v, slots, nv, scale),
                         args.repeats)
        sys.stdout.write(f"{label:>15}: own {own[0] * 1e6:8.1f} µs best ({own[1] * 1e6:8.1f} median), "
                         f"gather+bmm {ref[0] * 1e6:8.1f} µs best ({ref[1] * 1e6:8.1f} median), "
                         f"speed-up {ref[0] / own[0]:.1f}x best; K/V bytes at n_valid=S {kv_bytes / 2**20:.1f} MiB\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
