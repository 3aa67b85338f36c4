"""Soak test on loopback: a bounded steady load against `llmspeed serve` (started here as a subprocess) for
`--minutes` (default 10), then a verdict on memory, latency trend and errors.

Load: `--concurrency` closed-loop clients; each request is drawn from a seeded mix — streamed and non-streamed,
completions and chat, repeated deterministic prompts (response-cache hits), unique prompts (misses),
temperature > 0 (never cached), and a few streams the client drops after the first token (disconnects).

PASS when, after the warm-up:
  * RSS growth <= 5 %: median server RSS over the last bucket vs over the first post-warm-up bucket;
  * p99 does not trend up: the last full bucket's E2E p99 <= 1.5 x the first post-warm-up bucket's
    (the per-bucket Theil-Sen slope is reported too, for information);
  * nothing failed: every request answered 200 (dropped streams excepted: they must have started), the server's
    `llmspeed:request_failures` stayed 0, and after the load the server is healthy with no request left running.
A bucket is one minute (`--bucket-s`). Writes soak.json and soak.png to `--out`.

    python benchmarks/soak.py [--model default] [--minutes 10] [--warmup-minutes 1] [--concurrency 4] [--out report/soak]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

log = logging.getLogger("soak")
KEY = "soak-key"
HOT = ["What is the capital of France?", "Name three primary colours.", "Say hello in Spanish.",
       "What is 2 + 2?", "Give me a synonym for fast."]
RSS_GROWTH_MAX = 0.05
P99_RATIO_MAX = 1.5


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 10.0
    warmup_minutes: float = 1.0
    concurrency: int = 4
    max_tokens: int = 32
    bucket_s: float = 60.0
    disconnect_frac: float = 0.03
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.minutes > self.warmup_minutes >= 0:
            raise ValueError(f"minutes ({self.minutes}) must exceed warmup_minutes ({self.warmup_minutes}) >= 0")
        if self.concurrency < 1 or self.max_tokens < 1 or self.bucket_s <= 0:
            raise ValueError("concurrency and max_tokens must be >= 1, bucket_s > 0")
        if not 0 <= self.disconnect_frac < 1:
            raise ValueError(f"disconnect_frac must be in [0, 1), got {self.disconnect_frac}")


@dataclass
class Record:
    t: float  # start, seconds since the load began
    kind: str  # stream-hit, stream-miss, stream-sampled, full-hit, full-miss, full-sampled, disconnect
    latency: float
    status: int
    ok: bool
    error: str = ""


@dataclass
class Run:
    records: list[Record] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (t, MiB)


def _request(rng: random.Random, i: int, cfg: SoakConfig) -> tuple[str, str, dict[str, Any], bool]:
    """(kind, path, body, drop_after_first_token) of the i-th request."""
    stream = rng.random() < 0.5
    chat = rng.random() < 0.5
    u = rng.random()
    if stream and u < cfg.disconnect_frac * 2:  # half the requests stream: 2x keeps the overall fraction
        kind, prompt, temp, drop = "disconnect", f"Tell me a long story about request {i}.", 0.0, True
    elif u < 0.45:
        kind, prompt, temp, drop = "hit", rng.choice(HOT), 0.0, False
    elif u < 0.85:
        kind, prompt, temp, drop = "miss", f"Write one sentence about the number {i}.", 0.0, False
    else:
        kind, prompt, temp, drop = "sampled", rng.choice(HOT), 0.8, False
    body: dict[str, Any] = {"model": "soak", "max_tokens": cfg.max_tokens, "temperature": temp, "stream": stream}
    if drop:  # long enough that the server is still generating when the client goes
        body |= {"max_tokens": max(8 * cfg.max_tokens, 128), "ignore_eos": True}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    path = "/v1/chat/completions" if chat else "/v1/completions"
    label = kind if kind == "disconnect" else f"{'stream' if stream else 'full'}-{kind}"
    return label, path, body, drop


async def _one(client: httpx.AsyncClient, path: str, body: dict[str, Any], drop: bool) -> tuple[int, bool, str]:
    if not body["stream"]:
        r = await client.post(path, json=body)
        ok = r.status_code == 200 and bool(r.json().get("choices"))
        return r.status_code, ok, "" if ok else r.text[:200]
    async with client.stream("POST", path, json=body) as r:
        if r.status_code != 200:
            return r.status_code, False, (await r.aread()).decode(errors="replace")[:200]
        done = False
        async for line in r.aiter_lines():
            if line.startswith("data: {") and drop:
                return 200, True, ""  # leaving the block closes the connection mid-stream
            if line.startswith("data: {") and '"error"' in line:
                return 200, False, line[:200]
            if line.strip() == "data: [DONE]":
                done = True
        return 200, done, "" if done else "stream ended without [DONE]"


async def drive(url: str, cfg: SoakConfig, run: Run, t0: float, seconds: float) -> None:
    rng = random.Random(cfg.seed)
    counter = iter(range(10**9))
    limits = httpx.Limits(max_connections=cfg.concurrency * 2, max_keepalive_connections=cfg.concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120,
                                 limits=limits) as client:

        async def worker() -> None:
            while time.monotonic() - t0 < seconds:
                kind, path, body, drop = _request(rng, next(counter), cfg)
                start = time.monotonic()
                try:
                    status, ok, err = await _one(client, path, body, drop)
                except (httpx.HTTPError, ValueError) as e:
                    status, ok, err = 0, False, f"{type(e).__name__}: {e}"
                run.records.append(Record(start - t0, kind, time.monotonic() - start, status, ok, err))

        await asyncio.gather(*(worker() for _ in range(cfg.concurrency)))


def sample_rss(pid: int, run: Run, t0: float, stop: threading.Event, every: float = 2.0) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            run.rss.append((time.monotonic() - t0, proc.memory_info().rss / 2**20))
        except psutil.Error:
            return
        stop.wait(every)


# ---------------------------------------------------------------------------------------------- analysis
def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round((len(s) - 1) * p / 100))]


def theil_sen(ys: list[float]) -> float:
    """Median of pairwise slopes (per bucket); 0 with fewer than 2 points."""
    slopes = [(ys[j] - ys[i]) / (j - i) for i in range(len(ys)) for j in range(i + 1, len(ys))]
    return statistics.median(slopes) if slopes else 0.0


def buckets(run: Run, cfg: SoakConfig) -> list[dict[str, Any]]:
    """Per-bucket figures from the warm-up's end; a trailing bucket shorter than half a bucket is dropped."""
    start, end = cfg.warmup_minutes * 60, cfg.minutes * 60
    out = []
    b0 = start
    while b0 < end - 1e-9:
        b1 = min(b0 + cfg.bucket_s, end)
        if b1 - b0 < cfg.bucket_s / 2:
            break
        recs = [r for r in run.records if b0 <= r.t < b1]
        lat = [r.latency for r in recs if r.ok and r.kind != "disconnect"]
        rss = [m for t, m in run.rss if b0 <= t < b1]
        out.append({"start_s": round(b0, 1), "end_s": round(b1, 1), "requests": len(recs),
                    "errors": sum(not r.ok for r in recs), "req_per_s": len(recs) / (b1 - b0),
                    "p50_ms": 1e3 * pct(lat, 50) if lat else None, "p99_ms": 1e3 * pct(lat, 99) if lat else None,
                    "rss_median_mib": statistics.median(rss) if rss else None, "rss_max_mib": max(rss) if rss else None})
        b0 = b1
    return out


