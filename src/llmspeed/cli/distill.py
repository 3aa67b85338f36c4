"""`llmspeed distill --teacher M --student-layers N --out DIR`: a smaller student trained on the teacher's logits.

Runs in this process, as `--workers N` torchrun ranks, as a Ray Train job (`--backend ray`), or itself under
`torchrun --nproc-per-node N $(which llmspeed) distill ...`. The student is an ordinary llmspeed model directory.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import typer

from llmspeed.cli.common import ThreadsOpt

log = logging.getLogger(__name__)
BACKENDS = ("torchrun", "ray")
DEFAULT_BUDGET_S = 1800.0  # without --max-steps: the default training budget (30 min)


def register(app: typer.Typer) -> None:
    app.command("distill")(distill)


def _texts(data: str) -> list[tuple[str, str]]:
    """The training text: the calibration plays + CPython's pydoc topics (never a held-out play), or a file."""
    from llmspeed.data import texts as datasets

    if data != "default":
        return list(datasets.text_file(data).parts)
    parts = [*datasets.calibration_plays().parts, *datasets.pydoc_topics().parts]
    leaked = {name for name, _ in parts} & set(datasets.EVAL_PLAYS)
    if leaked:  # the two play lists are disjoint by construction; a guard, not a branch that should run
        raise RuntimeError(f"held-out plays in the distillation data: {sorted(leaked)}")
    return parts


def _load_model(spec: str) -> Any:
    from llmspeed.models.loading import load_model

    return load_model(spec)


def _config(teacher: str, student_config: Path | None, fields: dict[str, Any], load_teacher: Any) -> Any:
    from llmspeed.compress.distill.config import DistillConfig
    from llmspeed.compress.distill.student import spec_from_file

    if student_config is not None:
        given = [k for k in ("student_layers", "prune") if fields.get(k)] + (["keep"] if fields["keep"] != "influence"
                                                                           else [])
        if given:
            raise ValueError(f"--student-config already defines the student: drop --{given[0].replace('_', '-')}")
        fields |= spec_from_file(student_config, load_teacher(teacher).config)
    return DistillConfig(teacher=teacher, **fields)


def distill(
    out: Path = typer.Option(..., "--out", "-o", help="directory to write the student to"),
    teacher: str = typer.Option("default", "--teacher", "-t", help="default, a HF model dir, a .gguf or a saved dir"),
    student_layers: int = typer.Option(None, "--student-layers", help="teacher layers the student keeps"),
    keep: str = typer.Option("influence", "--keep", help="influence (block influence, ShortGPT) | every-k | 0,3,5,..."),
    prune: str = typer.Option("", "--prune", help="width pruning first, e.g. prune-heads-25,prune-mlp-25"),
    student_config: Path = typer.Option(None, "--student-config", help="JSON: student_layers / keep / prune / "
                                        "num_hidden_layers / intermediate_size / num_key_value_heads"),
    data: str = typer.Option("default", "--data", help="default (calibration plays + pydoc topics) | FILE"),
    max_steps: int = typer.Option(None, "--max-steps", help="optimiser steps (0: write the untrained student)"),
    time_budget: float = typer.Option(None, "--time-budget", help="seconds of training in this session "
                                      f"(default {DEFAULT_BUDGET_S:.0f} without --max-steps)"),
    batch_size: int = typer.Option(8, "--batch-size", help="global batch in sequences (all workers together)"),
    seq_len: int = typer.Option(256, "--seq-len"),
    lr: float = typer.Option(1e-4, "--lr", help="peak learning rate (AdamW)"),
    warmup_steps: int = typer.Option(20, "--warmup-steps"),
    weight_decay: float = typer.Option(0.0, "--weight-decay"),
    grad_clip: float = typer.Option(1.0, "--grad-clip"),
    temperature: float = typer.Option(1.0, "--temperature", help="softmax temperature of the KL"),
    hidden_mse: float = typer.Option(0.0, "--hidden-mse", help="weight of a hidden-state MSE term (0: logits only)"),
    seed: int = typer.Option(0, "--seed"),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 autocast where measured faster) | fp32 | bf16"),
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", help="steps between checkpoints"),
    keep_checkpoints: int = typer.Option(1, "--keep-checkpoints"),
    checkpoint_dir: Path = typer.Option(None, "--checkpoint-dir", help="default: OUT.ckpt beside --out"),
    resume: bool = typer.Option(False, "--resume", help="continue the run from its last checkpoint"),
    workers: int = typer.Option(1, "--workers", help="data-parallel workers"),
    backend: str = typer.Option("torchrun", "--backend", help="torchrun | ray (for --workers)"),
    eval_tokens: int = typer.Option(4096, "--eval-tokens", help="held-out tokens for ΔPPL / KL / top-1 (0: skip)"),
    threads: int = ThreadsOpt,
) -> None:
    """Distil a teacher into a student with fewer layers (optionally narrower), starting from the teacher's weights."""
    from llmspeed.compress.distill.config import SessionConfig
    from llmspeed.compress.distill.parallel import init_process_group, torchrun_env
    from llmspeed.compress.distill.run import default_ckpt_dir, prepare_run, run_rank

    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if student_layers is not None and student_layers < 1:
        raise ValueError(f"--student-layers must be >= 1, got {student_layers}")
    if eval_tokens < 0:
        raise ValueError(f"--eval-tokens must be >= 0, got {eval_tokens}")
    if data != "default" and not Path(data).is_file():
        raise ValueError(f"--data: no such text file {data}")
    if threads:
        import torch

        torch.set_num_threads(threads)
    logging.getLogger("llmspeed.compress.distill").setLevel(logging.INFO)  # progress lines without LLMSPEED_LOG
    fields = dict(student_layers=student_layers, keep=keep, prune=prune, temperature=temperature,
                  hidden_mse=hidden_mse, lr=lr, warmup_steps=warmup_steps, weight_decay=weight_decay,
                  grad_clip=grad_clip, batch_size=batch_size, seq_len=seq_len, seed=seed, precision=precision,
                  max_steps=max_steps, data=data)
    if max_steps is None and time_budget is None:
        time_budget = DEFAULT_BUDGET_S
    session = SessionConfig(time_budget=time_budget, checkpoint_every=checkpoint_every,
                            keep_checkpoints=keep_checkpoints)
    load_teacher = functools.lru_cache(maxsize=1)(_load_model)  # one load per invocation, shared by the steps
    from llmspeed.models.spec import float_source

    # the student is trained in float: a GGUF taken as shipped (`default` = int4 blocks) teaches in its float32
    # form, as a recipe reads it; an explicit `:native` keeps the int4 teacher
    teacher = float_source(teacher)
    cfg = _config(teacher, student_config, fields, load_teacher)
    ckpt_dir = checkpoint_dir or default_ckpt_dir(out)
    ranks = torchrun_env()
    if ranks is not None and workers != 1:
        raise ValueError("under torchrun the ranks are the workers: drop --workers")
    if ranks is not None:
        backend = "torchrun"
    elif backend != "ray" and workers == 1:
        backend = "local"
    prepare = functools.partial(prepare_run, cfg, session, out, ckpt_dir, resume=resume, load_teacher=load_teacher,
                                texts=lambda: _texts(cfg.data), workers=ranks[1] if ranks else workers,
                                backend=backend)
    if ranks is not None:  # this CLI is one of several torchrun ranks: rank 0 prepares, all train
        init_process_group()
        spec_path = _prepare_on_rank0(prepare, ranks[0], ckpt_dir)
        run_rank(spec_path, load_teacher=load_teacher)
        if ranks[0] != 0:
            return
    else:
        prep = prepare()
        spec_path = prep.spec_path
        if prep.resume_step is not None:
            print(f"distill: resuming from step {prep.resume_step} ({ckpt_dir})", file=sys.stderr)
        _train(spec_path, workers, backend, load_teacher)
    _summary(out, teacher, ckpt_dir, eval_tokens)


