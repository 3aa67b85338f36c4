"""`llmspeed distill`: the untrained student is an ordinary model, a killed run resumes exactly, bad input -> exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import llmspeed
from llmspeed.cli.main import main
from llmspeed.compress.distill.run import prepare_run, run_rank
from llmspeed.data.texts import CALIBRATION_PLAYS, EVAL_PLAYS

FAST = ["--seq-len", "24", "--batch-size", "4", "--precision", "fp32", "--eval-tokens", "0", "--warmup-steps", "1",
        "--lr", "3e-3"]


def _one_error_line(capsys: pytest.CaptureFixture[str], match: str) -> None:
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if not ln.startswith(("INFO", "WARNING"))]
    assert len(err) == 1 and err[0].startswith("error:") and match in err[0], err


def test_max_steps_0_writes_the_untrained_student(tiny4: Path, tmp_path: Path) -> None:
    """Default data (calibration plays + pydoc, never a held-out play); the student loads, generates, compresses."""
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(tiny4), "--student-layers", "2", "--keep", "every-k", "--out", str(out),
                 "--max-steps", "0", *FAST]) == 0
    llm = llmspeed.load(out)
    assert llm.config.n_layers == 2 and json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    meta = json.loads((out / "recipe.json").read_text())["distill"]
    assert meta["teacher"] == str(tiny4) and meta["layers_kept"] == [0, 3] and meta["steps"] == 0
    assert meta["final_loss"] is None and (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    sources = set(meta["data"]["sources"])
    assert sources & set(CALIBRATION_PLAYS) and "assert" in sources and not sources & set(EVAL_PLAYS)
    teacher = llmspeed.load(tiny4)
    ids = torch.tensor([teacher.tokenizer.encode("Once more unto the breach, dear friends")])
    ref = teacher.model
    hooks = [ref.model.layers[i].register_forward_hook(lambda _m, a, _o: a[0]) for i in (1, 2)]
    try:
        torch.testing.assert_close(llm.logits(ids), teacher.logits(ids), rtol=0, atol=1e-5)  # layers 1, 2 skipped
    finally:
        for h in hooks:
            h.remove()
    assert len(llm.generate("Once more", max_new_tokens=5, ignore_eos=True)[0].token_ids) == 5
    llmspeed.compress_(llm, "int8", progress=False)  # further compression takes it
    assert llm.generate("Once more", max_new_tokens=3, ignore_eos=True)[0].token_ids


def test_killed_run_resumes_from_its_checkpoint(tiny4: Path, small_text: Path, tmp_path: Path) -> None:
    args = ["--teacher", str(tiny4), "--student-layers", "2", "--data", str(small_text), "--max-steps", "6",
            "--checkpoint-every", "2", *FAST]
    assert main(["distill", "--out", str(tmp_path / "a"), *args]) == 0
    ref = json.loads((tmp_path / "a" / "losses.json").read_text())
    # the same run, killed after step 5 (its checkpoint is step 4): prepared and run as the CLI does
    from llmspeed.compress.distill.config import DistillConfig, SessionConfig
    from llmspeed.models.loading import load_model

    cfg = DistillConfig(teacher=str(tiny4), student_layers=2, data=str(small_text), max_steps=6, seq_len=24,
                        batch_size=4, precision="fp32", warmup_steps=1, lr=3e-3)
    out, ckpt = tmp_path / "b", tmp_path / "b.ckpt"
    prep = prepare_run(cfg, SessionConfig(checkpoint_every=2), out, ckpt, resume=False, load_teacher=load_model,
                       texts=lambda: [(small_text.name, small_text.read_text())])

    def kill(step: int, _loss: float) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_rank(prep.spec_path, on_step=kill)
    assert not out.exists()
    assert main(["distill", "--out", str(out), "--resume", *args]) == 0
    assert json.loads((out / "losses.json").read_text()) == ref
    meta = json.loads((out / "recipe.json").read_text())["distill"]
    assert meta["steps"] == 6 and meta["final_loss"] == pytest.approx(sum(v for _, v in ref) / 6)


@pytest.mark.parametrize("layers", ["4", "0", "9"])
def test_student_layers_out_of_range_exit_2(tiny4: Path, tmp_path: Path, layers: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s"
    assert main(["distill", "--teacher", str(tiny4), "--student-layers", layers, "--out", str(out), "--max-steps", "0",
                 *FAST]) == 2
    _one_error_line(capsys, "--student-layers must be")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_resume_errors_write_nothing(tiny4: Path, small_text: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s"
    args = ["distill", "--teacher", str(tiny4), "--student-layers", "2", "--data", str(small_text), "--out", str(out),
            "--max-steps", "2", "--checkpoint-every", "1", *FAST]
    assert main([*args, "--resume"]) == 2  # no checkpoint yet
    _one_error_line(capsys, "--resume: no checkpoint in")
    assert not out.exists()
    assert main(args) == 0
    capsys.readouterr()
    weights = (out / "model.safetensors").read_bytes()
    assert main(args) == 2  # a fresh run would throw the checkpoints away
    _one_error_line(capsys, "holds checkpoints of an earlier run: pass --resume")
    assert main([*args[:-2], "--lr", "2e-3", "--resume"]) == 2
    _one_error_line(capsys, "--resume with changed settings (lr: 0.003 -> 0.002)")
    state = tmp_path / "s.ckpt" / "step-00000002" / "state.json"
    state.write_text(state.read_text()[:50])
    assert main([*args, "--resume"]) == 2
    _one_error_line(capsys, "corrupt checkpoint")
    assert (out / "model.safetensors").read_bytes() == weights  # nothing overwritten


def test_bad_values_exit_2(tiny4: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    for extra, msg in ((["--out", str(tmp_path / "mine")], "refusing to overwrite"),
                       (["--out", str(tmp_path / "x"), "--prune", "int8"], "--prune takes"),
                       (["--out", str(tmp_path / "x"), "--keep", "0,x"], "--keep must be"),
                       (["--out", str(tmp_path / "x"), "--data", str(tmp_path / "none.txt")], "--data: no such")):
        assert main(["distill", "--teacher", str(tiny4), "--student-layers", "2", "--max-steps", "0", *FAST,
                     *extra]) == 2
        _one_error_line(capsys, msg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_shipped_int4_teacher_teaches_in_its_float_form(tiny4: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`--teacher default` (the GGUF as shipped: int4 blocks) is read as `default:fp32`: a student is trained in
    float, and one saved with the teacher's int4 recipe could not even be loaded back."""
    from llmspeed.cli import distill as cli_distill
    from llmspeed.models.loading import load_model

    asked: list[str] = []

    def fake_load(spec: str):  # the tiny model stands in for the embedded one
        asked.append(spec)
        return load_model(tiny4)

    monkeypatch.setattr(cli_distill, "_load_model", fake_load)
    out = tmp_path / "student"
    assert main(["distill", "--teacher", "default", "--student-layers", "2", "--keep", "every-k", "--out", str(out),
                 "--max-steps", "0", *FAST]) == 0
    assert asked and set(asked) == {"default:fp32"}
    assert json.loads((out / "recipe.json").read_text())["distill"]["teacher"] == "default:fp32"
    assert llmspeed.load(out).config.n_layers == 2
