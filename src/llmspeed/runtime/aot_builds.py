"""Decode graphs compiled off the decode thread (`CompileConfig(background=True)`, what `llmspeed serve` uses).

A cold AOTInductor compile of one (batch, KV-length) bucket takes minutes on a small CPU; a server that blocks a
step on it leaves every request waiting. Here the decode thread exports the graph (seconds; export must run on
the thread that runs the model, since it swaps the module's tensors for fakes while tracing) and the step runs
eager until the package exists; the next step of that bucket after the build takes the compiled graph. A package
already in the cache is loaded at once.

Where the compile runs:
- **a child process** when the model can be rebuilt from how it was loaded (`worker`: `python -m MODULE SPEC`,
  `llmspeed.compile_worker`): it loads the same model, exports the same bucket and compiles it into the shared
  package cache at nice 10. Inductor's lowering is Python; in a thread it would hold the GIL against the decode
  thread (measured: an eager decode 2.2x slower beside a busy Python thread). The parent checks that the child's
  package is the one its own export names (same cache key), then loads it bound to its own tensors.
- **a builder thread** (nice 10) otherwise, e.g. for a model changed in memory after loading.
Either way the builder is a daemon thread, so stopping the server never waits for a compile; a child exits when
its parent is gone.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch

from llmspeed.runtime import aot
from llmspeed.runtime.threads import release_openmp_workers

log = logging.getLogger(__name__)

BUILDER_NICE = 10  # the compile (and the C++ compiler it starts) yields the CPU to decoding
CHILD_TIMEOUT_S = 3600.0


def lower_priority(tid: int = 0) -> None:
    """Nice this thread (`tid`: its native id) or, with 0, the calling process; its children inherit it."""
    try:
        os.setpriority(os.PRIO_PROCESS, tid, BUILDER_NICE)
    except (OSError, AttributeError):
        pass


def bucket_spec(inputs: Sequence[torch.Tensor], state: Sequence[torch.Tensor]) -> dict[str, Any]:
    """The shapes a child needs to export the same bucket (values do not matter to export)."""
    return {"inputs": [[list(t.shape), str(t.dtype).removeprefix("torch.")] for t in inputs],
            "state": [[list(t.shape), list(t.stride()), str(t.dtype).removeprefix("torch.")] for t in state]}


def bucket_tensors(spec: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    inputs = [torch.zeros(shape, dtype=getattr(torch, dt)) for shape, dt in spec["inputs"]]
    state = [torch.empty_strided(shape, stride, dtype=getattr(torch, dt)) for shape, stride, dt in spec["state"]]
    return inputs, state


def _in_thread(ep: Any, path: Path, options: dict[str, Any], what: str) -> aot.AotRunner:
    try:
        return aot.load_or_compile(ep, path, options, what)
    finally:
        release_openmp_workers()  # the decode thread stays the only one with OpenMP workers (runtime/threads.py)


def _in_child(worker: dict[str, Any], job: dict[str, Any], ep: Any, path: Path, options: dict[str, Any],
              what: str) -> aot.AotRunner:
    with tempfile.TemporaryDirectory(prefix="llmspeed-aot-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps({**job, "load": worker["load"], "result": str(result_path),
                                         "parent": os.getpid()}))
        log.info("%s: compiling in a child process (nice %d)", what, BUILDER_NICE)
        proc = subprocess.run([sys.executable, "-m", worker["module"], str(spec_path)], stdin=subprocess.DEVNULL,
                              timeout=CHILD_TIMEOUT_S, check=False)
        if proc.returncode != 0 or not result_path.exists():
            raise RuntimeError(f"compile worker exited with {proc.returncode}")
        made = Path(json.loads(result_path.read_text())["path"])
    if made.name != path.name:
        raise RuntimeError(f"the compile worker's graph differs from this process's ({made.name} != {path.name})")
    return aot.load_or_compile(ep, path, options, what)  # bound to this process's tensors


Job = tuple[Future[aot.AotRunner], Callable[[], aot.AotRunner]]


def _work(jobs: queue.SimpleQueue[Job]) -> None:
    lower_priority(threading.get_native_id())
    while True:
        fut, run = jobs.get()
        if not fut.set_running_or_notify_cancel():
            continue
        try:
            fut.set_result(run())
        except BaseException as e:  # handed to the decode thread through the future
            fut.set_exception(e)


class BackgroundBuilds:
    """Per bucket key: ready runner, pending build, or failed (that bucket stays eager). `worker`: how a child
    process rebuilds the model ({"module": ..., "load": {...}}), or None to compile in a thread."""

    def __init__(self, worker: dict[str, Any] | None = None) -> None:
        self.worker = worker
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._builder: threading.Thread | None = None
        self._pending: dict[Hashable, Future[aot.AotRunner]] = {}
        self._failed: set[Hashable] = set()

    @property
    def num_pending(self) -> int:
        return sum(not f.done() for f in self._pending.values())

    def get(self, key: Hashable, export: Callable[[], tuple[Any, Path]], options: dict[str, Any], what: str,
            job: Callable[[], dict[str, Any]] | None = None) -> aot.AotRunner | None:
        """The runner for `key` when it is ready; else None (run this step eager) after starting its build.
        `job`: makes the bucket as a child process rebuilds it (`bucket_spec` + compile settings), called once,
        when the build is submitted (not on the eager steps while it runs)."""
        if key in self._failed:
            return None
        fut = self._pending.get(key)
        if fut is None:
            try:
                ep, path = export()
                if path.exists():  # warm cache: load now, on this thread (a second or so)
                    return aot.load_or_compile(ep, path, options, what)
            except Exception as e:  # any export failure: this bucket decodes eager
                self._fail(key, what, e)
                return None
            if self.worker is not None and job is not None:
                worker, spec = self.worker, {**job(), "root": str(path.parent)}

                def run() -> aot.AotRunner:
                    return _in_child(worker, spec, ep, path, options, what)
            else:
                def run() -> aot.AotRunner:
                    return _in_thread(ep, path, options, what)
            self._submit(key, run)
            log.info("%s: compiling in the background; eager until it is ready", what)
            return None
        if not fut.done():
            return None
        del self._pending[key]
        try:
            return fut.result()
        except Exception as e:
            self._fail(key, what, e)
            return None

    def _submit(self, key: Hashable, run: Callable[[], aot.AotRunner]) -> None:
        if self._builder is None:
            self._builder = threading.Thread(target=_work, args=(self._jobs,), name="llmspeed-aot", daemon=True)
            self._builder.start()
        fut: Future[aot.AotRunner] = Future()
        self._jobs.put((fut, run))
        self._pending[key] = fut

    def _fail(self, key: Hashable, what: str, e: BaseException) -> None:
        self._failed.add(key)
        log.warning("%s: background compile failed (%s: %s); this bucket decodes eager", what, type(e).__name__,
                    str(e).splitlines()[0] if str(e) else "")

    def wait(self, timeout: float | None = None) -> None:
        """Block until every pending build is done (tests, benchmarks)."""
        for fut in list(self._pending.values()):
            try:
                fut.result(timeout)
            except Exception:  # reported by `get`
                pass
