"""Tensor parallel on this machine: per-rank memory, decode b1 speed and all-reduce time, `--tp 2` vs one process.

Run: .venv/bin/python benchmarks/tp.py [--model DIR] [--rounds 2] [--new 64]
Without --model a random-init model of GPT-2 small's shape (12 layers, 12 heads, hidden 768, vocab 50257: an
uneven vocabulary, so the padded last shard is exercised) is written to a temp dir. Every configuration runs in
its own process (peak RSS never goes down), alternating one process (`--threads 2`) and `--tp 2 --threads 1`
for `--rounds` rounds; figures are medians. Decode tok/s = (n - 1) / (wall - TTFT), prefix cache off.
The followers' memory is read from /proc/<pid>/status (VmHWM = peak RSS).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def _status_mb(pid: int | str = "self", key: str = "VmHWM") -> float:
    """A /proc/<pid>/status memory field in MB (VmHWM: peak RSS; RssAnon: private memory; RssFile: mapped files)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _hwm_mb(pid: int | str = "self") -> float:
    return _status_mb(pid, "VmHWM")


def _mem(pid: int | str = "self") -> dict[str, float]:
    """Private (RssAnon) and file-mapped (RssFile: libraries, the mmap'd checkpoint pages) resident memory, and
    Pss (shared pages divided among the processes mapping them: two ranks share the checkpoint's page cache)."""
    out = {k: _status_mb(pid, k) for k in ("RssAnon", "RssFile")}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            out["Pss"] = int(line.split()[1]) / 1024
    return out


def _weight_bytes(model) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def child(model: str, tp: int, threads: int, new: int, repeats: int) -> dict:
    import torch

    import llmspeed
    from llmspeed.runtime.engine import EngineConfig

    before = _mem()  # torch + llmspeed imported, no model
    llm = llmspeed.load(model, threads=threads, tp=tp,
                        engine_config=EngineConfig(kv_cache_tokens=2048, enable_prefix_cache=False))
    out = {"tp": tp, "threads": threads, "torch_threads": torch.get_num_threads(),
           "weight_mb_rank0": _weight_bytes(llm.model) / 1e6, "hwm_mb_rank0_after_load": _hwm_mb(),
           "mem_before_load": before, "mem_after_load": _mem()}
    if tp > 1:
        out["hwm_mb_followers_after_load"] = [_hwm_mb(p.pid) for p in llm.tp.procs]
        out["mem_followers_after_load"] = [_mem(p.pid) for p in llm.tp.procs]
    prompt = [int(t) for t in torch.randint(0, 500, (64,), generator=torch.Generator().manual_seed(0))]
    llm.generate_tokens([prompt], max_new_tokens=8, ignore_eos=True)  # warm-up
    rates, ar_ms, ag_ms = [], [], []
    for _ in range(repeats):
        stats = llm.model.tp.stats if tp > 1 else None
        if stats:
            stats.reset()
        o = llm.generate_tokens([prompt], max_new_tokens=new, ignore_eos=True)[0]
        assert len(o.token_ids) == new
        t = o.timings
        rates.append((new - 1) / (t["wall"] - t["ttft"]))
        if stats:  # per forward (prefill included: new forwards in all)
            ar_ms.append(1e3 * stats.all_reduce_s / new)
            ag_ms.append(1e3 * stats.all_gather_s / new)
    out["decode_tok_s"] = statistics.median(rates)
    out["step_ms"] = 1e3 / out["decode_tok_s"]
    if tp > 1:
        out["all_reduce_ms_per_step"] = statistics.median(ar_ms)
        out["all_gather_ms_per_step"] = statistics.median(ag_ms)
        out["all_reduce_calls_per_step"] = llm.model.tp.stats.all_reduce_calls / new
        out["hwm_mb_followers"] = [_hwm_mb(p.pid) for p in llm.tp.procs]
    out["hwm_mb_rank0"] = _hwm_mb()
    out["tokens_head"] = o.token_ids[:8]
    llm.close()
    return out


def _allreduce_rank(rank: int, port: int, hidden: int, iters: int, out: str) -> None:
    import os
    import time

    import torch
    import torch.distributed as dist

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    x = torch.randn(1, 1, hidden)  # one decode token's hidden state: what a row-parallel layer reduces
    times = []
    for i in range(iters + 20):
        dist.barrier()  # both ranks arrive together: this times the collective, not the other rank's compute
        t0 = time.perf_counter()
        dist.all_reduce(x)
        if i >= 20:
            times.append(time.perf_counter() - t0)
    if rank == 0:
        Path(out).write_text(json.dumps({"hidden": hidden, "iters": iters, "median_us": 1e6 * statistics.median(times),
                                         "p90_us": 1e6 * sorted(times)[int(0.9 * len(times))]}))
    dist.destroy_process_group()


