"""`bench`: every model and baseline measured in its own subprocess, then one report written atomically.

The report is assembled in a temporary directory next to `--out` and renamed into place at the end, so an
interrupted or failed run never leaves a half-written report.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmspeed.bench.config import BenchConfig
from llmspeed.util.atomic import write_dir_atomically

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def environment(threads: int) -> dict[str, Any]:
    import torch

    import llmspeed
    from llmspeed.util.cpu import cpu_info

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    cpu = cpu_info()
    return {"cpu_model": cpu.model, "cpu_flags": cpu.isa_summary(), "physical_cores": cpu.physical_cores,
            "logical_cpus": os.cpu_count(),
            "torch_version": torch.__version__, "llmspeed_version": llmspeed.__version__, "git_commit": commit,
            "threads": threads, "python": platform.python_version(), "platform": platform.platform()}


def calibration(cfg: BenchConfig) -> dict[str, Any] | None:
    from llmspeed.profiling import roofline

    if cfg.calibrate:
        return roofline.load_or_measure().to_dict()
    path = roofline.calibration_path()
    if path.is_file():
        try:
            return roofline.Calibration(**json.loads(path.read_text())["calibration"]).to_dict()
        except (ValueError, KeyError, TypeError):
            return None
    return None


def _label(engine: str, model: str, recipe: str | None = None, draft: str | None = None) -> str:
    name = "default" if model == "default" else Path(model).name
    if engine == "hf":
        return f"HF transformers eager fp32 ({name})"
    if engine == "llamacpp":
        return f"llama.cpp ({name})"
    return f"llmspeed {name}" + (f" +{recipe}" if recipe else "") + (f" draft {draft}" if draft else "")


def plan(cfg: BenchConfig) -> list[dict[str, Any]]:
    """Jobs in report order: each model on llmspeed's engine, then each baseline once per original weights."""
    from llmspeed.bench.baselines import hf as hf_mod
    from llmspeed.bench.baselines import llamacpp

    common = {"scenarios": list(cfg.scenarios), "repeats": cfg.repeats, "warmup": cfg.warmup,
              "prompt_len": cfg.prompt_len, "new_tokens": cfg.new_tokens, "threads": cfg.threads,
              "quality": cfg.quality, "quality_max_tokens": cfg.quality_max_tokens}
    jobs: list[dict[str, Any]] = [
        {"label": _label("llmspeed", m, draft=cfg.draft) + (f" --tp {cfg.tp}" if cfg.tp > 1 else ""), "kind": "model",
         "spec": {**common, "engine": "llmspeed", "model": m, "tp": cfg.tp, "device": cfg.device, "draft": cfg.draft}}
        for m in cfg.models]
    for base in cfg.baselines:
        if base == "none":
            continue
        seen: set[str] = set()
        for m in cfg.models:
            found = hf_mod.original_weights(m)
            key = str(found[1]) if found else m
            if key in seen:
                continue
            seen.add(key)
            job: dict[str, Any] = {"label": _label(base, m), "kind": "baseline",
                                   "spec": {**common, "engine": base, "model": m, "quality": False}}
            if base == "hf" and found is None:
                job["skip"] = f"skipped: no original weights found for {m}"
            elif base == "llamacpp" and not llamacpp.available():
                job["skip"] = llamacpp.INSTALL_HINT
            elif base == "llamacpp" and llamacpp.gguf_for(m) is None:
                job["skip"] = f"skipped: {m} has no GGUF file for llama.cpp"
            jobs.append(job)
    return jobs


def run_job(job: dict[str, Any], workdir: Path, timeout_s: float, bandwidth: float | None) -> dict[str, Any]:
    row = {"label": job["label"], "kind": job["kind"], "engine": job["spec"]["engine"], "model": job["spec"]["model"]}
    if job.get("skip"):
        return {**row, "status": "skipped", "note": job["skip"]}
    idx = len(list(workdir.glob("spec-*.json")))
    spec_path, out_path = workdir / f"spec-{idx}.json", workdir / f"result-{idx}.json"
    spec_path.write_text(json.dumps({**job["spec"], "bandwidth_gbs": bandwidth}))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "llmspeed.bench.worker", str(spec_path), str(out_path)],
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {**row, "status": "error", "note": f"timed out after {timeout_s:.0f} s"}
    wall = time.perf_counter() - t0
    if not out_path.is_file():
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return {**row, "status": "error", "note": f"worker died: {tail[0][:300]}"}
    result = json.loads(out_path.read_text())
    if proc.returncode != 0 and result.get("status") == "ok":
        result["status"] = "error"
    return {**row, **result, "label": job["label"], "kind": job["kind"], "worker_wall_s": wall}


def run_bench(cfg: BenchConfig, progress: Progress | None = None) -> Path:
    """Measure every job, write the report into a temp dir, rename it to `cfg.out`; returns the out path."""
    from llmspeed.bench.html import status_text
    from llmspeed.bench.report import build_report, write_report
    from llmspeed.runtime.threads import physical_cores

    say = progress or (lambda msg: log.info("%s", msg))
    out = Path(cfg.out).expanduser().resolve()
    cal = calibration(cfg)
    env = environment(cfg.threads or physical_cores())
    jobs = plan(cfg)

    def write(tmp: Path) -> None:
        work = tmp / "_work"
        work.mkdir()
        rows = []
        for i, job in enumerate(jobs, 1):
            say(f"[{i}/{len(jobs)}] {job['label']}")
            rows.append(run_job(job, work, cfg.timeout_s, cal["bandwidth_gbs"] if cal else None))
            if rows[-1]["status"] != "ok":
                say(f"    {status_text(rows[-1])}")
        shutil.rmtree(work)
        write_report(tmp, build_report(cfg, rows, env, cal), plots=cfg.plots)

    return write_dir_atomically(out, write)
