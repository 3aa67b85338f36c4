"""From a validated OpenAI request to engine work and back: prompt building, limits, admission (429),
the response cache, non-streamed collection and SSE streaming. The engine itself is only reached through
`EngineLoop` (one engine, many front ends).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from llmspeed.runtime.sequence import SamplingParams
from llmspeed.serving import schemas as S
from llmspeed.serving.config import ServerConfig
from llmspeed.serving.engine_loop import Delta, EngineLoop
from llmspeed.serving.errors import APIError, error_body
from llmspeed.serving.metrics import ServerMetrics
from llmspeed.serving.response_cache import ResponseCache, cache_key

log = logging.getLogger(__name__)
DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default for /v1/completions


class ClientGone(Exception):
    """The client disconnected before its non-streamed response was ready."""


@dataclass
class Prepared:
    kind: str  # "chat" | "completion"
    rid: str
    created: int
    prompt_ids: list[int]
    params: SamplingParams
    key: str | None  # response-cache key, None when the request is not deterministic


def sampling_key(params: SamplingParams) -> dict[str, Any]:
    """The response-cache view of the sampling parameters, after normalisation (top_p=1e-300 is greedy)."""
    return {"max_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": params.top_p,
            "top_k": params.top_k, "seed": params.seed, "stop": list(params.stop), "ignore_eos": params.ignore_eos}


def _failed(error: str) -> str:
    return f"this request failed in the engine ({error}); other requests are unaffected"


def sse(obj: dict[str, Any] | str) -> bytes:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n".encode()


class GenerationService:
    def __init__(self, llm: Any, cfg: ServerConfig, loop: EngineLoop, cache: ResponseCache,
                 metrics: ServerMetrics, aliases: frozenset[str]) -> None:
        self.llm, self.cfg, self.loop, self.cache, self.metrics = llm, cfg, loop, cache, metrics
        self.aliases = aliases
        self.identity = {"source": str(llm.source), "recipe": list(llm.recipe), "dtype": str(llm.dtype),
                         "arch": type(llm.model).__name__}

    # -- request -> engine input --------------------------------------------------------------------
    def prepare(self, req: S.CompletionRequest | S.ChatCompletionRequest, kind: str) -> Prepared:
        bad = req.nonfinite_field()
        if bad is not None:
            raise APIError(400, f"{bad} must be a finite number (NaN and infinity are not allowed)", bad,
                           "invalid_value")
        bad = req.unsupported_field()
        if bad is not None:
            raise APIError(400, f"unsupported field '{bad}': llmspeed does not implement it (see README, Serving)",
                           bad, "unsupported_parameter")
        if req.model is not None and req.model not in self.aliases:
            raise APIError(404, f"model '{req.model}' does not exist; this server serves '{self.cfg.model_name}'",
                           "model", "model_not_found")
        tok = self.llm.tokenizer
        try:
            if isinstance(req, S.ChatCompletionRequest):
                messages: Any = req.normalized_messages()
                ids = tok.encode(tok.apply_chat_template(messages))
                limit, prompt_repr = req.token_limit, messages
            else:
                ids = tok.encode(req.prompt)
                limit, prompt_repr = req.max_tokens, req.prompt
        except ValueError as e:
            raise APIError(400, str(e), "messages" if kind == "chat" else "prompt") from None
        window = self.loop.limits.max_request_tokens
        if len(ids) >= window:
            raise APIError(400, f"prompt has {len(ids)} tokens; the context window is {window}",
                           "messages" if kind == "chat" else "prompt", "context_length_exceeded")
        if limit is None:
            limit = DEFAULT_COMPLETION_TOKENS if kind == "completion" else window - len(ids)
        if len(ids) + limit > window:
            raise APIError(400, f"prompt ({len(ids)} tokens) + max_tokens ({limit}) exceeds the context window "
                                f"({window} tokens)", "max_tokens", "context_length_exceeded")
        try:
            params = SamplingParams(max_new_tokens=limit, temperature=req.temperature, top_k=req.top_k,
                                    top_p=req.top_p, seed=req.seed, stop=tuple(req.stop or ()),
                                    ignore_eos=req.ignore_eos)
        except ValueError as e:  # the schema already checks these; this is the library's own guard
            raise APIError(400, str(e), None, "invalid_value") from None
        key = None
        if self.cache.enabled and params.deterministic:
            key = cache_key(self.identity, kind, prompt_repr, sampling_key(params))
        return Prepared(kind, S.new_id(kind), int(time.time()), ids, params, key)

    def _sequence(self, p: Prepared) -> Any:
        try:
            return self.loop.make_sequence(p.prompt_ids, p.params, p.rid)
        except ValueError as e:
            raise APIError(400, str(e), None, "invalid_value") from None

    def lookup(self, p: Prepared) -> tuple[dict[str, Any] | None, str]:
        if p.key is None:
            return None, "miss"
        entry, level = self.cache.get(p.key)
        self.metrics.cache.labels(level).inc()
        return entry, level

    def admit(self) -> None:
        limit = self.loop.limits.max_batch + self.cfg.max_queue
        if self.loop.num_in_flight >= limit:
            self.metrics.rejected.labels("429").inc()
            raise APIError(429, f"server busy: {self.loop.num_in_flight} requests in flight (limit {limit}); "
                                "retry later", None, "rate_limit_exceeded", {"Retry-After": str(self.cfg.retry_after)})

    # -- results ------------------------------------------------------------------------------------
    def _entry(self, p: Prepared, text: str, reason: str | None, n_out: int, cached_prompt: int) -> dict[str, Any]:
        return {"id": p.rid, "created": p.created, "text": text, "finish_reason": reason,
                "usage": S.usage(len(p.prompt_ids), n_out, cached_prompt)}

    def body_from_entry(self, kind: str, e: dict[str, Any]) -> dict[str, Any]:
        return S.full_body(kind, e["id"], e["created"], self.cfg.model_name, e["text"], e["finish_reason"],
                           e["usage"])

    def _store(self, p: Prepared, entry: dict[str, Any]) -> None:
        if p.key is not None and entry["finish_reason"] in ("stop", "length"):
            self.cache.put(p.key, entry)

    async def _next(self, q: asyncio.Queue[Delta], deadline: float,
                    gone: Callable[[], Awaitable[bool]] | None = None) -> Delta:
        """The next delta; TimeoutError past the deadline, ClientGone when `gone()` says the client left."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            try:
                return await asyncio.wait_for(q.get(), min(left, 0.5) if gone is not None else left)
            except TimeoutError:
                if gone is not None and await gone():
                    raise ClientGone from None

    async def run(self, p: Prepared, gone: Callable[[], Awaitable[bool]] | None = None) -> dict[str, Any]:
        """Non-streamed: generate to the end (or timeout -> 504) and return the cache entry. `gone` polls for
        a client disconnect (then the request is aborted and its KV blocks freed)."""
        self.admit()
        seq = self._sequence(p)
        q = self.loop.submit(seq, self.cfg.request_timeout + 1.0)
        deadline = time.monotonic() + self.cfg.request_timeout
        parts: list[str] = []
        done = False
        try:
            while True:
                try:
                    d = await self._next(q, deadline, gone)
                except TimeoutError:
                    raise APIError(504, f"request timed out after {self.cfg.request_timeout:g} s", None,
                                   "timeout") from None
                parts.append(d.text)
                if d.finished:
                    done = True
                    if d.error:
                        raise APIError(500, _failed(d.error), None, "engine_error")
                    entry = self._entry(p, "".join(parts), d.finish_reason, d.num_output, seq.num_cached_prompt)
                    self._store(p, entry)
                    return entry
        finally:
            if not done:  # timeout, client gone (task cancelled), error: free the request's blocks
                self.loop.cancel(p.rid)

    async def stream(self, p: Prepared, include_usage: bool) -> AsyncIterator[bytes]:
        """SSE chunks in OpenAI's format; ends with `data: [DONE]` (after an error event if it failed)."""
        self.admit()  # raised before the response starts, so a 429 is a plain JSON error
        seq = self._sequence(p)
        q = self.loop.submit(seq, self.cfg.request_timeout + 1.0)
        return self._stream_body(p, seq, q, include_usage)

    async def _stream_body(self, p: Prepared, seq: Any, q: asyncio.Queue[Delta],
                           include_usage: bool) -> AsyncIterator[bytes]:
        m, kind = self.cfg.model_name, p.kind
        deadline = time.monotonic() + self.cfg.request_timeout
        parts: list[str] = []
        done = False
        try:
            if kind == "chat":
                yield sse(S.chunk(kind, p.rid, p.created, m, "", None, first=True))
            while True:
                try:
                    d = await self._next(q, deadline)
                except TimeoutError:
                    yield sse(error_body(504, f"request timed out after {self.cfg.request_timeout:g} s", None,
                                         "timeout"))
                    yield sse("[DONE]")
                    return
                if d.error:
                    done = True
                    yield sse(error_body(500, _failed(d.error), None, "engine_error"))
                    yield sse("[DONE]")
                    return
                if d.text:
                    parts.append(d.text)
                    yield sse(S.chunk(kind, p.rid, p.created, m, d.text, None))
                if d.finished:
                    done = True
                    yield sse(S.chunk(kind, p.rid, p.created, m, None, d.finish_reason))
                    entry = self._entry(p, "".join(parts), d.finish_reason, d.num_output, seq.num_cached_prompt)
                    if include_usage:
                        yield sse(S.chunk(kind, p.rid, p.created, m, None, None, use=entry["usage"], no_choices=True))
                    yield sse("[DONE]")
                    self._store(p, entry)
                    return
        finally:
            if not done:  # client disconnected or timed out: abort and free the blocks
                self.loop.cancel(p.rid)

    async def replay(self, kind: str, e: dict[str, Any], include_usage: bool) -> AsyncIterator[bytes]:
        """A cached response as an SSE stream."""
        m = self.cfg.model_name
        if kind == "chat":
            yield sse(S.chunk(kind, e["id"], e["created"], m, "", None, first=True))
        if e["text"]:
            yield sse(S.chunk(kind, e["id"], e["created"], m, e["text"], None))
        yield sse(S.chunk(kind, e["id"], e["created"], m, None, e["finish_reason"]))
        if include_usage:
            yield sse(S.chunk(kind, e["id"], e["created"], m, None, None, use=e["usage"], no_choices=True))
        yield sse("[DONE]")