def _prepare_on_rank0(prepare: Any, rank: int, ckpt_dir: Path) -> Path:
    """Rank 0 prepares the run; the others wait for its verdict (a failure ends every rank, not only rank 0)."""
    import torch
    import torch.distributed as dist

    from llmspeed.compress.distill.run import RUN_FILE

    ok, err = torch.ones(1), None
    if rank == 0:
        try:
            prepare()
        except Exception as e:
            ok, err = torch.zeros(1), e
    dist.broadcast(ok, src=0)
    if err is not None:
        raise err
    if not ok.item():
        raise ValueError("rank 0 could not prepare the run (see its error)")
    return ckpt_dir / RUN_FILE


def _train(spec_path: Path, workers: int, backend: str, load_teacher: Any) -> None:
    """In this process (local), as torchrun ranks, or as a Ray Train job; a worker failure is one error line."""
    from llmspeed.compress.distill.parallel import launch_ray, launch_torchrun
    from llmspeed.compress.distill.run import run_rank

    try:
        if backend == "ray":
            launch_ray(spec_path, workers)
        elif workers > 1:
            launch_torchrun(spec_path, workers)
        else:
            run_rank(spec_path, load_teacher=load_teacher)
    except RuntimeError as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        raise typer.Exit(1) from None


def _summary(out: Path, teacher: str, ckpt_dir: Path, eval_tokens: int) -> None:
    meta = json.loads((out / "recipe.json").read_text())["distill"]
    loss = meta["final_loss"]
    print(f"distill: {meta['teacher_layers']} -> {len(meta['layers_kept'])} layers (kept {meta['layers_kept']}), "
          f"{meta['steps']} steps ({meta['stopped']}), {meta['tokens']} tokens, {meta['train_seconds']:.0f} s, "
          f"final loss {'-' if loss is None else f'{loss:.4f}'} (mean of the last 10 steps), {meta['precision']}, "
          f"{meta['workers']} worker(s)")
    print(f"distill: student saved to {out} (checkpoints in {ckpt_dir})")
    if eval_tokens:
        _evaluate(out, teacher, ckpt_dir, eval_tokens)


def _evaluate(out: Path, teacher: str, ckpt_dir: Path, eval_tokens: int) -> None:
    """ΔPPL / KL / top-1 vs the teacher on held-out plays, for the untrained and the trained student."""
    import llmspeed
    from llmspeed.compress.distill.run import INIT_DIR

    base = llmspeed.load(teacher)
    rows = {}
    for name, path in (("untrained student", ckpt_dir / INIT_DIR), ("trained student", out)):
        res = llmspeed.evaluate(llmspeed.load(path), baseline=base, max_tokens=eval_tokens, ood_max_tokens=0,
                                lastword_n=0)
        rows[name] = {k: res.get(k) for k in ("ppl", "baseline_ppl", "delta_ppl_pct", "kl_mean", "top1_agreement",
                                              "n_tokens")}
        print(f"distill: {name}: ppl {res['ppl']:.2f} (teacher {res['baseline_ppl']:.2f}, ΔPPL "
              f"{res['delta_ppl_pct']:+.1f}%), KL {res['kl_mean']:.4f}, top-1 {res['top1_agreement']:.3f} "
              f"on {res.get('n_tokens', eval_tokens)} held-out tokens")
    tmp = out / ".eval.json.tmp"
    tmp.write_text(json.dumps(rows, indent=2))
    os.replace(tmp, out / "eval.json")
