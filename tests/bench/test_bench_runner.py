"""Bench runner on the tiny model with the HF baseline: report JSON schema, Markdown, plots, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmspeed.bench.config import BenchConfig, parse_scenario
from llmspeed.bench.measure import RunResult, run_scenario
from llmspeed.bench.report import SCHEMA, strategy_table

TOP_KEYS = {"schema", "created", "environment", "calibration", "config", "scenarios", "rows", "strategy_table", "files"}
ENV_KEYS = {"cpu_model", "physical_cores", "logical_cpus", "torch_version", "llmspeed_version", "git_commit", "threads"}
SCENARIO_KEYS = {"batch", "prompt_tokens", "new_tokens", "tokens_ok", "ttft_ms", "e2e_s", "tok_s", "tpot_ms",
                 "decode_tok_s", "achieved_gbs", "pct_of_bandwidth"}


def test_report_json_schema(tiny_report: Path) -> None:
    r = json.loads((tiny_report / "report.json").read_text())
    assert set(r) >= TOP_KEYS and r["schema"] == SCHEMA
    assert set(r["environment"]) >= ENV_KEYS
    rows = {row["engine"]: row for row in r["rows"]}
    assert set(rows) == {"llmspeed", "hf", "llamacpp"}
    for eng in ("llmspeed", "hf"):
        row = rows[eng]
        assert row["status"] == "ok", row
        assert row["peak_rss_mb"] > 0 and row["size_bytes"] > 0
        for name in ("prefill16", "decode_b1", "decode_b2"):
            sc = row["scenarios"][name]
            assert set(sc) >= SCENARIO_KEYS
            assert sc["tokens_ok"], sc["tokens_produced"]
            assert sc["ttft_ms"]["median"] > 0 and sc["ttft_ms"]["n"] == 2
        assert row["scenarios"]["decode_b2"]["batch"] == 2
        assert row["scenarios"]["decode_b1"]["prompt_head"] == rows["llmspeed"]["scenarios"]["decode_b1"]["prompt_head"]
    assert "stages" in rows["llmspeed"]["scenarios"]["decode_b1"]
    llama = rows["llamacpp"]
    assert llama["status"] in ("ok", "skipped")
    if llama["status"] == "skipped":
        import importlib.util

        if importlib.util.find_spec("llama_cpp") is None:
            assert "pip install 'llmspeed[llamacpp]'" in llama["note"]
        else:  # installed, but a tiny HF-dir model has no GGUF for llama.cpp to run
            assert "no GGUF file" in llama["note"]
    assert r["strategy_table"] and r["strategy_table"][0]["baseline"].startswith("HF")


def test_report_files(tiny_report: Path) -> None:
    names = {p.name for p in tiny_report.iterdir()}
    assert {"report.json", "report.md", "report.html", "tok_s.png", "stages.png"} <= names
    assert not any(n.startswith(".") for n in names)
    md = (tiny_report / "report.md").read_text()
    assert "| row | scenario |" in md and "Strategy → % cycle time reduction" in md
    assert (tiny_report / "tok_s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (tiny_report / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "<table" in html and html.rstrip().endswith("</html>")
    assert "http://" not in html and "https://" not in html  # self-contained


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="repeats"):
        BenchConfig(repeats=0, out=str(tmp_path / "r"))
    with pytest.raises(ValueError, match="unknown scenario"):
        BenchConfig(scenarios=("decode_bx",), out=str(tmp_path / "r"))
    with pytest.raises(ValueError, match="unknown baseline"):
        BenchConfig(baselines=("vllm",), out=str(tmp_path / "r"))
    with pytest.raises(ValueError, match="does not exist"):
        BenchConfig(out=str(tmp_path / "missing" / "r"))
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        BenchConfig(out=str(f))


def test_cli_bad_input_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llmspeed.cli.main import main

    assert main(["bench", "--repeats", "0", "--out", str(tmp_path / "r")]) == 2
    assert main(["bench", "--scenarios", "warp9", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 2 and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_run_scenario_checks_token_counts() -> None:
    sc = parse_scenario("decode_b2", 8, 5)
    good = run_scenario(lambda s, n: RunResult(0.1, 0.5, [n] * s.batch), sc, repeats=2, warmup=1,
                        bytes_per_step=lambda b, ctx: 1e9, bandwidth_gbs=10.0)
    assert good["tokens_ok"] and good["tpot_ms"]["median"] == pytest.approx(100.0)
    assert good["tok_s"]["median"] == pytest.approx(20.0)  # 2 * 5 tokens in 0.5 s
    assert good["achieved_gbs"] == pytest.approx(10.0) and good["pct_of_bandwidth"] == pytest.approx(100.0)
    short = run_scenario(lambda s, n: RunResult(0.1, 0.5, [n, n - 1]), sc, repeats=1, warmup=0)
    assert not short["tokens_ok"]


def test_strategy_table_math() -> None:
    def row(label: str, engine: str, e2e: float) -> dict:
        return {"label": label, "engine": engine, "status": "ok", "recipe": [],
                "scenarios": {"decode_b1": {"e2e_s": {"median": e2e}}}}

    t = strategy_table([row("ours", "llmspeed", 2.0), row("hf", "hf", 8.0)], ["decode_b1"])
    assert len(t) == 1 and t[0]["reduction_pct"] == pytest.approx(75.0) and t[0]["speedup"] == pytest.approx(4.0)


def test_worker_error_row(tmp_path: Path) -> None:
    from llmspeed.bench.runner import run_job

    job = {"label": "broken", "kind": "model", "spec": {"engine": "llmspeed", "model": str(tmp_path / "nope"),
                                                         "scenarios": ["decode_b1"], "repeats": 1, "warmup": 0,
                                                         "prompt_len": 4, "new_tokens": 2, "threads": 1}}
    row = run_job(job, tmp_path, timeout_s=120, bandwidth=None)
    assert row["status"] == "error" and "model not found" in row["note"]