def verdict(run: Run, bks: list[dict[str, Any]], server: dict[str, Any]) -> dict[str, Any]:
    errors = [r for r in run.records if not r.ok]
    rss = [b["rss_median_mib"] for b in bks if b["rss_median_mib"] is not None]
    p99 = [b["p99_ms"] for b in bks if b["p99_ms"] is not None]
    growth = rss[-1] / rss[0] - 1 if len(rss) >= 2 else None
    ratio = p99[-1] / p99[0] if len(p99) >= 2 and p99[0] > 0 else None
    checks = {
        "no_errors": not errors,
        "no_engine_failures": server.get("request_failures", 0) == 0,
        "healthy_after": bool(server.get("healthy")),
        "nothing_left_running": server.get("running") == 0 and server.get("waiting") == 0,
        "rss_growth_ok": growth is not None and growth <= RSS_GROWTH_MAX,
        "p99_not_trending_up": ratio is not None and ratio <= P99_RATIO_MAX,
    }
    return {"pass": all(checks.values()), "checks": checks, "rss_growth": growth, "p99_last_over_first": ratio,
            "p99_slope_ms_per_bucket": theil_sen(p99), "errors": len(errors),
            "error_samples": [asdict(r) for r in errors[:5]], "requests": len(run.records),
            "by_kind": {k: sum(r.kind == k for r in run.records) for k in sorted({r.kind for r in run.records})}}


