"""`llmspeed loadtest`: Poisson arrivals (or fixed concurrency) of streamed chat requests from an FAQ-style
prompt set with repeats; TTFT, TPOT, ITL, E2EL percentiles, req/s, tok/s and goodput under SLOs (vLLM's
benchmark_serving definitions: TPOT = (E2EL - TTFT) / (n - 1), ITL = gaps between streamed chunks).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

SYSTEM_PROMPT = "You are the help desk of a small theatre. Answer in one or two short sentences."
FAQ = ["What time do the doors open?", "Can I bring food and drink inside?", "Is there step-free access?",
       "How do I get a refund?", "Where is the nearest car park?", "Are children allowed at evening shows?",
       "How long is the interval?", "Can I change the date of my ticket?", "Do you have a cloakroom?",
       "Is photography allowed during the play?", "Are there discounts for students?", "Where can I buy a programme?",
       "What happens if I arrive late?", "Do you offer captioned performances?", "Can I book a private box?",
       "Is the theatre air-conditioned?"]


@dataclass(frozen=True)
class LoadTestConfig:
    url: str
    rate: float | None = None  # requests/s (Poisson); None -> closed loop at `concurrency`
    concurrency: int | None = None
    duration: float = 30.0  # seconds of arrivals; the run ends at most `duration + drain` later
    requests: int = 200
    max_tokens: int = 64
    slo_ttft: float = 1.0
    slo_tpot: float = 0.1
    api_key: str | None = None
    model: str | None = None
    seed: int = 0
    drain: float = 60.0

    def __post_init__(self) -> None:
        if (self.rate is None) == (self.concurrency is None):
            raise ValueError("give exactly one of --rate or --concurrency")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"--rate must be > 0, got {self.rate}")
        if self.concurrency is not None and self.concurrency <= 0:
            raise ValueError(f"--concurrency must be > 0, got {self.concurrency}")
        if self.duration <= 0 or self.requests <= 0 or self.max_tokens <= 0:
            raise ValueError("--duration, --requests and --max-tokens must be > 0")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"URL must start with http:// or https://, got {self.url!r}")


@dataclass
class RequestRecord:
    start: float
    ttft: float | None = None
    e2el: float | None = None
    output_tokens: int = 0
    itl: list[float] = field(default_factory=list)
    cache: str = ""
    error: str | None = None

    @property
    def tpot(self) -> float | None:
        if self.ttft is None or self.e2el is None or self.output_tokens < 2:
            return None
        return (self.e2el - self.ttft) / (self.output_tokens - 1)


def faq_prompts(n: int, seed: int) -> list[str]:
    """n questions drawn with Zipf-like weights: popular questions repeat (exercises both caches)."""
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) for i in range(len(FAQ))]
    return rng.choices(FAQ, weights=weights, k=n)


async def _one(client: httpx.AsyncClient, cfg: LoadTestConfig, question: str, t0: float) -> RequestRecord:
    body: dict[str, Any] = {"messages": [{"role": "system", "content": SYSTEM_PROMPT},
                                         {"role": "user", "content": question}],
                            "max_tokens": cfg.max_tokens, "temperature": 0, "stream": True,
                            "stream_options": {"include_usage": True}}
    if cfg.model:
        body["model"] = cfg.model
    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    start = time.perf_counter()
    rec = RequestRecord(start=start - t0)
    last = start
    try:
        async with client.stream("POST", f"{cfg.url.rstrip('/')}/v1/chat/completions", json=body,
                                 headers=headers) as r:
            rec.cache = r.headers.get("x-llmspeed-cache", "")
            if r.status_code != 200:
                rec.error = f"HTTP {r.status_code}"
                await r.aread()
                return rec
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                obj = json.loads(line[6:])
                if "error" in obj:
                    rec.error = obj["error"].get("message", "error")
                    continue
                now = time.perf_counter()
                if obj.get("usage"):
                    rec.output_tokens = obj["usage"]["completion_tokens"]
                if any(c.get("delta", {}).get("content") for c in obj.get("choices", [])):
                    if rec.ttft is None:
                        rec.ttft = now - start
                    else:
                        rec.itl.append(now - last)
                    last = now
        rec.e2el = time.perf_counter() - start
    except httpx.HTTPError as e:
        rec.error = f"{type(e).__name__}: {e}"
    return rec


async def run_load(cfg: LoadTestConfig, progress: Callable[[dict[str, Any]], None] | None = None) -> list[RequestRecord]:
    prompts = faq_prompts(cfg.requests, cfg.seed)
    rng = random.Random(cfg.seed + 1)
    records: list[RequestRecord] = []
    t0 = time.perf_counter()
    deadline = t0 + cfg.duration
    limits = httpx.Limits(max_connections=max(64, (cfg.concurrency or 0) * 2))
    async with httpx.AsyncClient(timeout=httpx.Timeout(cfg.duration + cfg.drain, connect=5.0), limits=limits) as client:

        def report() -> None:
            if progress is not None:
                progress({"elapsed": time.perf_counter() - t0, "sent": sent, "done": len(records),
                          "errors": sum(1 for r in records if r.error)})

        async def tracked(q: str) -> None:
            records.append(await _one(client, cfg, q, t0))
            report()

        sent = 0
        tasks: list[asyncio.Task[None]] = []
        if cfg.rate is not None:
            for q in prompts:
                if time.perf_counter() >= deadline:
                    break
                tasks.append(asyncio.create_task(tracked(q)))
                sent += 1
                report()
                await asyncio.sleep(rng.expovariate(cfg.rate))
        else:
            it = iter(prompts)

            async def worker() -> None:
                nonlocal sent
                for q in it:
                    if time.perf_counter() >= deadline:
                        return
                    sent += 1
                    await tracked(q)

            tasks = [asyncio.create_task(worker()) for _ in range(cfg.concurrency or 1)]
        _, pending = await asyncio.wait(tasks, timeout=max(1.0, deadline + cfg.drain - time.perf_counter())) \
            if tasks else (set(), set())
        for t in pending:
            t.cancel()
    return records


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize(records: list[RequestRecord], cfg: LoadTestConfig, wall: float) -> dict[str, Any]:
    ok = [r for r in records if r.error is None and r.e2el is not None]
    generated = [r for r in ok if not r.cache.startswith("hit")]  # a cache hit streams no tokens one by one
    series = {"ttft": [r.ttft for r in ok if r.ttft is not None],
              "tpot": [r.tpot for r in generated if r.tpot is not None],
              "itl": [x for r in generated for x in r.itl], "e2el": [r.e2el for r in ok if r.e2el is not None]}
    stats = {name: {f"p{p}": _pct(vals, p) for p in (50, 90, 99)} | {"mean": (sum(vals) / len(vals)) if vals else None}
             for name, vals in series.items()}
    good = [r for r in ok if r.ttft is not None and r.ttft <= cfg.slo_ttft and (r.tpot or 0.0) <= cfg.slo_tpot]
    toks = sum(r.output_tokens for r in ok)
    caches: dict[str, int] = {}
    for r in records:
        caches[r.cache or "none"] = caches.get(r.cache or "none", 0) + 1
    return {"config": asdict(cfg) | {"api_key": "***" if cfg.api_key else None}, "wall_s": wall,
            "requests": len(records), "completed": len(ok), "errors": len(records) - len(ok),
            "req_per_s": len(ok) / wall if wall > 0 else 0.0, "output_tok_per_s": toks / wall if wall > 0 else 0.0,
            "goodput_req_per_s": len(good) / wall if wall > 0 else 0.0, "slo_attainment": len(good) / max(len(ok), 1),
            "latency_s": stats, "response_cache": caches,
            "error_examples": sorted({r.error for r in records if r.error})[:5]}


def plot(records: list[RequestRecord], summary: dict[str, Any], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if r.error is None and r.ttft is not None and r.e2el is not None]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].hist([r.ttft * 1e3 for r in ok], bins=30, color="tab:blue")
    axes[0].set(title="TTFT", xlabel="ms", ylabel="requests")
    axes[1].hist([r.tpot * 1e3 for r in ok if r.tpot is not None], bins=30, color="tab:orange")
    axes[1].set(title="TPOT", xlabel="ms / token")
    axes[2].scatter([r.start for r in ok], [r.e2el for r in ok], s=8,
                    c=["tab:green" if r.cache.startswith("hit") else "tab:red" for r in ok])
    axes[2].set(title="E2E latency by arrival (green = cache hit)", xlabel="arrival s", ylabel="s")
    fig.suptitle(f"{summary['req_per_s']:.2f} req/s, {summary['output_tok_per_s']:.1f} tok/s, "
                 f"goodput {summary['goodput_req_per_s']:.2f} req/s")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def run_loadtest(cfg: LoadTestConfig, out_dir: Path | None = None,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    records = asyncio.run(run_load(cfg, progress))
    summary = summarize(records, cfg, time.perf_counter() - t0)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "loadtest.json").write_text(json.dumps(summary | {"records": [asdict(r) for r in records]},
                                                          indent=2))
        plot(records, summary, out_dir / "loadtest.png")
        summary["outputs"] = [str(out_dir / "loadtest.json"), str(out_dir / "loadtest.png")]
    return summary
