"""Exact-match response cache for deterministic requests: L1 in-process (lru | fifo), L2 sqlite or Redis.

The key hashes the model identity (source, recipe, dtype), the request kind, the normalized prompt or
messages and every sampling parameter. Only temperature-0 or explicitly seeded requests are cached.
L2 failures never fail a request: an unreachable Redis degrades to L1 with a logged warning.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)


def cache_key(model_identity: dict[str, Any], kind: str, prompt: Any, sampling: dict[str, Any]) -> str:
    blob = json.dumps({"m": model_identity, "k": kind, "p": prompt, "s": sampling}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class L1Cache:
    """Bounded in-process dict; `lru` refreshes an entry on read, `fifo` evicts in insertion order."""

    def __init__(self, capacity: int, policy: str = "lru") -> None:
        if policy not in ("lru", "fifo"):
            raise ValueError(f"policy must be lru or fifo, got {policy!r}")
        self.capacity, self.policy = capacity, policy
        self._d: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            v = self._d.get(key)
            if v is not None and self.policy == "lru":
                self._d.move_to_end(key)
            return v

    def put(self, key: str, value: dict[str, Any]) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            if key in self._d and self.policy == "lru":
                self._d.move_to_end(key)
            self._d[key] = value
            while len(self._d) > self.capacity:
                self._d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)


class L2Store(Protocol):
    def get(self, key: str) -> dict[str, Any] | None: ...
    def put(self, key: str, value: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class SqliteStore:
    """Persistent file; survives restarts. Expired rows are skipped on read and purged on write."""

    def __init__(self, path: str | Path, ttl: float) -> None:
        p = Path(path).expanduser()
        p.parent.mkdir(parents=True, exist_ok=True)
        self.ttl = ttl
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(p), check_same_thread=False, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                         "expires REAL NOT NULL)")
        self._db.commit()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM responses WHERE key=? AND expires>?",
                                   (key, time.time())).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)",
                             (key, json.dumps(value), now + self.ttl))
            self._db.execute("DELETE FROM responses WHERE expires<=?", (now,))
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RedisStore:
    """Redis with per-entry TTL; short socket timeouts so a dead Redis costs milliseconds, not seconds."""

    def __init__(self, url: str, ttl: float, retry_after: float = 30.0) -> None:
        import redis

        self.url, self.ttl, self.retry_after = url, ttl, retry_after
        self._r = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._down_until = 0.0
        self.ok = self._ping()

    def _ping(self) -> bool:
        try:
            self._r.ping()
            return True
        except Exception as e:
            self._degrade(e)
            return False

    def _degrade(self, e: Exception) -> None:
        log.warning("redis L2 cache at %s unreachable (%s): serving with L1 only for %.0f s",
                    _redact(self.url), type(e).__name__, self.retry_after)
        self._down_until = time.monotonic() + self.retry_after

    def _up(self) -> bool:
        return time.monotonic() >= self._down_until

    def get(self, key: str) -> dict[str, Any] | None:
        if not self._up():
            return None
        try:
            raw = self._r.get(f"llmspeed:resp:{key}")
        except Exception as e:
            self._degrade(e)
            return None
        return json.loads(raw) if raw else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        if not self._up():
            return
        try:
            self._r.set(f"llmspeed:resp:{key}", json.dumps(value), ex=max(1, int(self.ttl)))
        except Exception as e:
            self._degrade(e)

    def close(self) -> None:
        try:
            self._r.close()
        except Exception:
            pass


def _redact(url: str) -> str:
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def open_l2(spec: str, ttl: float) -> L2Store | None:
    if spec == "none":
        return None
    if spec.startswith("sqlite:"):
        return SqliteStore(spec[len("sqlite:"):], ttl)
    if spec.startswith(("redis://", "rediss://")):
        return RedisStore(spec, ttl)
    raise ValueError(f"unknown cache_l2 {spec!r}")


class ResponseCache:
    """Two levels; `get` returns (entry, "hit-l1" | "hit-l2" | "miss")."""

    def __init__(self, l1_size: int, policy: str, l2: L2Store | None) -> None:
        self.l1 = L1Cache(l1_size, policy)
        self.l2 = l2

    @property
    def enabled(self) -> bool:
        return self.l1.capacity > 0 or self.l2 is not None

    def get(self, key: str) -> tuple[dict[str, Any] | None, str]:
        v = self.l1.get(key)
        if v is not None:
            return v, "hit-l1"
        if self.l2 is not None:
            try:
                v = self.l2.get(key)
            except Exception as e:  # a broken L2 must never fail a request
                log.warning("L2 cache read failed: %s", e)
                v = None
            if v is not None:
                self.l1.put(key, v)
                return v, "hit-l2"
        return None, "miss"

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.l1.put(key, value)
        if self.l2 is not None:
            try:
                self.l2.put(key, value)
            except Exception as e:
                log.warning("L2 cache write failed: %s", e)

    def close(self) -> None:
        if self.l2 is not None:
            self.l2.close()


class SingleFlight:
    """Identical deterministic requests in flight at once run once: the first to `join` a key leads (runs it and
    calls `done(key, entry)`, entry None when it failed); the others get a future that resolves to that entry.
    Event-loop only (no locks): join and done run on the server's one asyncio loop."""

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[dict[str, Any] | None]] = {}

    def join(self, key: str) -> asyncio.Future[dict[str, Any] | None] | None:
        """None: the caller leads this key; else the leader's future (await it, shielded)."""
        f = self._flights.get(key)
        if f is not None:
            return f
        self._flights[key] = asyncio.get_running_loop().create_future()
        return None

    def done(self, key: str, entry: dict[str, Any] | None) -> None:
        f = self._flights.pop(key, None)
        if f is not None and not f.done():
            f.set_result(entry)

    def __len__(self) -> int:
        return len(self._flights)
