"""The loop: schedule and loss against reference math, training lowers the KL, resume after a kill is exact."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from llmspeed.compress.distill.checkpoint import latest_checkpoint, list_checkpoints, read_checkpoint
from llmspeed.compress.distill.config import DistillConfig, SessionConfig
from llmspeed.compress.distill.data import DistillData, batch_indices, rank_rows
from llmspeed.compress.distill.student import build_student, decoder_layers, from_state, hidden_targets
from llmspeed.compress.distill.train import hidden_mse, kd_loss, lr_at, train
from llmspeed.layers.attention import AttnBatch
from llmspeed.models.loading import load_model


def test_lr_schedule_reference_values() -> None:
    lrs = [lr_at(s, 1.0, 0.1, 2, 12) for s in range(1, 13)]
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[6] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 10)))  # step 7: halfway
    assert lrs[-1] == pytest.approx(0.1) and all(a >= b for a, b in itertools.pairwise(lrs[1:]))


def test_kd_loss_matches_naive_kl() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 11, generator=g) * 3, torch.randn(2, 5, 11, generator=g) * 3
    T = 2.0
    p_t, p_s = torch.softmax(t / T, -1).double(), torch.softmax(s / T, -1).double()
    ref = (p_t * (p_t.log() - p_s.log())).sum(-1).mean() * T * T
    assert float(kd_loss(s, t, T)) == pytest.approx(float(ref), rel=1e-5)
    assert float(kd_loss(t, t, T)) == pytest.approx(0.0, abs=1e-6)


def test_batches_are_a_pure_function_of_seed_and_step() -> None:
    seen = [i for step in range(1, 6) for i in batch_indices(10, 4, seed=3, step=step)]  # 20 items = 2 epochs
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert batch_indices(10, 4, 3, 4) == seen[12:16] and batch_indices(10, 4, 4, 1) != seen[:4]
    assert rank_rows([5, 6, 7, 8], 1, 2) == [7, 8]


def _setup(tiny4: Path, windows: torch.Tensor):
    loaded = load_model(tiny4)
    student, plan = build_student(loaded.model, None, (0, 3), (), windows)
    init = {k: v.detach().clone() for k, v in student.state_dict().items()}
    return loaded.model, student.config, init, plan.kept, DistillData(windows)


def _fresh(cfg_m, init: dict[str, torch.Tensor]):
    """A student from copies of the initial tensors (from_state takes ownership of what it is given)."""
    return from_state(cfg_m, {k: v.clone() for k, v in init.items()})


def _cfg(**kw) -> DistillConfig:
    base = dict(teacher="t", keep="0,3", lr=3e-3, warmup_steps=1, batch_size=4, seq_len=24, precision="fp32",
                max_steps=6)
    return DistillConfig(**(base | kw))


def _kl(teacher, student, ids) -> float:
    with torch.no_grad():
        meta = AttnBatch.no_cache(*ids.shape)
        return float(kd_loss(student(ids, meta), teacher(ids, meta), 1.0))


def test_training_lowers_the_kl(tiny4: Path, windows: torch.Tensor) -> None:
    teacher, cfg_m, init, kept, data = _setup(tiny4, windows)
    student = _fresh(cfg_m, init)
    before = _kl(teacher, student, windows)
    res = train(student, teacher, data, _cfg(max_steps=12), SessionConfig(), ckpt_dir=None, kept=kept)
    after = _kl(teacher, student, windows)
    assert res.step == 12 and len(res.losses) == 12 and res.tokens == 12 * 4 * 24
    assert after < 0.8 * before, (before, after)


def test_resume_after_kill_continues_with_the_same_losses(tiny4: Path, windows: torch.Tensor, tmp_path: Path) -> None:
    teacher, cfg_m, init, kept, data = _setup(tiny4, windows)
    cfg, session = _cfg(), SessionConfig(checkpoint_every=2, keep_checkpoints=2)
    full = _fresh(cfg_m, init)
    ref = train(full, teacher, data, cfg, session, ckpt_dir=tmp_path / "a", kept=kept)

    class Killed(Exception):
        pass

    def kill_at_5(step: int, _loss: float) -> None:
        if step == 5:
            raise Killed

    with pytest.raises(Killed):  # dies after step 5 ran: step 5 is lost, the checkpoint of step 4 is not
        train(_fresh(cfg_m, init), teacher, data, cfg, session, ckpt_dir=tmp_path / "b", kept=kept,
              on_step=kill_at_5)
    ckpt = latest_checkpoint(tmp_path / "b")
    assert ckpt is not None and ckpt.step == 4 and [p.name for p in list_checkpoints(tmp_path / "b")] == \
        ["step-00000002", "step-00000004"]
    resumed = _fresh(cfg_m, init)
    res = train(resumed, teacher, data, cfg, session, ckpt_dir=tmp_path / "b", kept=kept, resume=ckpt)
    assert res.step == 6 and [s for s, _ in res.losses] == [1, 2, 3, 4, 5, 6]
    assert res.losses == ref.losses  # bit-identical: same data order, schedule, optimizer state and weights
    for (n, a), (_, b) in zip(full.named_parameters(), resumed.named_parameters(), strict=True):
        assert torch.equal(a, b), n
    assert read_checkpoint(tmp_path / "b" / "step-00000006").meta["losses"] == [list(x) for x in ref.losses]


def test_hidden_mse_term_matches_reference(tiny4: Path, windows: torch.Tensor) -> None:
    teacher, cfg_m, init, kept, data = _setup(tiny4, windows)
    ids = data.tokens[batch_indices(data.n, 4, 0, 1)]  # step 1's batch
    losses = {}
    for w in (0.0, 0.5):
        res = train(_fresh(cfg_m, init), teacher, data, _cfg(max_steps=1, hidden_mse=w), SessionConfig(),
                    ckpt_dir=None, kept=kept)
        losses[w] = res.losses[0][1]
    outs: dict[str, dict[int, torch.Tensor]] = {"s": {}, "t": {}}
    student = _fresh(cfg_m, init)
    hooks = [lay.register_forward_hook(lambda _m, _a, o, i=i, k=k: outs[k].__setitem__(i, o))
             for k, model in (("s", student), ("t", teacher)) for i, lay in enumerate(decoder_layers(model))]
    with torch.no_grad():
        meta = AttnBatch.no_cache(*ids.shape)
        student(ids, meta), teacher(ids, meta)
    for h in hooks:
        h.remove()
    ref = hidden_mse([outs["s"][j] for j in range(len(kept))], [outs["t"][i] for i in hidden_targets(kept, 4)])
    manual = torch.stack([((outs["s"][j] - outs["t"][i]) ** 2).mean() / (outs["t"][i] ** 2).mean()
                          for j, i in enumerate(hidden_targets(kept, 4))]).mean()
    assert float(ref) == pytest.approx(float(manual), rel=1e-6) and float(manual) > 0
    assert losses[0.5] - losses[0.0] == pytest.approx(0.5 * float(manual), rel=1e-4)


def test_time_budget_fixes_the_horizon_and_resume_keeps_it(tiny4: Path, windows: torch.Tensor, tmp_path: Path) -> None:
    teacher, cfg_m, init, kept, data = _setup(tiny4, windows)
    cfg = _cfg(max_steps=None, warmup_steps=50)
    res = train(_fresh(cfg_m, init), teacher, data, cfg, SessionConfig(time_budget=1.5, checkpoint_every=1000),
                ckpt_dir=tmp_path, kept=kept)
    assert res.horizon is not None and res.horizon >= 3 and 3 <= res.step <= res.horizon
    meta = latest_checkpoint(tmp_path).meta
    assert meta["step"] == res.step and meta["horizon"] == res.horizon
    assert meta["warmup"] == min(50, max(1, res.horizon // 10))  # shortened to a tenth of the fixed horizon
    again = train(_fresh(cfg_m, init), teacher, data, cfg, SessionConfig(), ckpt_dir=tmp_path, kept=kept,
                  resume=read_checkpoint(tmp_path / f"step-{res.step:08d}"))
    assert again.horizon == res.horizon and again.step == res.horizon and again.stopped == "horizon"