def allreduce_latency(hidden: int = 768, iters: int = 300) -> dict:
    """Latency of one gloo all-reduce of a [1, 1, hidden] float32 tensor between 2 processes on loopback."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        mp.spawn(_allreduce_rank, args=(port, hidden, iters, f.name), nprocs=2, join=True)
        return json.loads(Path(f.name).read_text())


def make_gpt2_small(out: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.conftest import build_tiny_hf

    tok = out / "tok.json"
    import transformers  # noqa: F401 - build_tiny_hf needs it
    from tokenizers import Tokenizer, models, pre_tokenizers

    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.save(str(tok))
    return build_tiny_hf(out / "gpt2-small", "gpt2", tok, vocab_size=50257, n_embd=768, n_layer=12, n_head=12,
                         n_positions=1024)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", default="")
    ap.add_argument("--allreduce-only", action="store_true", help="only the all-reduce latency micro-benchmark")
    a = ap.parse_args()
    if a.allreduce_only:
        print(json.dumps(allreduce_latency(), indent=2))
        return 0
    if a.child:
        tp, threads = (int(x) for x in a.child.split(","))
        print(json.dumps(child(a.model, tp, threads, a.new, a.repeats)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        model = a.model or str(make_gpt2_small(Path(tmp)))
        rows: dict[str, list[dict]] = {"one": [], "tp2": []}
        for r in range(a.rounds):
            for name, spec in (("one", "1,2"), ("tp2", "2,1")):
                res = subprocess.run([sys.executable, __file__, "--model", model, "--child", spec, "--new", str(a.new),
                                      "--repeats", str(a.repeats)], capture_output=True, text=True, check=True)
                rows[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
                print(f"round {r} {name}: {rows[name][-1]}", file=sys.stderr, flush=True)
    one, two = rows["one"], rows["tp2"]
    for x in one + two:
        x["mem_before_load_anon"] = x["mem_before_load"]["RssAnon"]
        x["mem_after_load_anon"] = x["mem_after_load"]["RssAnon"]
    med = lambda rs, k: statistics.median(x[k] for x in rs)
    from llmspeed.util.cpu import cpu_info

    summary = {
        "cpu": cpu_info().model, "model": a.model or "random-init GPT-2 small shape (124M, fp32)",
        "weight_mb_one": med(one, "weight_mb_rank0"), "weight_mb_rank0_tp2": med(two, "weight_mb_rank0"),
        "weight_ratio": med(two, "weight_mb_rank0") / med(one, "weight_mb_rank0"),
        "rss_mb_one": med(one, "hwm_mb_rank0"), "rss_mb_rank0_tp2": med(two, "hwm_mb_rank0"),
        "rss_mb_rank1_tp2": statistics.median(x["hwm_mb_followers"][0] for x in two),
        "anon_mb_before_load": med(one, "mem_before_load_anon"),
        "anon_mb_after_load_one": med(one, "mem_after_load_anon"),
        "anon_mb_after_load_rank0_tp2": med(two, "mem_after_load_anon"),
        "anon_mb_after_load_rank1_tp2": statistics.median(x["mem_followers_after_load"][0]["RssAnon"] for x in two),
        "pss_mb_after_load_one": statistics.median(x["mem_after_load"]["Pss"] for x in one),
        "pss_mb_after_load_rank0_tp2": statistics.median(x["mem_after_load"]["Pss"] for x in two),
        "pss_mb_after_load_rank1_tp2": statistics.median(x["mem_followers_after_load"][0]["Pss"] for x in two),
        "decode_tok_s_one_threads2": med(one, "decode_tok_s"), "decode_tok_s_tp2_threads1": med(two, "decode_tok_s"),
        "all_reduce_ms_per_step": med(two, "all_reduce_ms_per_step"),
        "all_gather_ms_per_step": med(two, "all_gather_ms_per_step"),
        "all_reduce_calls_per_step": med(two, "all_reduce_calls_per_step"),
        "same_tokens": all(x["tokens_head"] == one[0]["tokens_head"] for x in one + two),
    }
    summary["allreduce_latency_idle"] = allreduce_latency()
    summary["decode_ratio_tp2_vs_one"] = summary["decode_tok_s_tp2_threads1"] / summary["decode_tok_s_one_threads2"]
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
