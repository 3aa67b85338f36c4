"""The one background thread that owns the Engine: it steps while there is work and hands each request's
new text to that request's asyncio queue (`loop.call_soon_threadsafe`). Front ends only add and abort,
and read the engine through `stats()` (a frozen snapshot) and `limits` (fixed at construction).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from llmspeed.runtime.engine import Engine, EngineLimits, EngineStats
from llmspeed.runtime.sequence import SamplingParams, Sequence
from llmspeed.runtime.threads import release_openmp_workers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delta:
    """What a request gained in one engine step."""

    text: str
    num_output: int
    finished: bool
    finish_reason: str | None = None
    error: str | None = None
    seq_id: str = ""  # whose delta (several sequences of one request may share a queue)


@dataclass
class _Ticket:
    seq: Sequence
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Delta]
    deadline: float = float("inf")  # time.monotonic(); past it the engine thread aborts the request


class EngineLoop:
    """Owns `engine`; `submit` / `cancel` are safe from any thread (the event loop's, typically)."""

    def __init__(self, engine: Engine, on_finish: Callable[[Sequence], None] | None = None) -> None:
        self.engine = engine
        self.limits: EngineLimits = engine.limits
        self.on_finish = on_finish
        self._tickets: dict[str, _Ticket] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="llmspeed-engine", daemon=True)
            self._thread.start()
            # the engine thread alone runs the model from now on: the caller (which loaded and warmed it) hands
            # back its OpenMP workers, else libgomp's throttled spinning makes every parallel kernel 2-4x slower
            # (runtime/threads.py)
            release_openmp_workers()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._lock:
            tickets, self._tickets = list(self._tickets.values()), {}
        for t in tickets:
            self._post(t, Delta("", len(t.seq.output_ids), True, "abort", error="server shutting down",
                                seq_id=t.seq.seq_id))

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- requests ----------------------------------------------------------------------------------
    @property
    def num_in_flight(self) -> int:
        return len(self._tickets)

    def stats(self) -> EngineStats:
        """The engine's state at the end of its last step (safe from any thread)."""
        return self.engine.stats()

    @property
    def num_running(self) -> int:
        return self.stats().num_running

    @property
    def num_waiting(self) -> int:
        return max(0, self.num_in_flight - self.num_running)

    def make_sequence(self, prompt_ids: list[int], params: SamplingParams, seq_id: str) -> Sequence:
        """A request for this engine (ValueError when it can never fit)."""
        return self.engine.make_sequence(prompt_ids, params, seq_id=seq_id)

    def submit(self, seq: Sequence, timeout: float | None = None,
               queue: asyncio.Queue[Delta] | None = None) -> asyncio.Queue[Delta]:
        """Queue `seq`; its deltas arrive on the returned queue (`queue` if given, shared by several sequences:
        `Delta.seq_id` tells them apart; call from a running event loop). After `timeout` seconds the engine
        thread aborts it even if nobody is listening any more (a safety net for streams whose client vanished
        before the response body started)."""
        q: asyncio.Queue[Delta] = queue if queue is not None else asyncio.Queue()
        deadline = time.monotonic() + timeout if timeout is not None else float("inf")
        with self._lock:
            self._tickets[seq.seq_id] = _Ticket(seq, asyncio.get_running_loop(), q, deadline)
        self.engine.add(seq)
        self._wake.set()
        return q

    def cancel(self, seq_id: str) -> None:
        """Abort a request (client gone, timeout); its blocks are freed at the next step."""
        if seq_id in self._tickets:
            self.engine.abort(seq_id)
            self._wake.set()

    # -- the thread ------------------------------------------------------------------------------------
    def _abort_expired(self) -> None:
        now = time.monotonic()
        for t in [t for t in list(self._tickets.values()) if t.deadline <= now]:
            log.warning("request %s exceeded its deadline: aborting", t.seq.seq_id)
            t.deadline = float("inf")
            self.engine.abort(t.seq.seq_id)

    def _run(self) -> None:
        eng = self.engine
        next_sweep = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_sweep:
                self._abort_expired()
                next_sweep = time.monotonic() + 0.25
            if not eng.has_work():
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            try:
                progressed = eng.step()
            except Exception as e:  # never let one bad step kill the server: fail what was in flight
                log.exception("engine step failed")
                self._fail_all(f"engine error: {type(e).__name__}: {e}")
                continue
            for seq in progressed:
                self._dispatch(seq)

    def _dispatch(self, seq: Sequence) -> None:
        t = self._tickets.get(seq.seq_id)
        if t is None:
            return
        text = seq.pop_text()
        if seq.finished:
            with self._lock:
                self._tickets.pop(seq.seq_id, None)
            if self.on_finish is not None:
                try:
                    self.on_finish(seq)
                except Exception:  # metrics must never break generation
                    log.exception("on_finish hook failed")
            self._post(t, Delta(text, len(seq.output_ids), True, seq.finish_reason, error=seq.error,
                                seq_id=seq.seq_id))
        elif text:
            self._post(t, Delta(text, len(seq.output_ids), False, seq_id=seq.seq_id))

    def _fail_all(self, message: str) -> None:
        with self._lock:
            tickets, self._tickets = list(self._tickets.values()), {}
        for t in tickets:
            self.engine.abort(t.seq.seq_id)
            self._post(t, Delta("", len(t.seq.output_ids), True, "abort", error=message, seq_id=t.seq.seq_id))
        try:  # drop the failed requests from the engine so the next step starts clean
            self.engine.step()
        except Exception:
            log.exception("engine cleanup step failed")

    @staticmethod
    def _post(t: _Ticket, d: Delta) -> None:
        try:
            t.loop.call_soon_threadsafe(t.queue.put_nowait, d)
        except RuntimeError:  # the event loop is closed (server shutting down)
            pass
