"""`llmspeed auto` bad input: one `error:` line, exit code 2, nothing loaded or written."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmspeed.cli.main import main


@pytest.mark.parametrize("extra, needle", [
    (["--objective", "fastest"], "unknown objective 'fastest'"),
    (["--max-ppl-increase", "abc"], "--max-ppl-increase must be a number or a percentage"),
    (["--max-ppl-increase", "3"], "ambiguous"),
    (["--max-kl", "-0.1"], "--max-kl must be"),
    (["--min-top1", "95%x"], "--min-top1"),
    (["--max-ppl-increase", "off"], "at least one accuracy criterion"),
    (["--budget-minutes", "0"], "budget_minutes must be > 0"),
    (["--max-trials", "0"], "max_trials must be >= 1"),
    (["--prompts", "/no/such/prompts.jsonl"], "--prompts file not found"),
    (["--resume"], "nothing to resume"),
    (["--eval-tokens", "512"], "must not exceed the full eval"),
    (["--task", "/no/such/task.jsonl", "--min-task-acc", "0.3"], "--task file not found"),
    (["--task", "/no/such/task.jsonl"], "give --min-task-acc too"),
])
def test_bad_input_is_one_error_line(extra: list[str], needle: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["auto", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
    assert not out.exists()


def test_malformed_prompts_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "w.jsonl"
    p.write_text('{"prompt": "hello", "max_tokens": 8}\n{"text": "no prompt key"}\n')
    assert main(["auto", "--out", str(tmp_path / "o"), "--prompts", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "w.jsonl:2" in err and "\n" not in err


def test_refuses_a_foreign_out_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    assert main(["auto", "--out", str(tmp_path)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_render_summary(capsys: pytest.CaptureFixture[str]) -> None:
    from llmspeed.auto.api import auto
    from llmspeed.cli.auto import render
    from tests.auto.conftest import StubMeasurer

    stub = StubMeasurer()
    res = auto(None, measurer=stub, clock=stub.clock, max_trials=6, budget_minutes=600)
    render(res)
    out = capsys.readouterr().out
    assert "Pareto fronts" in out and "cycle-time cut" in out and "+ step" in out and "original" in out


@pytest.mark.parametrize("line, needle", [
    ('{"context": "x", "choices": ["a", "b"], "gold": 5}', "t.jsonl:2: gold must index choices"),
    ("{oops", "t.jsonl:2: not a JSON object"),
])
def test_malformed_task_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, needle: str) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text('{"context": "x", "choices": ["a", "b"], "gold": 0}\n' + line + "\n")
    assert main(["auto", "--out", str(tmp_path / "o"), "--task", str(p), "--min-task-acc", "0.3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_non_tty_run_logs_each_trial(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Without a terminal there is no bar: the search's own lines (each trial, its heartbeats) are shown instead,
    and the logger's level is put back afterwards."""
    import logging

    from llmspeed.auto.api import auto
    from llmspeed.cli.auto import AUTO_LOG, _progress_bar
    from tests.auto.conftest import StubMeasurer

    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    before = AUTO_LOG.level
    stub = StubMeasurer()
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.WARNING)  # as the CLI configures it (main.py), without LLMSPEED_LOG
    try:
        with _progress_bar(4) as update:
            assert update is None
            auto(None, measurer=stub, clock=stub.clock, max_trials=4, budget_minutes=600)
    finally:
        root.setLevel(level)
    assert any("auto: trial 1/4" in r.getMessage() for r in caplog.records)
    assert AUTO_LOG.level == before
