"""Running an app under uvicorn: in the foreground (the CLI) or in a background thread (tests, benchmarks)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import FrameType
from typing import Any

import uvicorn


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket; port 0 picks a free ephemeral port (read it back with .getsockname())."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM/SIGINT drains the app (`app.state.drain`, see serving/drain.py) instead of
    shutting down at once; the server exits (status 0) when the drain is done. A second signal is uvicorn's
    own immediate shutdown."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        state = getattr(config.app, "state", None)
        self.drain = getattr(state, "drain", None)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain is None or self.drain.draining or self.should_exit:
            super().handle_exit(sig, frame)
            return
        self.drain.begin(f"signal {sig}")  # runs in the main thread between bytecodes: flags only

    async def on_tick(self, counter: int) -> bool:
        if self.drain is not None and not self.should_exit and self.drain.done():
            log.warning("drained: shutting down")
            self.should_exit = True
        return await super().on_tick(counter)


def serve_forever(app: Any, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    sock = bind_socket(host, port)
    server = DrainingServer(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))
    server.run(sockets=[sock])


class ThreadedServer:
    """`with ThreadedServer(app) as s: s.url` — uvicorn on 127.0.0.1:<ephemeral> in a daemon thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        self.sock = bind_socket(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        self.server = DrainingServer(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=3,
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ThreadedServer:
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() - t0 > timeout:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
