"""One model (or baseline) measured in its own process: `python -m llmspeed.bench.worker SPEC.json OUT.json`.

Peak RSS never goes down inside a process, so every row of the report gets a fresh one. The spec is the
JSON written by the runner; the result is written to OUT.json (stdout stays free for library noise).
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def make_backend(spec: dict[str, Any]) -> Any:
    engine = spec["engine"]
    if engine == "llmspeed":
        from llmspeed.bench.engine_backend import EngineBackend

        return EngineBackend(spec["model"], spec.get("recipe"), int(spec.get("tp", 1)), spec.get("device", "cpu"),
                             spec.get("draft"))
    if engine == "hf":
        from llmspeed.bench.baselines.hf import HFBackend

        return HFBackend(spec["model"])
    if engine == "llamacpp":
        from llmspeed.bench.baselines.llamacpp import LlamaCppBackend

        return LlamaCppBackend(spec["model"])
    raise ValueError(f"unknown engine {engine!r}")


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    from llmspeed.bench.config import parse_scenario
    from llmspeed.bench.measure import peak_rss_mb, run_scenario
    from llmspeed.profiling.prompts import FILLER, prompt_ids
    from llmspeed.runtime.threads import set_threads

    threads = set_threads(spec.get("threads"))
    scenarios = [parse_scenario(s, spec["prompt_len"], spec["new_tokens"]) for s in spec["scenarios"]]
    backend = make_backend(spec)
    t0 = time.perf_counter()
    backend.load()
    load_s = time.perf_counter() - t0
    rss_loaded = peak_rss_mb()
    if hasattr(backend, "prepare"):
        backend.prepare(scenarios)

    class _Tok:  # prompt_ids() wants .encode
        encode = staticmethod(backend.encode)

    results: dict[str, Any] = {}
    for sc in scenarios:
        ids = prompt_ids(_Tok, sc.prompt_len)
        text = FILLER
        if backend.engine == "llmspeed":
            run = lambda s, n, ids=ids, text=text: backend.run(s, n, ids, text)
        else:
            run = lambda s, n, ids=ids: backend.run(s, n, ids)
        log.info("%s %s: %s", backend.engine, spec["model"], sc.name)
        results[sc.name] = run_scenario(run, sc, spec["repeats"], spec["warmup"], backend.bytes_per_step,
                                        spec.get("bandwidth_gbs"))
        results[sc.name]["prompt_head"] = ids[:8]
    out: dict[str, Any] = {
        "status": "ok", "engine": backend.engine, "model": spec["model"], "source": backend.source_name(),
        "threads": threads, "load_s": load_s, "rss_after_load_mb": rss_loaded, "size_bytes": backend.size_bytes,
        "weight_bytes_per_step_b1": backend.bytes_per_step(1, 0), "scenarios": results,
        "recipe": getattr(backend, "recipe_steps", []),
    }
    if spec.get("quality") and hasattr(backend, "quality"):
        out["quality"] = backend.quality(spec.get("quality_max_tokens", 4096))
    out["peak_rss_mb"] = peak_rss_mb()
    if hasattr(backend, "close"):
        backend.close()
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m llmspeed.bench.worker SPEC.json OUT.json\n")
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    spec = json.loads(Path(args[0]).read_text())
    try:
        result = measure(spec)
    except Exception as e:  # the runner turns this into an error row
        traceback.print_exc()
        result = {"status": "error", "engine": spec.get("engine"), "model": spec.get("model"),
                  "note": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    Path(args[1]).write_text(json.dumps(result, indent=2))
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
