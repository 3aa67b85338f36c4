"""`llmspeed serve --backend ray`: the same FastAPI app (`create_app`) as a Ray Serve deployment.

Each Ray replica builds its own LLM and engine from a picklable builder (evaluated on the replica), so
the serving code is exactly the local one; Ray adds replica placement, its HTTP proxy and autoscaling.
Ray is local and loopback-only here: `ray.init(num_cpus=..., include_dashboard=False,
_node_ip_address="127.0.0.1")`, HTTP proxy on 127.0.0.1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from llmspeed.serving.config import SERVE_ENGINE_DEFAULTS, SERVE_MAX_BATCH, ServerConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayConfig:
    replicas: int = 1
    min_replicas: int = 0  # > 0 together with max_replicas > min_replicas turns on autoscaling
    max_replicas: int = 0
    target_ongoing_requests: float = 8.0  # autoscaling target per replica
    num_cpus: int = 2  # CPUs Ray may use on this machine
    cpus_per_replica: float = 1.0
    host: str = "127.0.0.1"
    port: int = 8000
    app_name: str = "llmspeed"
    engine: dict[str, Any] = field(default_factory=dict)  # EngineConfig fields over `llmspeed serve`'s defaults
    compile: str = "background"  # the decode graphs, as `serve --compile` (runtime.compiled.serving_compile)

    def __post_init__(self) -> None:
        from llmspeed.runtime.compiled import SERVE_COMPILE

        if self.compile not in SERVE_COMPILE:
            raise ValueError(f"compile must be one of {', '.join(SERVE_COMPILE)}, got {self.compile!r}")
        if self.replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {self.replicas}")
        if self.autoscaling and not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError("autoscaling needs 1 <= min_replicas <= max_replicas")
        if self.num_cpus <= 0 or self.cpus_per_replica <= 0:
            raise ValueError("num_cpus and cpus_per_replica must be > 0")
        if self.host not in ("127.0.0.1", "localhost"):
            raise ValueError("the Ray backend binds to loopback only (127.0.0.1)")

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas > 0

    def autoscaling_config(self) -> dict[str, Any]:
        return {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests}


def build_app(model: str, dtype: str, threads: int | None, recipe: str | None, engine: dict[str, Any],
              server: ServerConfig, compile_mode: str = "background") -> Any:
    """Runs on each Ray replica: load the model, build the engine, return the FastAPI app."""
    import llmspeed
    from llmspeed.runtime.compiled import serving_compile
    from llmspeed.runtime.engine import EngineConfig
    from llmspeed.serving.app import create_app

    ecfg = EngineConfig(**(SERVE_ENGINE_DEFAULTS | engine))
    llm = llmspeed.load(model, dtype=dtype, threads=threads, engine_config=ecfg, recipe=recipe)
    llm.set_compile(serving_compile(llm.options.compile, compile_mode))
    return create_app(llm, server)


def deploy(model: str, dtype: str, threads: int | None, recipe: str | None, server: ServerConfig,
           cfg: RayConfig) -> Any:
    """Start local Ray + Serve on loopback and deploy the app; returns the ingress handle."""
    import ray
    from ray import serve

    ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             ignore_reinit_error=True, log_to_driver=False)
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    engine = dict(cfg.engine)

    def builder() -> Any:  # a plain function: Ray Serve calls it on each replica to get the ASGI app
        return build_app(model, dtype, threads, recipe, engine, server, cfg.compile)

    max_batch = int(cfg.engine.get("max_batch", SERVE_MAX_BATCH))
    opts: dict[str, Any] = {"name": cfg.app_name, "ray_actor_options": {"num_cpus": cfg.cpus_per_replica},
                            "max_ongoing_requests": max_batch + server.max_queue}
    if cfg.autoscaling:
        opts["autoscaling_config"] = cfg.autoscaling_config()
    else:
        opts["num_replicas"] = cfg.replicas
    deployment = serve.deployment(serve.ingress(builder)(), **opts)
    handle = serve.run(deployment.bind(), name=cfg.app_name, route_prefix="/")
    log.info("ray serve: %s on http://%s:%d", cfg.app_name, cfg.host, cfg.port)
    return handle


def shutdown() -> None:
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()
