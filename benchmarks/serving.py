"""Serving benchmark on loopback: 16 distinct greedy 64-token completions, all concurrent vs one after another,
on a `llmspeed serve --model M` process started with no other flags (continuous batching ratio), TTFT/TPOT
p50/p99, response-cache hit vs miss latency (the first 4 prompts again), and the llama-cpp-python server on the
same GGUF when `llama_cpp` is importable (or --llamacpp-python names a Python that has it).

    python benchmarks/serving.py [--model default] [--requests 16] [--max-tokens 64] [--out report/serving.json]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

TOPICS = ["the sea", "a lighthouse", "autumn leaves", "a train station", "the moon", "a bakery", "mountains",
          "a library", "rain in the city", "a chess game", "the desert", "a violin", "winter birds", "a market",
          "an old bridge", "a garden at night", "the harbour", "a clock tower", "a thunderstorm", "a quiet lake"]


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round((len(s) - 1) * p / 100))]


async def one(client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int, extra: dict) -> dict:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}} | extra
    t0 = time.perf_counter()
    ttft, usage, chunks = None, None, 0
    async with client.stream("POST", f"{url}/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            obj = json.loads(line[6:])
            if obj.get("usage"):
                usage = obj["usage"]["completion_tokens"]
            if obj.get("choices"):
                chunks += 1  # one token per chunk on both servers; used when a server sends no usage
            if ttft is None and any(c.get("text") for c in obj.get("choices", [])):
                ttft = time.perf_counter() - t0
    e2e = time.perf_counter() - t0
    ttft = ttft if ttft is not None else e2e
    n = usage if usage is not None else chunks
    return {"ttft": ttft, "e2e": e2e, "tokens": n, "tpot": (e2e - ttft) / max(n - 1, 1)}


async def phase(url: str, prompts: list[str], max_tokens: int, concurrent: bool, extra: dict) -> dict:
    async with httpx.AsyncClient(timeout=600) as client:
        t0 = time.perf_counter()
        if concurrent:
            rs = await asyncio.gather(*(one(client, url, p, max_tokens, extra) for p in prompts))
        else:
            rs = [await one(client, url, p, max_tokens, extra) for p in prompts]
        wall = time.perf_counter() - t0
    toks = sum(r["tokens"] for r in rs)
    return {"wall_s": wall, "tokens": toks, "tok_per_s": toks / wall,
            "ttft_p50_ms": 1e3 * pct([r["ttft"] for r in rs], 50), "ttft_p99_ms": 1e3 * pct([r["ttft"] for r in rs], 99),
            "tpot_p50_ms": 1e3 * pct([r["tpot"] for r in rs], 50), "tpot_p99_ms": 1e3 * pct([r["tpot"] for r in rs], 99),
            "e2e_p50_ms": 1e3 * pct([r["e2e"] for r in rs], 50), "e2e_all": [1e3 * r["e2e"] for r in rs]}


def concurrent_prompts(prompts: list[str]) -> list[str]:
    """The concurrent phase's prompts: as many, each distinct from every sequential one (no cache hits)."""
    return [p.replace(" (#", " (batch #") for p in prompts]


def start_server(cmd: list[str], url: str) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            break
    proc.terminate()
    raise RuntimeError(f"server did not start: {' '.join(cmd)}")


def free_port() -> int:
    from llmspeed.serving.server import bind_socket

    sock = bind_socket()
    port = sock.getsockname()[1]
    sock.close()
    return port


