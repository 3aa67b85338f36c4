"""A distillation run on disk: `prepare_run` (once, in the launching process) and `run_rank` (in every worker).

`prepare_run` checks everything a user can get wrong before it writes a byte, then fills the checkpoint
directory: `data.safetensors` (the token windows), `student-init/` (the layer-dropped student, a saved model),
and `run.json` (the settings every rank reads). `run_rank` loads those, trains, and on rank 0 writes the student
to `--out` as an ordinary llmspeed model directory whose recipe.json records how it was made.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmspeed.compress.distill.checkpoint import latest_checkpoint, list_checkpoints, save_student
from llmspeed.compress.distill.config import DistillConfig, SessionConfig, parse_keep
from llmspeed.compress.distill.data import load_data, save_data, token_windows
from llmspeed.compress.distill.report import loss_curve_png
from llmspeed.compress.distill.student import build_student, from_state
from llmspeed.compress.distill.train import Ranks, TrainResult, train

log = logging.getLogger(__name__)
RUN_FILE, DATA_FILE, INIT_DIR = "run.json", "data.safetensors", "student-init"


def default_ckpt_dir(out: Path) -> Path:
    return out.parent / f"{out.name}.ckpt"


def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def bf16_speedup(hidden: int, inter: int, tokens: int = 512, reps: int = 8) -> float:
    """fp32 time / bf16-autocast time of one training-sized linear, forward + backward.

    The two are timed alternately and each keeps its best of `reps`, so a burst of load from another process
    slows both rather than deciding the comparison.
    """
    lin = nn.Linear(hidden, inter)
    x = torch.randn(tokens, hidden, requires_grad=True)

    def once(bf16: bool) -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = lin(x)  # [tokens, inter]
        y.float().sum().backward()
        return time.perf_counter() - t0

    once(False), once(True)  # warm-up
    times = {False: float("inf"), True: float("inf")}
    for _ in range(reps):
        for bf16 in (False, True):
            times[bf16] = min(times[bf16], once(bf16))
    return times[False] / times[True]


def resolve_precision(pref: str, hidden: int, inter: int) -> tuple[str, str]:
    """`auto` -> bf16 autocast only on bf16 hardware (AMX / AVX512-BF16) where measured ≥ 1.2× faster."""
    if pref != "auto":
        return pref, "as asked"
    flags = cpu_flags()
    if not flags & {"amx_bf16", "avx512_bf16"}:
        return "fp32", "no AMX / AVX512-BF16 on this CPU: bf16 is emulated and slower"
    speed = bf16_speedup(hidden, inter)
    choice = "bf16" if speed >= 1.2 else "fp32"
    return choice, f"bf16 autocast measured {speed:.2f}× fp32 on a {hidden}x{inter} linear (fwd+bwd)"


@dataclass
class Prepared:
    spec_path: Path
    resume_step: int | None
    plan: dict[str, Any]


def check_out(out: Path) -> None:
    from llmspeed.models.saved import is_saved_dir

    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_saved_dir(out))):
        raise ValueError(f"--out {out} exists and is not an llmspeed model directory: refusing to overwrite it")


def prepare_run(cfg: DistillConfig, session: SessionConfig, out: Path, ckpt_dir: Path, *, resume: bool,
                load_teacher: Callable[[str], Any], texts: Callable[[], Iterable[tuple[str, str]]],
                backend: str = "local", workers: int = 1) -> Prepared:
    """Validate, then write data / initial student / run.json into `ckpt_dir` (on resume: check they match)."""
    check_out(out)
    if cfg.batch_size % workers:
        raise ValueError(f"--batch-size {cfg.batch_size} must be a multiple of --workers {workers}")
    if resume:
        return _prepare_resume(cfg, session, out, ckpt_dir, backend, workers)
    if list_checkpoints(ckpt_dir):
        raise ValueError(f"{ckpt_dir} holds checkpoints of an earlier run: pass --resume to continue it, "
                         "or delete that directory to start again")
    loaded = load_teacher(cfg.teacher)
    teacher, tok = loaded.model, loaded.tokenizer
    n_teacher = teacher.config.n_layers
    if cfg.student_layers is not None and not 1 <= cfg.student_layers < n_teacher:
        raise ValueError(f"--student-layers must be between 1 and {n_teacher - 1} (the teacher has {n_teacher} "
                         f"layers), got {cfg.student_layers}")
    if cfg.student_layers is None and not cfg.prune_steps and not isinstance(parse_keep(cfg.keep), tuple):
        raise ValueError("nothing to make smaller: give --student-layers, --prune or --student-config")
    if cfg.seq_len > teacher.config.max_position:
        raise ValueError(f"--seq-len {cfg.seq_len} exceeds the teacher's context window {teacher.config.max_position}")
    data = token_windows(tok, texts(), cfg.seq_len)
    log.info("%d windows of %d tokens from %d texts", data.n, data.seq_len, len(data.sources))
    calib = data.tokens[torch.linspace(0, data.n - 1, min(cfg.influence_windows, data.n)).round().long()]  # [k, T]
    student, plan = build_student(teacher, cfg.student_layers, parse_keep(cfg.keep), cfg.prune_steps, calib)
    precision, why = resolve_precision(cfg.precision, student.config.hidden_size, student.config.intermediate_size)
    log.info("precision %s (%s)", precision, why)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    save_data(data, ckpt_dir / DATA_FILE)
    save_student(ckpt_dir / INIT_DIR, student, tok, list(plan.prune_steps), {"model": cfg.teacher},
                 {"teacher": cfg.teacher, "plan": plan.to_dict(), "steps": 0})
    spec = {"config": cfg.to_dict(), "session": session.to_dict(), "out": str(out), "ckpt_dir": str(ckpt_dir),
            "precision": precision, "precision_note": why, "resume": False, "plan": plan.to_dict(),
            "data": data.summary(), "backend": backend, "workers": workers}
    (ckpt_dir / RUN_FILE).write_text(json.dumps(spec, indent=1))
    return Prepared(ckpt_dir / RUN_FILE, None, plan.to_dict())


def _prepare_resume(cfg: DistillConfig, session: SessionConfig, out: Path, ckpt_dir: Path, backend: str,
                    workers: int) -> Prepared:
    ckpt = latest_checkpoint(ckpt_dir)
    if ckpt is None:
        raise ValueError(f"--resume: no checkpoint in {ckpt_dir}")
    diff = cfg.differences(ckpt.meta["config"])
    if diff:
        raise ValueError(f"--resume with changed settings ({'; '.join(diff)}): pass the settings of the run in "
                         f"{ckpt_dir}, or start a new run with another --out")
    spec_path = ckpt_dir / RUN_FILE
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--resume: unreadable {spec_path}: {e}") from None
    data = load_data(ckpt_dir / DATA_FILE)
    if data.digest != ckpt.meta["data_sha256"]:
        raise ValueError(f"--resume: {ckpt_dir / DATA_FILE} is not the data checkpoint {ckpt.path.name} trained on")
    spec |= {"session": session.to_dict(), "out": str(out), "resume": True, "backend": backend, "workers": workers}
    spec_path.write_text(json.dumps(spec, indent=1))
    return Prepared(spec_path, ckpt.step, spec["plan"])


def _load_student(init_dir: Path) -> tuple[nn.Module, Any, list[str]]:
    from llmspeed.models.saved import read_saved_dir

    cfg, state, tok, recipe = read_saved_dir(init_dir)
    return from_state(cfg, {k: v.float() if v.is_floating_point() else v for k, v in state.items()}), tok, recipe


def run_rank(spec_path: Path, load_teacher: Callable[[str], Any] | None = None,
             on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train in this process (one of `world` ranks when torch.distributed is initialised); rank 0 saves the student."""
    spec = json.loads(Path(spec_path).read_text())
    cfg = DistillConfig.from_dict(spec["config"])
    session = SessionConfig.from_dict(spec["session"])
    ckpt_dir, out = Path(spec["ckpt_dir"]), Path(spec["out"])
    if load_teacher is None:
        from llmspeed.models.loading import load_model as load_teacher
    teacher = load_teacher(cfg.teacher).model
    student, tok, recipe = _load_student(ckpt_dir / INIT_DIR)
    data = load_data(ckpt_dir / DATA_FILE)
    resume = latest_checkpoint(ckpt_dir) if spec["resume"] else None
    plan = spec["plan"]
    res = train(student, teacher, data, cfg, session, ckpt_dir=ckpt_dir, kept=list(plan["kept"]),
                precision=spec["precision"], resume=resume, on_step=on_step)
    ranks = Ranks.current()
    if ranks.rank == 0:
        meta = {"teacher": cfg.teacher, "teacher_layers": plan["n_teacher"], "layers_kept": plan["kept"],
                "block_influence": plan["influence"], "prune": plan["prune_steps"], "steps": res.step,
                "horizon": res.horizon, "stopped": res.stopped, "tokens": res.tokens,
                "train_seconds": round(res.seconds, 2), "final_loss": res.final_loss, "precision": spec["precision"],
                "precision_note": spec["precision_note"], "workers": ranks.world, "backend": spec["backend"],
                "data": spec["data"], "config": cfg.to_dict(), "checkpoints": str(ckpt_dir)}
        extra = {"loss_curve.png": loss_curve_png(res.losses, f"distillation loss: {plan['n_teacher']} -> "
                                                  f"{len(plan['kept'])} layers"),
                 "losses.json": json.dumps(res.losses).encode()}
        save_student(out, student, tok, recipe, {"model": cfg.teacher, "distilled": True}, meta, extra)
    return res
