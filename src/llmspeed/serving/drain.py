"""Graceful drain (SIGTERM or `POST /admin/drain`): stop admitting (503 + Retry-After, OpenAI-style body), let
every admitted request finish within `drain_timeout`, then let the server exit (status 0).

The server (`server.DrainingServer`) turns the first SIGTERM/SIGINT into `begin()` instead of an immediate
shutdown and exits once `done()`; a second signal shuts down at once. `/health` answers 503 "draining"
meanwhile, so a router or load balancer stops sending traffic here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from llmspeed.serving.errors import APIError

log = logging.getLogger(__name__)


class Drain:
    def __init__(self, timeout: float, in_flight: Callable[[], int], retry_after: int = 1) -> None:
        if timeout < 0:
            raise ValueError(f"drain timeout must be >= 0, got {timeout}")
        self.timeout, self.in_flight, self.retry_after = timeout, in_flight, retry_after
        self.draining = False
        self.deadline = math.inf  # time.monotonic()
        self.on_begin: list[Callable[[], None]] = []  # run once when the drain starts (the router's replicas)

    def begin(self, reason: str) -> bool:
        """Start draining (idempotent); False when already draining."""
        if self.draining:
            return False
        self.draining = True
        self.deadline = time.monotonic() + self.timeout
        log.warning("draining (%s): refusing new requests, finishing %d in flight within %.0f s", reason,
                    self.in_flight(), self.timeout)
        for hook in self.on_begin:
            try:
                hook()
            except Exception:
                log.exception("drain hook failed")
        return True

    def done(self) -> bool:
        """Draining and nothing left in flight (or the timeout passed): the server may exit now."""
        if not self.draining:
            return False
        left = self.in_flight()
        if left and time.monotonic() >= self.deadline:
            log.warning("drain timeout: %d requests still in flight are dropped", left)
            return True
        return left == 0

    def refusal(self) -> APIError:
        return APIError(503, "server is draining (shutting down): not admitting new requests; retry on another "
                             "replica", None, "draining", {"Retry-After": str(self.retry_after)})