def bench_llmspeed(args: argparse.Namespace, prompts: list[str]) -> dict:
    """`llmspeed serve --model M` with no other flags, in its own process (as the peer's server is)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server([sys.executable, "-m", "llmspeed.cli.main", "serve", "--model", args.model,
                         "--port", str(port)], url)
    out: dict = {}
    try:
        # warm-up with the run's nonce: a fixed prompt is answered by the persistent response cache, and the first
        # timed request would then pay the decode graph's export / package load
        asyncio.run(phase(url, [f"Warm up the engine (run {prompts[0].rsplit('run ', 1)[-1]}"], 8, False,
                          {"ignore_eos": True}))
        out["sequential"] = asyncio.run(phase(url, prompts, args.max_tokens, False, {"ignore_eos": True}))
        # other prompts than the sequential phase's: the default response cache would answer those from memory
        out["concurrent"] = asyncio.run(phase(url, concurrent_prompts(prompts), args.max_tokens, True,
                                              {"ignore_eos": True}))
        # the default response cache: the same deterministic requests again are hits
        hit = asyncio.run(phase(url, prompts[:4], args.max_tokens, False, {"ignore_eos": True}))
    finally:
        proc.terminate()
        proc.wait(30)
    out["concurrent_vs_sequential_tok_s"] = out["concurrent"]["tok_per_s"] / out["sequential"]["tok_per_s"]
    miss_p50 = pct(out["sequential"]["e2e_all"][:4], 50)  # the same 4 prompts' first (uncached) run, ms
    out["cache"] = {"miss_e2e_p50_ms": miss_p50, "hit_e2e_p50_ms": hit["e2e_p50_ms"],
                    "speedup": miss_p50 / max(hit["e2e_p50_ms"], 1e-6)}
    return out


def warm_package_cache(args: argparse.Namespace, nonce: str) -> float:
    """Fill the decode graphs' package cache before measuring: bursts of 1, 2, 4, 8 and 16 requests on one
    `llmspeed serve --model M`, each followed by a wait for the background compile children to finish."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server([sys.executable, "-m", "llmspeed.cli.main", "serve", "--model", args.model,
                         "--port", str(port)], url)
    t0 = time.perf_counter()
    try:
        for n in (1, 2, 4, 8, 16):
            asyncio.run(phase(url, [f"Warm-up {n}.{i} (run {nonce}): tell me about the sea" for i in range(n)],
                              args.max_tokens, True, {"ignore_eos": True}))
            quiet = 0
            while quiet < 3:  # three looks 2 s apart with no compile child running
                busy = subprocess.run(["pgrep", "-f", "llmspeed.compile_worker"], capture_output=True).stdout.strip()
                quiet = 0 if busy else quiet + 1
                time.sleep(2)
            print(f"warm-up burst of {n}: done at {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    return time.perf_counter() - t0


def bench_llamacpp(args: argparse.Namespace, prompts: list[str]) -> dict | None:
    py = args.llamacpp_python or sys.executable
    if args.llamacpp_python is None and importlib.util.find_spec("llama_cpp") is None:
        return None
    from llmspeed.models.default_model import default_gguf_path

    gguf = args.gguf or str(default_gguf_path())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # --interrupt_requests false: by default its server cuts an in-flight stream short when a new request arrives
    proc = start_server([py, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1", "--port", str(port),
                         "--n_threads", "2", "--interrupt_requests", "false"], url)
    try:
        out = {"sequential": asyncio.run(phase(url, prompts, args.max_tokens, False, {})),
               "concurrent": asyncio.run(phase(url, concurrent_prompts(prompts), args.max_tokens, True, {}))}
        return out
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--gguf", default=None, help="GGUF for the llama-cpp-python comparison (default: embedded)")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--llamacpp-python", default=None, help="a Python with llama-cpp-python[server] (other venv)")
    ap.add_argument("--warm-cache", action="store_true", help="fill the decode graphs' package cache first "
                    "(serve compiles them in the background: a short cold run decodes eager)")
    args = ap.parse_args()
    # a nonce per run: `llmspeed serve`'s default L2 response cache persists on disk across server processes
    nonce = f"{time.time_ns() % 10**9:09d}"
    prompts = [f"Write a short poem about {TOPICS[i % len(TOPICS)]} (#{i}, run {nonce}):" for i in range(args.requests)]
    from llmspeed.util.cpu import cpu_info

    cpu = cpu_info()
    print(f"CPU: {cpu.model} ({cpu.isa_summary()}); llmspeed --model {args.model}")
    res = {"cpu": cpu.model, "cpu_flags": cpu.isa_summary(), "model": args.model}
    if args.warm_cache:
        res["warm_cache_s"] = warm_package_cache(args, nonce)
    res["llmspeed"] = bench_llmspeed(args, prompts)
    lc = bench_llamacpp(args, prompts)
    res["llama_cpp_python"] = lc if lc is not None else "not installed (pip install llama-cpp-python)"
    ls = res["llmspeed"]
    print(f"{args.requests} distinct greedy {args.max_tokens}-token completions, loopback, same server")
    print(f"{'run':28s} {'tok/s':>8s} {'TTFT p50':>9s} {'TTFT p99':>9s} {'TPOT p50':>9s} {'TPOT p99':>9s}  (ms)")
    rows = [("llmspeed sequential", ls["sequential"]), ("llmspeed 16 concurrent", ls["concurrent"])]
    if lc is not None:
        rows += [("llama-cpp-python sequential", lc["sequential"]), ("llama-cpp-python concurrent", lc["concurrent"])]
    for name, r in rows:
        print(f"{name:28s} {r['tok_per_s']:8.1f} {r['ttft_p50_ms']:9.1f} {r['ttft_p99_ms']:9.1f} "
              f"{r['tpot_p50_ms']:9.1f} {r['tpot_p99_ms']:9.1f}")
    print(f"concurrent / sequential tok/s: {ls['concurrent_vs_sequential_tok_s']:.2f}x")
    if lc is not None:
        for mode in ("sequential", "concurrent"):
            print(f"llmspeed / llama-cpp-python {mode}: {ls[mode]['tok_per_s'] / lc[mode]['tok_per_s']:.2f}x tok/s, "
                  f"p50 latency {ls[mode]['e2e_p50_ms']:.0f} vs {lc[mode]['e2e_p50_ms']:.0f} ms")
    c = ls["cache"]
    print(f"response cache: miss p50 {c['miss_e2e_p50_ms']:.1f} ms, hit p50 {c['hit_e2e_p50_ms']:.2f} ms "
          f"({c['speedup']:.0f}x)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
