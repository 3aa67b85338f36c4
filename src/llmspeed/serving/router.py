"""`--replicas N`: N engine worker processes (each `llmspeed serve` on its own loopback port) behind a router.

The router checks health, takes a dead replica out of rotation and restarts it, retries non-streamed
requests on another replica when theirs dies (nothing lost), and ends a broken stream with an SSE error
event followed by `data: [DONE]` (never a hang). A draining replica (its /health says 503) leaves the
rotation, and a request it refuses with 503 "draining" goes to another replica. The router drains itself on
SIGTERM or `POST /admin/drain`: it stops admitting, sends SIGTERM to every replica (each finishes what it
admitted) and exits when they have. Its /metrics carries every replica's metrics with a `replica` label.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from llmspeed.serving.auth import install_auth
from llmspeed.serving.config import LB_POLICIES
from llmspeed.serving.drain import Drain
from llmspeed.serving.errors import error_body, error_response, install_error_handlers
from llmspeed.serving.fleet_metrics import render_fleet
from llmspeed.serving.load_balancer import AffinityConfig, Balancer, chat_tokenizer
from llmspeed.serving.server import bind_socket

log = logging.getLogger(__name__)
_FORWARD_HEADERS = ("content-type", "x-llmspeed-cache", "retry-after", "cache-control")


@dataclass(frozen=True)
class RouterConfig:
    replicas: int = 2
    lb: str = "least-conn"
    worker_args: tuple[str, ...] = ()  # `llmspeed serve` arguments for each worker (no --host/--port)
    api_key: str | None = None
    worker_env: dict[str, str] = field(default_factory=dict)
    health_interval: float = 1.0
    start_timeout: float = 300.0
    request_timeout: float = 600.0
    affinity: AffinityConfig = field(default_factory=AffinityConfig)
    model: str | None = None  # --model of the workers: the router loads its tokenizer for prefix affinity
    drain_timeout: float = 30.0  # SIGTERM / POST /admin/drain: seconds for the replicas to finish, then exit

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {self.replicas}")
        if self.lb not in LB_POLICIES:
            raise ValueError(f"lb must be one of {', '.join(LB_POLICIES)}, got {self.lb!r}")
        if self.drain_timeout < 0:
            raise ValueError(f"drain_timeout must be >= 0, got {self.drain_timeout}")
        if self.health_interval <= 0 or self.start_timeout <= 0:
            raise ValueError("health_interval and start_timeout must be > 0")


@dataclass
class Replica:
    index: int
    port: int = 0
    proc: subprocess.Popen | None = None
    healthy: bool = False
    in_flight: int = 0
    restarts: int = 0
    not_before: float = 0.0  # time.monotonic() before which a crashed replica is not restarted (backoff)
    fast_failures: int = 0  # consecutive deaths before ever becoming healthy
    served: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class ReplicaSet:
    def __init__(self, cfg: RouterConfig) -> None:
        self.cfg = cfg
        self.replicas = [Replica(i) for i in range(cfg.replicas)]
        tokenize = chat_tokenizer(cfg.model) if cfg.lb == "prefix-affinity" and cfg.model else None
        self.balancer = Balancer(cfg.lb, cfg.replicas, cfg.affinity, tokenize)

    def spawn(self, r: Replica) -> None:
        sock = bind_socket()  # reserve a free port, release it for the worker
        r.port = sock.getsockname()[1]
        sock.close()
        cmd = [sys.executable, "-m", "llmspeed.cli.main", "serve", *self.cfg.worker_args,
               "--host", "127.0.0.1", "--port", str(r.port), "--replicas", "1"]
        r.proc = subprocess.Popen(cmd, env=os.environ | self.cfg.worker_env, stdin=subprocess.DEVNULL)
        r.healthy = False
        log.info("replica %d: started pid %d on port %d", r.index, r.proc.pid, r.port)

    def stop_all(self) -> None:
        for r in self.replicas:
            if r.proc is not None and r.proc.poll() is None:
                r.proc.terminate()
        for r in self.replicas:
            if r.proc is not None:
                try:
                    r.proc.wait(10)
                except subprocess.TimeoutExpired:
                    r.proc.kill()
                    r.proc.wait(5)

    def alive(self) -> list[Replica]:
        return [r for r in self.replicas if r.proc is not None and r.proc.poll() is None]

    def drain_all(self) -> None:
        """SIGTERM every replica: each stops admitting, finishes what it admitted, exits."""
        for r in self.alive():
            r.healthy = False
            r.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]

    def healthy(self, exclude: set[int] | frozenset[int] = frozenset()) -> list[int]:
        return [r.index for r in self.replicas if r.healthy and r.index not in exclude]

    def pick(self, body: dict[str, Any] | None, exclude: set[int]) -> Replica:
        loads = {r.index: r.in_flight for r in self.replicas}
        return self.replicas[self.balancer.choose(self.healthy(exclude), loads, body)]

    def mark_dead(self, r: Replica) -> None:
        if r.healthy:
            log.warning("replica %d (port %d) out of rotation", r.index, r.port)
        r.healthy = False


async def _check(client: httpx.AsyncClient, rs: ReplicaSet, r: Replica, draining: bool = False) -> None:
    if draining:  # the router is going down: nothing is restarted or put back in rotation
        rs.mark_dead(r)
        return
    if r.proc is None or r.proc.poll() is not None:  # died: restart it (with backoff if it keeps dying)
        now = time.monotonic()
        if r.proc is not None and r.not_before == 0.0:
            r.fast_failures = r.fast_failures + 1 if not r.healthy else 0
            delay = min(30.0, 0.5 * 2 ** max(r.fast_failures - 1, 0)) if r.fast_failures else 0.0
            log.warning("replica %d exited with %s: restarting in %.1f s", r.index, r.proc.returncode, delay)
            r.restarts += 1
            r.not_before = now + delay
        rs.mark_dead(r)
        if now >= r.not_before:
            r.not_before = 0.0
            rs.spawn(r)
        return
    try:
        ok = (await client.get(f"{r.url}/health", timeout=2.0)).status_code == 200
    except httpx.HTTPError:
        ok = False
    if not ok:
        rs.mark_dead(r)
    elif not r.healthy:
        log.info("replica %d healthy on port %d", r.index, r.port)
        r.healthy = True
        r.fast_failures = 0


def create_router_app(cfg: RouterConfig) -> FastAPI:
    rs = ReplicaSet(cfg)
    reg = CollectorRegistry()
    retries = Counter("llmspeed_router:retries", "requests retried on another replica", registry=reg)
    routed = Counter("llmspeed_router:requests", "requests routed", ["replica"], registry=reg)
    restarts = Gauge("llmspeed_router:replica_restarts", "replica restarts", ["replica"], registry=reg)
    healthy_g = Gauge("llmspeed_router:healthy_replicas", "replicas in rotation", registry=reg)
    client = httpx.AsyncClient(timeout=httpx.Timeout(cfg.request_timeout, connect=5.0),
                               limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100))
    # work left while draining: requests being relayed, and replicas still finishing theirs
    drain = Drain(cfg.drain_timeout, lambda: sum(r.in_flight for r in rs.replicas) + len(rs.alive()))
    drain.on_begin.append(rs.drain_all)
    auth = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}

    async def health_loop() -> None:
        while True:
            await asyncio.gather(*(_check(client, rs, r, drain.draining) for r in rs.replicas))
            healthy_g.set(len(rs.healthy()))
            for r in rs.replicas:
                restarts.labels(str(r.index)).set(r.restarts)
            await asyncio.sleep(cfg.health_interval)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for r in rs.replicas:
            rs.spawn(r)
        task = asyncio.create_task(health_loop())
        t0 = time.monotonic()
        while not rs.healthy() and time.monotonic() - t0 < cfg.start_timeout:
            await asyncio.sleep(0.2)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.aclose()
            await asyncio.to_thread(rs.stop_all)

    app = FastAPI(title="llmspeed router", lifespan=lifespan)
    app.state.replicas, app.state.drain = rs, drain  # DrainingServer: SIGTERM -> drain.begin(), exit when done
    install_error_handlers(app)
    install_auth(app, cfg.api_key)

    def _headers(request: Request) -> dict[str, str]:
        return {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}

    async def _proxy(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else None
        stream = bool(body and body.get("stream") is True)
        tried: set[int] = set()
        while True:
            if drain.draining:
                raise drain.refusal()
            try:
                r = rs.pick(body, tried)
            except LookupError:
                return error_response(503, "no healthy replica available", None, "no_replica",
                                      {"Retry-After": "1"})
            tried.add(r.index)
            req = client.build_request("POST", f"{r.url}{request.url.path}", content=raw, headers=_headers(request))
            r.in_flight += 1
            try:
                resp = await client.send(req, stream=True)
            except httpx.TransportError:
                r.in_flight -= 1
                rs.mark_dead(r)
                retries.inc()
                continue
            if resp.status_code == 503 and resp.headers.get("content-type", "").startswith("application/json"):
                try:
                    code = json.loads(await resp.aread()).get("error", {}).get("code")
                except (ValueError, AttributeError, httpx.TransportError):
                    code = None
                if code == "draining":  # it admitted nothing: take it out of rotation, send the request elsewhere
                    r.in_flight -= 1
                    await resp.aclose()
                    rs.mark_dead(r)
                    retries.inc()
                    continue
            routed.labels(str(r.index)).inc()
            hdrs = {k: v for k, v in resp.headers.items() if k.lower() in _FORWARD_HEADERS}
            hdrs["x-llmspeed-replica"] = str(r.index)
            if stream and resp.status_code == 200:
                return StreamingResponse(_relay(resp, r), status_code=200, headers=hdrs)
            try:
                content = await resp.aread()
            except httpx.TransportError:  # died mid-response: nothing was sent yet, retry elsewhere
                rs.mark_dead(r)
                retries.inc()
                continue
            finally:
                r.in_flight -= 1
                await resp.aclose()
            r.served += 1
            return Response(content, status_code=resp.status_code, headers=hdrs)

    async def _relay(resp: httpx.Response, r: Replica) -> AsyncIterator[bytes]:
        try:
            async for piece in resp.aiter_raw():
                yield piece
        except httpx.TransportError as e:
            rs.mark_dead(r)
            msg = f"replica {r.index} failed mid-stream ({type(e).__name__}); retry the request"
            yield f"data: {json.dumps(error_body(500, msg, None, 'replica_failed'))}\n\ndata: [DONE]\n\n".encode()
        finally:
            r.in_flight -= 1
            r.served += 1
            await resp.aclose()

    app.post("/v1/completions")(_proxy)
    app.post("/v1/chat/completions")(_proxy)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        for i in rs.healthy():
            try:
                resp = await client.get(f"{rs.replicas[i].url}/v1/models", headers=_headers(request))
                return Response(resp.content, resp.status_code, media_type="application/json")
            except httpx.TransportError:
                rs.mark_dead(rs.replicas[i])
        return error_response(503, "no healthy replica available", None, "no_replica")

    @app.post("/admin/drain", summary="Drain the fleet: stop admitting, let replicas finish, exit (needs --api-key)")
    async def admin_drain() -> Response:
        if not cfg.api_key:
            return error_response(403, "draining over HTTP needs --api-key (or send SIGTERM)", None, "forbidden")
        started = drain.begin("POST /admin/drain")
        return JSONResponse({"status": "draining", "started": started, "timeout_s": cfg.drain_timeout}, 202)

    @app.get("/health")
    async def health() -> Response:
        if drain.draining:
            return error_response(503, "draining: not admitting new requests", None, "draining", {"Retry-After": "1"})
        info = [{"index": r.index, "port": r.port, "healthy": r.healthy, "in_flight": r.in_flight,
                 "restarts": r.restarts, "served": r.served} for r in rs.replicas]
        status = 200 if rs.healthy() else 503
        return JSONResponse({"status": "ok" if status == 200 else "unhealthy", "replicas": info}, status)

    async def _replica_metrics(r: Replica) -> tuple[str, str | None]:
        try:
            resp = await client.get(f"{r.url}/metrics", headers=auth, timeout=5.0)
            return str(r.index), resp.text if resp.status_code == 200 else None
        except httpx.HTTPError:
            return str(r.index), None

    @app.get("/metrics")
    async def metrics() -> Response:
        """The router's counters, then each live replica's metrics with a `replica` label (one scrape, whole fleet)."""
        got = await asyncio.gather(*(_replica_metrics(r) for r in rs.alive() if r.port))
        texts = {i: t for i, t in got if t is not None}
        try:
            body = render_fleet(reg, texts)
        except ValueError:  # a replica answered something that is not Prometheus text: the router's own only
            log.warning("unparsable replica metrics", exc_info=True)
            body = generate_latest(reg)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
