"""`llmspeed serve`: the OpenAI-compatible server (one engine per process; --replicas N behind a router)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from llmspeed.cli.common import DeviceOpt, DraftOpt, DtypeOpt, ModelOpt, ThreadsOpt, TpOpt, load_llm
from llmspeed.serving.config import SERVE_KV_CACHE_TOKENS, SERVE_MAX_BATCH, SERVE_MAX_BATCH_TOKENS, SERVE_MAX_QUEUE

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def default_sqlite() -> str:
    from llmspeed.util.cache import cache_path

    return f"sqlite:{cache_path('responses.sqlite')}"


def serve(
    model: str = ModelOpt,
    recipe: str = typer.Option(None, "--recipe", help="compress in memory first, e.g. int8"),
    dtype: str = DtypeOpt,
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    api_key: str = typer.Option(None, "--api-key", help="require 'Authorization: Bearer KEY' (or LLMSPEED_API_KEY)"),
    served_name: str = typer.Option(None, "--served-model-name", help="model id in /v1/models (default: --model)"),
    max_batch: int = typer.Option(SERVE_MAX_BATCH, "--max-batch", help="requests in the running batch"),
    max_batch_tokens: int = typer.Option(SERVE_MAX_BATCH_TOKENS, "--max-batch-tokens",
                                         help="prompt tokens per prefill step"),
    kv_cache_tokens: int = typer.Option(SERVE_KV_CACHE_TOKENS, "--kv-cache-tokens", help="KV-cache capacity in tokens"),
    max_queue: int = typer.Option(SERVE_MAX_QUEUE, "--max-queue", help="waiting requests beyond --max-batch; more get 429"),
    request_timeout: float = typer.Option(600.0, "--request-timeout", help="seconds per request"),
    cache_l1: int = typer.Option(1024, "--cache-l1", help="response-cache entries in memory (0 = off)"),
    cache_policy: str = typer.Option("lru", "--cache-policy", help="lru | fifo"),
    cache_l2: str = typer.Option("default", "--cache-l2",
                                 help="sqlite:PATH | redis://host:port/db | none (default: sqlite in the cache dir)"),
    cache_ttl: float = typer.Option(86400.0, "--cache-ttl", help="seconds an L2 entry lives"),
    drain_timeout: float = typer.Option(30.0, "--drain-timeout",
                                        help="seconds SIGTERM waits for in-flight requests before exiting"),
    replicas: int = typer.Option(1, "--replicas", help="engine worker processes behind a router"),
    lb: str = typer.Option("least-conn", "--lb", help="round-robin | least-conn | prefix-affinity"),
    backend: str = typer.Option("local", "--backend", help="local | ray (Ray Serve deployment on loopback)"),
    autoscale_min: int = typer.Option(0, "--autoscale-min", help="ray: min replicas (with --autoscale-max)"),
    autoscale_max: int = typer.Option(0, "--autoscale-max", help="ray: max replicas; > 0 turns on autoscaling"),
    ray_cpus: int = typer.Option(2, "--ray-cpus", help="ray: CPUs Ray may use"),
    reports: str = typer.Option(None, "--reports", help="directory of `llmspeed bench` reports shown on /dashboard"),
    threads: int = ThreadsOpt,
    tp: int = TpOpt,
    device: str = DeviceOpt,
    log_level: str = typer.Option("warning", "--log-level"),
    draft: str = DraftOpt,
    compile_mode: str = typer.Option(
        "background", "--compile",
        help="decode graphs: background (eager until each is compiled off the decode thread; cached on disk) | "
             "on (wait for each) | off"),
) -> None:
    """Serve the model over an OpenAI-compatible HTTP API (continuous batching, caches, metrics)."""
    from llmspeed.runtime.compiled import serving_compile
    from llmspeed.serving.auth import resolve_api_key
    from llmspeed.serving.config import LB_POLICIES, ServerConfig
    from llmspeed.serving.server import serve_forever

    serving_compile(None, compile_mode)  # a bad --compile fails before anything loads
    if backend not in ("local", "ray"):
        raise ValueError(f"--backend must be local or ray, got {backend!r}")
    if replicas < 1:
        raise ValueError(f"--replicas must be >= 1, got {replicas}")
    if tp < 1:
        raise ValueError(f"--tp must be >= 1, got {tp}")
    if tp > 1 and (replicas > 1 or backend != "local"):
        raise ValueError("--tp runs one engine over tensor-parallel ranks: use it without --replicas / --backend ray")
    if lb not in LB_POLICIES:
        raise ValueError(f"--lb must be one of {', '.join(LB_POLICIES)}, got {lb!r}")
    if not 0 < port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {port}")
    from llmspeed.runtime.spec.config import parse_draft

    parse_draft(draft)  # a bad --draft fails here, before any model or worker starts
    if draft and backend == "ray":
        raise ValueError("--draft is not supported with --backend ray yet; use the local backend (--replicas N)")
    key = resolve_api_key(api_key)
    if reports is not None and not Path(reports).expanduser().is_dir():
        raise ValueError(f"--reports must be an existing directory, got {reports!r}")
    l2 = default_sqlite() if cache_l2 == "default" else cache_l2
    name = served_name or model
    cfg = ServerConfig(model_name=name, api_key=key, max_queue=max_queue, request_timeout=request_timeout,
                       cache_l1=cache_l1, cache_policy=cache_policy, cache_l2=l2, cache_ttl=cache_ttl,
                       drain_timeout=drain_timeout, reports_dir=reports)
    engine = {"kv_cache_tokens": kv_cache_tokens, "max_batch": max_batch, "max_batch_tokens": max_batch_tokens}
    from llmspeed.models.spec import parse_model_spec

    parse_model_spec(model)  # the same --model values in every mode: one process, --replicas N, --backend ray
    if backend == "ray":
        _serve_ray(model, dtype, threads, recipe, cfg, replicas, autoscale_min, autoscale_max, ray_cpus, host, port,
                   engine, compile_mode)
        return
    if replicas > 1:
        parse_model_spec(model)  # a bad --model fails here, not in N crash-looping workers
        from llmspeed.serving.router import RouterConfig, create_router_app

        worker_args = ["--model", model, "--dtype", dtype, "--served-model-name", name,
                       "--max-batch", str(max_batch), "--max-batch-tokens", str(max_batch_tokens),
                       "--kv-cache-tokens", str(kv_cache_tokens), "--max-queue", str(max_queue),
                       "--request-timeout", str(request_timeout), "--cache-l1", str(cache_l1),
                       "--cache-policy", cache_policy, "--cache-l2", l2, "--cache-ttl", str(cache_ttl),
                       "--drain-timeout", str(drain_timeout), "--log-level", log_level]
        if recipe:
            worker_args += ["--recipe", recipe]
        if draft:
            worker_args += ["--draft", draft]
        if threads:
            worker_args += ["--threads", str(threads)]
        worker_args += ["--device", device, "--compile", compile_mode]
        env = {"LLMSPEED_API_KEY": key} if key else {}
        rcfg = RouterConfig(replicas=replicas, lb=lb, worker_args=tuple(worker_args), api_key=key, worker_env=env,
                            model=model, drain_timeout=drain_timeout)
        sys.stderr.write(f"llmspeed router on http://{host}:{port} -> {replicas} replicas ({lb})\n")
        serve_forever(create_router_app(rcfg), host, port, log_level)
        return

    from llmspeed.runtime.engine import EngineConfig
    from llmspeed.serving.app import create_app

    llm = load_llm(model, dtype, threads, recipe, tp, device, draft)
    if llm.tp is None and llm.device.type == "cpu":
        llm.set_compile(serving_compile(llm.options.compile, compile_mode))
    elif compile_mode == "on":
        raise ValueError("--compile on: compiled decode runs on the CPU in one process (not with --tp or CUDA)")
    llm.reset_engine(**EngineConfig(**engine).__dict__)
    sys.stderr.write(f"llmspeed serving {name} on http://{host}:{port} (max batch {max_batch}, "
                     f"KV {kv_cache_tokens} tokens, L2 {l2.split('@')[-1]})\n")
    try:
        serve_forever(create_app(llm, cfg), host, port, log_level)
    finally:
        llm.close()


def _serve_ray(model: str, dtype: str, threads: int | None, recipe: str | None, cfg: object, replicas: int,
               autoscale_min: int, autoscale_max: int, ray_cpus: int, host: str, port: int, engine: dict,
               compile_mode: str = "background") -> None:
    import signal
    import time

    from llmspeed.serving.ray_app import RayConfig, deploy, shutdown

    rcfg = RayConfig(replicas=replicas, min_replicas=autoscale_min, max_replicas=autoscale_max, num_cpus=ray_cpus,
                     cpus_per_replica=max(ray_cpus / max(replicas, autoscale_max, 1), 0.1), host=host, port=port,
                     engine=engine, compile=compile_mode)

    def _term(*_: object) -> None:
        raise KeyboardInterrupt

    try:
        deploy(model, dtype, threads, recipe, cfg, rcfg)  # type: ignore[arg-type]
        signal.signal(signal.SIGTERM, _term)  # after ray.init, which installs its own handler
        sys.stderr.write(f"llmspeed on Ray Serve at http://{host}:{port} ({replicas} replicas"
                         f"{f', autoscaling {autoscale_min}..{autoscale_max}' if rcfg.autoscaling else ''})\n")
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        shutdown()
