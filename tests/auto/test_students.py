"""Distilled students as candidates: `student=` / `--student DIR` (repeatable), judged against the original (the
teacher) like any other candidate; a bad path is one error line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmspeed.auto.api import auto
from llmspeed.cli.main import main
from tests.auto.conftest import StubMeasurer


def student_dir(tmp_path: Path, name: str = "student") -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d


def test_students_are_screened_and_can_win(tmp_path: Path) -> None:
    s1, s2 = student_dir(tmp_path, "s1"), student_dir(tmp_path, "s2")
    stub = StubMeasurer()
    res = auto(None, measurer=stub, clock=stub.clock, budget_minutes=600, max_trials=14, student=[s1, str(s2)])
    st = [r for r in res.trials if r["source"].startswith("student:")]
    assert {(r["candidate"]["model"], tuple(r["candidate"]["steps"])) for r in st} == {
        (str(s1.resolve()), ()), (str(s1.resolve()), ("int8",)), (str(s2.resolve()), ()), (str(s2.resolve()), ("int8",))}
    assert all(r["key"] in stub.screened for r in st)  # evaluated like any candidate (against the teacher)
    assert res.accepted and res.chosen["candidate"]["model"] in (str(s1.resolve()), str(s2.resolve()))
    assert res.chosen["full"]["quality"]["delta_ppl"] <= 0.03


def test_over_budget_student_is_not_chosen(tmp_path: Path) -> None:
    stub = StubMeasurer(student_cost=0.2)  # the student is fastest but far over the ΔPPL budget
    res = auto(None, measurer=stub, clock=stub.clock, budget_minutes=600, max_trials=10,
               student=[student_dir(tmp_path)])
    assert res.accepted and res.chosen["candidate"]["model"] is None


def test_serving_objective_gives_students_serving_settings(tmp_path: Path) -> None:
    stub = StubMeasurer()
    res = auto(None, objective="throughput", measurer=stub, clock=stub.clock, budget_minutes=600, max_trials=8,
               student=[student_dir(tmp_path)])
    st = [r for r in res.trials if r["source"].startswith("student:")]
    assert st and all(r["candidate"]["serving"]["max_batch"] == 16 for r in st)


@pytest.mark.parametrize("make, needle", [
    (lambda tmp: tmp / "nope", "no such directory"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "not a model directory (no config.json)"),
])
def test_bad_student_path(tmp_path: Path, capsys: pytest.CaptureFixture[str], make, needle: str) -> None:
    bad = make(tmp_path)
    with pytest.raises(ValueError, match="--student"):
        auto(None, measurer=StubMeasurer(), student=[bad])
    out = tmp_path / "out"
    assert main(["auto", "--out", str(out), "--student", str(student_dir(tmp_path)), "--student", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --student") and needle in err[0], err
    assert not out.exists()


def test_real_student_is_judged_against_the_teacher(tiny_model_dir) -> None:
    """A tiny 'student' (another init, same tokenizer) on the real measurer: screened against the teacher, and the
    ablation starts from the teacher, then the student, then its steps."""
    import llmspeed
    from llmspeed.auto.config import AutoConfig
    from llmspeed.auto.measure import LLMMeasurer
    from llmspeed.auto.space import Candidate

    teacher = llmspeed.load(tiny_model_dir("llama"))
    student = str(tiny_model_dir("llama", seed=1))
    m = LLMMeasurer(teacher, AutoConfig(screen_eval_tokens=64, full_eval_tokens=128, new_tokens=8, repeats=1,
                                        profile=False))
    q = m.screen(Candidate(model=student))["quality"]
    assert q["kl"] > 0 and q["baseline_ppl"] != q["ppl"]  # a different model, measured against the teacher
    rows = m.ablation(Candidate(steps=("int8",), model=student))
    assert [r["added"] for r in rows] == ["original", f"student {Path(student).name}", "int8"]
    assert m.build(Candidate(steps=("int8",), model=student)).recipe == ["int8"]
