"""runtime/threads.py: thread count policy and handing back a thread's OpenMP workers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from llmspeed.runtime.threads import openmp_runtime_path, set_threads


def test_set_threads_rejects_non_positive() -> None:
    with pytest.raises(ValueError, match="threads must be > 0"):
        set_threads(-1)


# In a child process: its OpenMP state is its own. Two torch threads, one large parallel op on the main thread
# (libgomp starts one worker), then the release: the worker thread must be gone, and a parallel op on another
# thread afterwards still gives the right answer.
_CHILD = textwrap.dedent("""
    import os, threading, time, torch
    from llmspeed.runtime.threads import release_openmp_workers
    torch.set_num_threads(2)
    def tasks():
        return len(os.listdir("/proc/self/task"))
    before = tasks()
    x = torch.randn(4_000_000)
    torch.exp(x)
    with_team = tasks()
    ok = release_openmp_workers()
    deadline = time.monotonic() + 5
    while tasks() >= with_team and time.monotonic() < deadline:
        time.sleep(0.01)
    after = tasks()
    out = {}
    th = threading.Thread(target=lambda: out.setdefault("v", float(torch.exp(x).sum())))
    th.start(); th.join()
    print(before, with_team, after, ok, abs(out["v"] - float(torch.exp(x).sum())) < 1e-3 * out["v"])
""")


@pytest.mark.skipif(openmp_runtime_path() is None, reason="no OpenMP runtime loaded in this process")
def test_release_openmp_workers_ends_the_callers_worker_threads() -> None:
    res = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    before, with_team, after, ok, same = res.stdout.split()
    assert ok == "True"
    assert int(with_team) > int(before), "the parallel op started no OpenMP worker"
    assert int(after) == int(with_team) - 1, (before, with_team, after)  # 2 threads: one worker, now gone
    assert same == "True"