def server_state(url: str) -> dict[str, Any]:
    """Health, the batch after the load has drained (up to 15 s), and counters from /metrics."""
    h = {"Authorization": f"Bearer {KEY}"}
    out: dict[str, Any] = {"healthy": False}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/health", timeout=10)
            out |= {"healthy": r.status_code == 200} | {k: r.json().get(k) for k in ("running", "waiting")}
            if out.get("running") == 0 and out.get("waiting") == 0:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    text = httpx.get(f"{url}/metrics", headers=h, timeout=10).text
    for line in text.splitlines():
        name, _, val = line.rpartition(" ")
        if name == "llmspeed:request_failures_total":
            out["request_failures"] = float(val)
        elif name.startswith("llmspeed:request_success_total{"):
            out.setdefault("finished", {})[name.split('"')[1]] = float(val)
        elif name.startswith("llmspeed:response_cache_total{"):
            out.setdefault("response_cache", {})[name.split('"')[1]] = float(val)
    return out


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    ts, mib = zip(*report["rss"], strict=True) if report["rss"] else ((), ())
    a.plot([t / 60 for t in ts], mib, color="#2563eb")
    a.axvspan(0, report["config"]["warmup_minutes"], color="#999", alpha=0.2, label="warm-up")
    a.set_ylabel("server RSS (MiB)")
    a.legend(loc="lower right")
    v = report["verdict"]
    g, q = v["rss_growth"], v["p99_last_over_first"]
    growth = "n/a" if g is None else f"{100 * g:+.2f} %"
    ratio = "n/a" if q is None else f"{q:.2f}"
    a.set_title(f"soak {report['model']}: {'PASS' if v['pass'] else 'FAIL'} — RSS growth {growth}, "
                f"p99 last/first {ratio}, {v['errors']} errors / {v['requests']} requests", fontsize=10)
    mid = [(x["start_s"] + x["end_s"]) / 120 for x in report["buckets"]]
    for key, color in (("p50_ms", "#16a34a"), ("p99_ms", "#dc2626")):
        b.plot(mid, [x[key] for x in report["buckets"]], marker="o", color=color, label=key.replace("_ms", ""))
    b.set_ylabel("E2E latency per bucket (ms)")
    b.set_xlabel("minutes since the load began")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def soak(url: str, pid: int, cfg: SoakConfig, model: str, out: Path) -> dict[str, Any]:
    """Drive `url` (server process `pid`) for cfg.minutes, then write soak.json / soak.png under `out`."""
    run, stop = Run(), threading.Event()
    t0 = time.monotonic()
    sampler = threading.Thread(target=sample_rss, args=(pid, run, t0, stop), daemon=True)
    sampler.start()
    seconds = cfg.minutes * 60

    async def heartbeat() -> None:
        while time.monotonic() - t0 < seconds:
            await asyncio.sleep(min(10.0, max(seconds / 6, 1.0)))
            n, bad = len(run.records), sum(not r.ok for r in run.records)
            log.info("soak: %.0f/%.0f s, %d requests, %d errors, RSS %.0f MiB", time.monotonic() - t0, seconds, n, bad,
                     run.rss[-1][1] if run.rss else 0.0)

    async def main() -> None:
        hb = asyncio.create_task(heartbeat())
        await drive(url, cfg, run, t0, seconds)
        hb.cancel()

    asyncio.run(main())
    stop.set()
    sampler.join(5)
    state = server_state(url)
    bks = buckets(run, cfg)
    report = {"model": model, "config": asdict(cfg), "buckets": bks, "server": state,
              "verdict": verdict(run, bks, state), "rss": [(round(t, 2), round(m, 2)) for t, m in run.rss],
              "cpu": _cpu_name(), "load_average_end": os.getloadavg()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(report, indent=1))
    plot(report, out / "soak.png")
    return report


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def start_server(model: str, tmp: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "llmspeed.cli.main", "serve", "--model", model, "--port", str(port),
           "--api-key", KEY, "--served-model-name", "soak", "--cache-l2", f"sqlite:{tmp / 'responses.sqlite'}", *extra]
    with open(tmp / "server.log", "wb") as errlog:  # the child keeps its own descriptor
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errlog)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {(tmp / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not become healthy in 600 s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--warmup-minutes", type=float, default=1.0)
    ap.add_argument("--bucket-s", type=float, default=60.0)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--out", default="report/soak")
    ap.add_argument("--serve-arg", action="append", default=[], help="extra `llmspeed serve` argument (repeatable)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the heartbeat
    try:
        cfg = SoakConfig(minutes=a.minutes, warmup_minutes=a.warmup_minutes, concurrency=a.concurrency,
                         max_tokens=a.max_tokens, bucket_s=a.bucket_s)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="llmspeed-soak-") as d:
        proc, url = start_server(a.model, Path(d), a.serve_arg)
        try:
            log.info("server %s (pid %d) up; soaking for %.1f min", url, proc.pid, cfg.minutes)
            report = soak(url, proc.pid, cfg, a.model, Path(a.out))
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    v = report["verdict"]
    print(json.dumps({"pass": v["pass"], "checks": v["checks"], "rss_growth": v["rss_growth"],
                      "p99_last_over_first": v["p99_last_over_first"], "errors": v["errors"],
                      "requests": v["requests"], "buckets": report["buckets"]}, indent=1))
    return 0 if v["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
