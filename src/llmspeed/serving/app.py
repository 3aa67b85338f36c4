"""`create_app(llm, ServerConfig)`: the OpenAI-compatible FastAPI app over the LLM's one engine."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from llmspeed.serving import schemas as S
from llmspeed.serving.auth import install_auth
from llmspeed.serving.config import ServerConfig
from llmspeed.serving.dashboard_routes import mount_dashboard
from llmspeed.serving.drain import Drain
from llmspeed.serving.engine_loop import EngineLoop
from llmspeed.serving.errors import error_response, install_error_handlers
from llmspeed.serving.generation import ClientGone, GenerationService
from llmspeed.serving.metrics import CONTENT_TYPE, ServerMetrics
from llmspeed.serving.response_cache import ResponseCache, open_l2
from llmspeed.serving.tokenize import install_tokenize_routes

log = logging.getLogger(__name__)
CACHE_HEADER = "x-llmspeed-cache"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def model_details(llm: Any) -> dict[str, Any]:
    """What is served: the `--model` source, the recipe applied, and what that source means."""
    from llmspeed.models.spec import describe

    try:
        what = describe(llm.source) if llm.source else ""
    except (OSError, ValueError):
        what = ""
    return {"source": llm.source, "recipe": list(llm.recipe), "description": what}


def create_app(llm: Any, config: ServerConfig | None = None) -> FastAPI:
    """Build the app; the engine thread starts with the app (lifespan) and stops with it."""
    cfg = config or ServerConfig()
    engine_loop = EngineLoop(llm.engine)
    metrics = ServerMetrics(engine_loop)
    engine_loop.on_finish = metrics.observe_finished
    cache = ResponseCache(cfg.cache_l1, cfg.cache_policy, None)
    aliases = frozenset({cfg.model_name, str(llm.source)} - {""})
    drain = Drain(cfg.drain_timeout, lambda: engine_loop.num_in_flight, cfg.retry_after)
    service = GenerationService(llm, cfg, engine_loop, cache, metrics, aliases, drain)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        cache.l2 = open_l2(cfg.cache_l2, cfg.cache_ttl)  # opened here: no I/O at app construction
        engine_loop.start()
        log.info("serving %s (engine thread started)", cfg.model_name)
        try:
            yield
        finally:
            engine_loop.stop()
            cache.close()

    app = FastAPI(title="llmspeed", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible API over llmspeed's continuous-batching engine")
    app.state.engine_loop, app.state.metrics, app.state.cache, app.state.service = engine_loop, metrics, cache, service
    app.state.drain = drain  # the server (DrainingServer) turns SIGTERM into drain.begin() and exits when done
    install_error_handlers(app)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > cfg.max_body_bytes:
            return error_response(413, f"request body of {size} bytes exceeds the limit of {cfg.max_body_bytes}",
                                  None, "request_too_large")
        return await call_next(request)

    install_auth(app, cfg.api_key)  # added last = runs first: unauthenticated requests never reach the rest

    async def _serve(req: S.CompletionRequest | S.ChatCompletionRequest, kind: str, request: Request) -> Response:
        if drain.draining:
            raise drain.refusal()
        p = service.prepare(req, kind)
        entry, level = await service.lookup(p)  # a hit, an identical request's result (single-flight), or a miss
        headers = {CACHE_HEADER: level}
        if req.stream:
            if entry is not None:
                return StreamingResponse(service.replay(kind, entry, req.include_usage), media_type="text/event-stream",
                                         headers=SSE_HEADERS | headers)
            body = await service.stream(p, req.include_usage)
            return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS | headers)
        if entry is None:
            try:
                entry = await service.run(p, request.is_disconnected)
            except ClientGone:
                return Response(status_code=499)  # nobody is listening; the request was aborted
        return JSONResponse(service.body_from_entry(kind, entry), headers=headers)

    @app.post("/v1/completions", summary="Text completion (OpenAI format; SSE when stream=true)")
    async def completions(req: S.CompletionRequest, request: Request) -> Response:
        return await _serve(req, "completion", request)

    @app.post("/v1/chat/completions", summary="Chat completion (OpenAI format; SSE when stream=true)")
    async def chat_completions(req: S.ChatCompletionRequest, request: Request) -> Response:
        return await _serve(req, "chat", request)

    details = model_details(llm)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return S.models_body(cfg.model_name, details=details)

    install_tokenize_routes(app, llm, aliases, cfg.model_name, engine_loop.limits.max_model_len)

    @app.post("/admin/drain", summary="Stop admitting, finish in-flight requests, then exit (needs --api-key)")
    async def admin_drain() -> Response:
        if not cfg.api_key:
            return error_response(403, "draining over HTTP needs the server to run with --api-key (or send SIGTERM)",
                                  None, "forbidden")
        started = drain.begin("POST /admin/drain")
        return JSONResponse({"status": "draining", "started": started, "in_flight": engine_loop.num_in_flight,
                             "timeout_s": cfg.drain_timeout}, 202)

    @app.get("/health")
    async def health() -> Response:
        if drain.draining:
            return error_response(503, "draining: not admitting new requests", None, "draining",
                                  {"Retry-After": str(cfg.retry_after)})
        if not engine_loop.alive:
            return error_response(503, "engine thread is not running", None, "unhealthy")
        return JSONResponse({"status": "ok", "running": engine_loop.num_running, "waiting": engine_loop.num_waiting})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    mount_dashboard(app, metrics, model_name=cfg.model_name, auth=bool(cfg.api_key), reports_dir=cfg.reports_dir)
    return app
