"""`ServerConfig`: every knob of `llmspeed serve`, frozen and validated."""

from __future__ import annotations

from dataclasses import dataclass

# `llmspeed serve`'s engine defaults: the one place for them (the serve CLI, the Ray backend and `llmspeed auto`'s
# "server defaults" baseline read them; runtime's EngineConfig keeps its own library defaults for `llmspeed.load`).
SERVE_MAX_BATCH = 16  # --max-batch: requests in the running batch
SERVE_MAX_BATCH_TOKENS = 2048  # --max-batch-tokens: prompt tokens per prefill step
SERVE_KV_CACHE_TOKENS = 16384  # --kv-cache-tokens: KV-cache capacity in tokens
SERVE_MAX_QUEUE = 64  # --max-queue
SERVE_ENGINE_DEFAULTS: dict[str, int] = {"kv_cache_tokens": SERVE_KV_CACHE_TOKENS, "max_batch": SERVE_MAX_BATCH,
                                         "max_batch_tokens": SERVE_MAX_BATCH_TOKENS}

CACHE_POLICIES = ("lru", "fifo")
LB_POLICIES = ("round-robin", "least-conn", "prefix-affinity")


@dataclass(frozen=True)
class ServerConfig:
    model_name: str = "llmspeed"  # the id /v1/models reports; requests may also name the --model value
    api_key: str | None = None
    max_queue: int = SERVE_MAX_QUEUE  # requests waiting for a batch slot beyond --max-batch; more -> 429
    request_timeout: float = 600.0  # seconds per request; then aborted (504, or an SSE error event)
    cache_l1: int = 1024  # entries in the in-process response cache (0 = off)
    cache_policy: str = "lru"
    cache_l2: str = "none"  # "none", "sqlite:PATH" or "redis://host:port/db"
    cache_ttl: float = 86400.0  # seconds an L2 entry lives
    max_body_bytes: int = 1 << 20  # larger request bodies -> 413
    retry_after: int = 1  # seconds, in the Retry-After header of a 429 (and of a 503 while draining)
    drain_timeout: float = 30.0  # seconds SIGTERM / POST /admin/drain waits for in-flight requests, then exit
    reports_dir: str | None = None  # /dashboard lists the bench reports under it (None: no report listing)

    def __post_init__(self) -> None:
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {self.max_queue}")
        if self.request_timeout <= 0:
            raise ValueError(f"request_timeout must be > 0, got {self.request_timeout}")
        if self.cache_l1 < 0:
            raise ValueError(f"cache_l1 must be >= 0, got {self.cache_l1}")
        if self.cache_policy not in CACHE_POLICIES:
            raise ValueError(f"cache_policy must be one of {', '.join(CACHE_POLICIES)}, got {self.cache_policy!r}")
        l2 = self.cache_l2
        if not (l2 == "none" or l2.startswith("sqlite:") or l2.startswith(("redis://", "rediss://"))):
            raise ValueError(f"cache_l2 must be none, sqlite:PATH or redis://host:port/db, got {l2!r}")
        if l2.startswith("sqlite:") and not l2[len("sqlite:"):]:
            raise ValueError("cache_l2 sqlite: needs a path, e.g. sqlite:~/.cache/llmspeed/responses.sqlite")
        if self.cache_ttl <= 0:
            raise ValueError(f"cache_ttl must be > 0, got {self.cache_ttl}")
        if self.drain_timeout < 0:
            raise ValueError(f"drain_timeout must be >= 0, got {self.drain_timeout}")
        if self.reports_dir is not None and not self.reports_dir:
            raise ValueError("reports_dir must be a directory path or None, got ''")
        if self.max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be > 0, got {self.max_body_bytes}")
