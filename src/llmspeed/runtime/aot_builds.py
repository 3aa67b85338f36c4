"""Decode graphs compiled off the decode thread (`CompileConfig(background=True)`, what `llmspeed serve` uses).

A cold AOTInductor compile of one (batch, KV-length) bucket takes minutes on a small CPU; a server that blocks a
step on it leaves every request waiting. Here the decode thread exports the graph (seconds; export must run on
the thread that runs the model, since it swaps the module's tensors for fakes while tracing), then a single
builder thread compiles the package at a lower CPU priority while the step runs eager. The next step of that
bucket after the build finishes takes the compiled graph. A package already in the cache is loaded at once.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from llmspeed.runtime import aot
from llmspeed.runtime.threads import release_openmp_workers

log = logging.getLogger(__name__)

BUILDER_NICE = 10  # the compile (and the C++ compiler it starts) yields the CPU to decoding


def _lower_priority() -> None:
    try:  # Linux: a thread's nice value is its own, and the compiler processes it starts inherit it
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BUILDER_NICE)
    except (OSError, AttributeError):
        pass


def _compile(ep: Any, path: Path, options: dict[str, Any], what: str) -> aot.AotRunner:
    try:
        return aot.load_or_compile(ep, path, options, what)
    finally:
        release_openmp_workers()  # the decode thread stays the only one with OpenMP workers (runtime/threads.py)


def _work(jobs: queue.SimpleQueue[tuple[Future[aot.AotRunner], tuple[Any, ...]]]) -> None:
    _lower_priority()
    while True:
        fut, args = jobs.get()
        if not fut.set_running_or_notify_cancel():
            continue
        try:
            fut.set_result(_compile(*args))
        except BaseException as e:
            fut.set_exception(e)


class BackgroundBuilds:
    """Per bucket key: ready runner, pending build, or failed (that bucket stays eager). The builder is a daemon
    thread: stopping the server never waits for a compile (an unfinished package is simply not cached)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[aot.AotRunner], tuple[Any, ...]]] = queue.SimpleQueue()
        self._builder: threading.Thread | None = None
        self._pending: dict[Hashable, Future[aot.AotRunner]] = {}
        self._failed: set[Hashable] = set()

    @property
    def num_pending(self) -> int:
        return sum(not f.done() for f in self._pending.values())

    def get(self, key: Hashable, export: Callable[[], tuple[Any, Path]], options: dict[str, Any],
            what: str) -> aot.AotRunner | None:
        """The runner for `key` when it is ready; else None (run this step eager) after starting its build."""
        if key in self._failed:
            return None
        fut = self._pending.get(key)
        if fut is None:
            try:
                ep, path = export()
                if path.exists():  # warm cache: load now, on this thread (a second or so)
                    return aot.load_or_compile(ep, path, options, what)
            except Exception as e:
                self._fail(key, what, e)
                return None
            if self._builder is None:
                self._builder = threading.Thread(target=_work, args=(self._jobs,), name="llmspeed-aot", daemon=True)
                self._builder.start()
            fut: Future[aot.AotRunner] = Future()
            self._jobs.put((fut, (ep, path, options, what)))
            self._pending[key] = fut
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

    def _fail(self, key: Hashable, what: str, e: BaseException) -> None:
        self._failed.add(key)
        log.warning("%s: background compile failed (%s: %s); this bucket decodes eager", what, type(e).__name__,
                    str(e).splitlines()[0] if str(e) else "")

    def wait(self, timeout: float | None = None) -> None:
        """Block until every pending build is done (tests, benchmarks)."""
        for fut in list(self._pending.values()):
            try:
                fut.result(timeout)
            except Exception:
                pass
