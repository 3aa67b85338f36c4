"""Long work never sits silent: a heartbeat log line at least every `every` seconds while a block runs.

A terminal gets progress bars from the commands themselves; a non-TTY run (CI, `make demo` piped to a file) gets
these lines instead, so a phase that takes minutes still shows it is alive and how long it has taken.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

log = logging.getLogger("llmspeed.progress")  # the CLI shows this logger at INFO


@contextlib.contextmanager
def heartbeat(what: str, every: float = 10.0, logger: logging.Logger | None = None) -> Iterator[None]:
    """Log `what: still running (Ns)` every `every` seconds until the block ends, then `what: done in Ns`."""
    if every <= 0:
        raise ValueError(f"every must be > 0, got {every}")
    out = logger or log
    stop = threading.Event()
    t0 = time.perf_counter()

    def beat() -> None:
        while not stop.wait(every):
            out.info("%s: still running (%.0f s)", what, time.perf_counter() - t0)

    th = threading.Thread(target=beat, name="llmspeed-heartbeat", daemon=True)
    out.info("%s ...", what)
    th.start()
    try:
        yield
    finally:
        stop.set()
        th.join()
        out.info("%s: done in %.1f s", what, time.perf_counter() - t0)
