"""The lowest layer's helpers: CPU facts parsed from any CPU's /proc/cpuinfo text, cache dir rule, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmspeed.util.atomic import write_dir_atomically, write_text_atomically
from llmspeed.util.cache import cache_root
from llmspeed.util.cpu import parse_cpuinfo
from llmspeed.util.timing import best_time

SKYLAKE = """processor\t: 0
model name\t: Intel(R) Xeon(R) CPU @ 2.00GHz
physical id\t: 0
core id\t: 0
flags\t\t: fpu sse avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl
processor\t: 1
model name\t: Intel(R) Xeon(R) CPU @ 2.00GHz
physical id\t: 0
core id\t: 0
flags\t\t: fpu sse avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl
"""


def test_parse_cpuinfo_of_another_cpu() -> None:
    info = parse_cpuinfo(SKYLAKE, cpu_count=2)
    assert info.model == "Intel(R) Xeon(R) CPU @ 2.00GHz"
    assert "avx512bw" in info.flags and "avx512_vnni" not in info.flags
    assert info.physical_cores == 1  # two hyper-threads of one core
    assert info.isa_summary() == "avx2 fma avx512f avx512bw avx512vl"
    assert parse_cpuinfo("", cpu_count=3).physical_cores == 3  # no topology: logical CPUs


def test_cache_root_treats_empty_env_as_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMSPEED_CACHE", "")
    assert cache_root() == Path.home() / ".cache" / "llmspeed"
    monkeypatch.setenv("LLMSPEED_CACHE", str(tmp_path))
    assert cache_root() == tmp_path


def test_atomic_dir_replaces_or_leaves_the_old(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    write_dir_atomically(dest, lambda t: (t / "a").write_text("1"))
    write_dir_atomically(dest, lambda t: (t / "b").write_text("2"))
    assert sorted(p.name for p in dest.iterdir()) == ["b"]

    def boom(t: Path) -> None:
        (t / "c").write_text("partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_dir_atomically(dest, boom)
    assert sorted(p.name for p in dest.iterdir()) == ["b"]  # the old one, whole
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temp dirs left behind
    write_dir_atomically(dest, lambda t: (t / "x").write_text("3"), keep_existing=True)
    assert sorted(p.name for p in dest.iterdir()) == ["b"]  # another writer's complete entry wins


def test_atomic_text_and_best_time(tmp_path: Path) -> None:
    f = tmp_path / "sub" / "f.json"
    write_text_atomically(f, "{}")
    assert f.read_text() == "{}" and [p.name for p in f.parent.iterdir()] == ["f.json"]
    calls = []
    assert best_time(lambda: calls.append(1), 3) >= 0 and len(calls) == 4  # one warm-up + 3 timed
    with pytest.raises(ValueError):
        best_time(lambda: None, 0)


def test_heartbeat_logs_while_a_block_runs(caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import time

    from llmspeed.util.progress import heartbeat

    with caplog.at_level(logging.INFO, logger="llmspeed.progress"):
        with heartbeat("work", every=0.05):
            time.sleep(0.3)
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs[0] == "work ..." and msgs[-1].startswith("work: done in")
    assert sum("still running" in m for m in msgs) >= 2
