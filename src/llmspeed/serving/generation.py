"""From a prepared request to engine work and back: admission (429, 503 while draining), the response cache
with single-flight, non-streamed collection (one choice per prompt) and SSE streaming, with logprobs. The
engine itself is only reached through `EngineLoop` (one engine, many front ends).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from llmspeed.serving import schemas as S
from llmspeed.serving.config import ServerConfig
from llmspeed.serving.drain import Drain
from llmspeed.serving.engine_loop import Delta, EngineLoop
from llmspeed.serving.errors import APIError, error_body
from llmspeed.serving.logprobs import LegacyLogprobs, chat_logprobs, merge_legacy
from llmspeed.serving.metrics import ServerMetrics
from llmspeed.serving.prepare import Prepared, prepare
from llmspeed.serving.response_cache import ResponseCache, SingleFlight

log = logging.getLogger(__name__)


class ClientGone(Exception):
    """The client disconnected before its non-streamed response was ready."""


def _failed(error: str) -> str:
    return f"this request failed in the engine ({error}); other requests are unaffected"


def sse(obj: dict[str, Any] | str) -> bytes:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n".encode()


def _visible(seq: Any) -> int:
    """Output tokens that are part of the text (a final EOS is not)."""
    return len(seq.output_ids) - seq.ended_on_eos


class GenerationService:
    def __init__(self, llm: Any, cfg: ServerConfig, loop: EngineLoop, cache: ResponseCache,
                 metrics: ServerMetrics, aliases: frozenset[str], drain: Drain | None = None) -> None:
        self.llm, self.cfg, self.loop, self.cache, self.metrics = llm, cfg, loop, cache, metrics
        self.aliases, self.drain = aliases, drain
        self.flights = SingleFlight()
        self.identity = {"source": str(llm.source), "recipe": list(llm.recipe), "dtype": str(llm.dtype),
                         "arch": type(llm.model).__name__}

    # -- request -> engine input --------------------------------------------------------------------
    def prepare(self, req: S.CompletionRequest | S.ChatCompletionRequest, kind: str) -> Prepared:
        return prepare(req, kind, tokenizer=self.llm.tokenizer, vocab=self.llm.model.config.vocab_size,
                       window=self.loop.limits.max_request_tokens, aliases=self.aliases,
                       model_name=self.cfg.model_name, identity=self.identity, cache_enabled=self.cache.enabled)

    def _sequences(self, p: Prepared) -> list[Any]:
        try:
            return [self.loop.make_sequence(ids, p.params, p.seq_id(i)) for i, ids in enumerate(p.prompts)]
        except ValueError as e:
            raise APIError(400, str(e), None, "invalid_value") from None

    async def lookup(self, p: Prepared) -> tuple[dict[str, Any] | None, str]:
        """A cached entry ("hit-l1" / "hit-l2"), the entry of an identical request in flight ("coalesced"), or
        (None, "miss"): then this request leads its key's flight and must `settle` it."""
        if p.key is None:
            return None, "miss"
        entry, level = self.cache.get(p.key)
        if entry is None:
            while (flight := self.flights.join(p.key)) is not None:
                try:
                    entry = await asyncio.wait_for(asyncio.shield(flight), self.cfg.request_timeout)
                except TimeoutError:  # a leader that never settles (its stream was never read): run alone
                    break
                if entry is not None:
                    level = "coalesced"
                    break
            else:
                p.leader = True
        self.metrics.cache.labels(level).inc()
        return entry, level

    def settle(self, p: Prepared, entry: dict[str, Any] | None) -> None:
        """The leader is done: waiters get `entry` (None: it failed, they run themselves)."""
        if p.leader:
            p.leader = False
            self.flights.done(p.key, entry)  # type: ignore[arg-type]

    def admit(self, n: int = 1) -> None:
        if self.drain is not None and self.drain.draining:
            self.metrics.rejected.labels("503").inc()
            raise self.drain.refusal()
        limit = self.loop.limits.max_batch + self.cfg.max_queue
        if n > limit:
            raise APIError(400, f"{n} prompts in one request; this server takes at most {limit} at once",
                           "prompt", "invalid_value")
        if self.loop.num_in_flight + n > limit:
            self.metrics.rejected.labels("429").inc()
            raise APIError(429, f"server busy: {self.loop.num_in_flight} requests in flight (limit {limit}); "
                                "retry later", None, "rate_limit_exceeded", {"Retry-After": str(self.cfg.retry_after)})

    # -- results ------------------------------------------------------------------------------------
    def _echo(self, p: Prepared, seq: Any) -> tuple[str, dict[str, list[Any]] | None]:
        """The prompt as it starts an echoed choice: its text and, with logprobs, its legacy logprobs."""
        tok = self.llm.tokenizer
        if p.logprobs is None:
            return tok.decode(seq.prompt_ids, skip_special_tokens=False), None
        echo = LegacyLogprobs(tok, 0, skip_special_tokens=False)
        lps = echo.add(seq.prompt_ids, seq.prompt_logprobs or [None] * len(seq.prompt_ids), final=True)
        return echo.text, lps

    def _choice(self, p: Prepared, seq: Any, text: str, reason: str | None) -> dict[str, Any]:
        """One choice of the response (and of the cache entry): text, finish reason, logprobs."""
        n = 0 if p.no_output else _visible(seq)
        text = "" if p.no_output else text
        if p.kind == "chat":
            lps = None if p.logprobs is None else chat_logprobs(self.llm.tokenizer, seq.output_logprobs[:n],
                                                                 p.logprobs)
            return {"text": text, "finish_reason": reason, "logprobs": lps}
        prefix, echo_lps = self._echo(p, seq) if p.echo else ("", None)
        if p.logprobs is None:
            return {"text": prefix + text, "finish_reason": reason, "logprobs": None}
        n = 0 if p.no_output else len(seq.output_ids)  # a final EOS too (its string is ""): one entry per token
        out = LegacyLogprobs(self.llm.tokenizer, len(prefix)).add(seq.output_ids[:n], seq.output_logprobs[:n],
                                                                  final=True)
        return {"text": prefix + text, "finish_reason": reason, "logprobs": merge_legacy(echo_lps, out)}

    def _entry(self, p: Prepared, seqs: list[Any], choices: list[dict[str, Any]]) -> dict[str, Any]:
        n_out = 0 if p.no_output else sum(len(s.output_ids) for s in seqs)
        use = S.usage(sum(len(ids) for ids in p.prompts), n_out, sum(s.num_cached_prompt for s in seqs))
        return {"id": p.rid, "created": p.created, "choices": choices, "usage": use}

    def body_from_entry(self, kind: str, e: dict[str, Any]) -> dict[str, Any]:
        return S.full_body(kind, e["id"], e["created"], self.cfg.model_name, e["choices"], e["usage"])

    def _store(self, p: Prepared, entry: dict[str, Any]) -> None:
        if p.key is not None and all(c["finish_reason"] in ("stop", "length") for c in entry["choices"]):
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

    async def _collect(self, p: Prepared, seq: Any, q: asyncio.Queue[Delta], deadline: float,
                       gone: Callable[[], Awaitable[bool]] | None) -> dict[str, Any]:
        parts: list[str] = []
        while True:
            try:
                d = await self._next(q, deadline, gone)
            except TimeoutError:
                raise APIError(504, f"request timed out after {self.cfg.request_timeout:g} s", None,
                               "timeout") from None
            parts.append(d.text)
            if d.finished:
                if d.error:
                    raise APIError(500, _failed(d.error), None, "engine_error")
                return self._choice(p, seq, "".join(parts), d.finish_reason)

    async def run(self, p: Prepared, gone: Callable[[], Awaitable[bool]] | None = None) -> dict[str, Any]:
        """Non-streamed: generate every choice to the end (or timeout -> 504) and return the cache entry. `gone`
        polls for a client disconnect (then the request is aborted and its KV blocks freed)."""
        entry: dict[str, Any] | None = None
        seqs: list[Any] = []
        try:
            self.admit(len(p.prompts))
            seqs = self._sequences(p)
            qs = [self.loop.submit(s, self.cfg.request_timeout + 1.0) for s in seqs]
            deadline = time.monotonic() + self.cfg.request_timeout
            choices = await asyncio.gather(*(self._collect(p, s, q, deadline, gone) for s, q in zip(seqs, qs,
                                                                                                strict=True)))
            entry = self._entry(p, seqs, list(choices))
            self._store(p, entry)
            return entry
        finally:
            if entry is None:  # timeout, client gone (task cancelled), error: free the requests' blocks
                for s in seqs:
                    self.loop.cancel(s.seq_id)
            self.settle(p, entry)

    async def stream(self, p: Prepared, include_usage: bool) -> AsyncIterator[bytes]:
        """SSE chunks in OpenAI's format (several prompts: their chunks interleave, told apart by `index`); ends
        with `data: [DONE]` (after an error event if it failed)."""
        try:
            self.admit(len(p.prompts))  # raised before the response starts, so a 429 is a plain JSON error
            seqs = self._sequences(p)
        except BaseException:
            self.settle(p, None)
            raise
        q: asyncio.Queue[Delta] = asyncio.Queue()
        for s in seqs:
            self.loop.submit(s, self.cfg.request_timeout + 1.0, q)
        return self._stream_body(p, seqs, q, include_usage)

    def _stream_logprobs(self, p: Prepared, seq: Any, state: dict[str, Any], upto: int) -> Any:
        """Logprobs of the output tokens [state["n"], upto) for one chunk, in the request kind's format."""
        if p.logprobs is None or p.no_output:
            return None
        lo, state["n"] = state["n"], upto
        if p.kind == "chat":
            return chat_logprobs(self.llm.tokenizer, seq.output_logprobs[lo:upto], p.logprobs)
        return state["legacy"].add(seq.output_ids[lo:upto], seq.output_logprobs[lo:upto])

    async def _stream_body(self, p: Prepared, seqs: list[Any], q: asyncio.Queue[Delta],
                           include_usage: bool) -> AsyncIterator[bytes]:
        m, kind = self.cfg.model_name, p.kind
        deadline = time.monotonic() + self.cfg.request_timeout
        index = {s.seq_id: i for i, s in enumerate(seqs)}
        states: list[dict[str, Any]] = [{"n": 0, "legacy": LegacyLogprobs(self.llm.tokenizer), "parts": [],
                                         "first": True, "reason": None} for _ in seqs]
        left, done = len(seqs), False
        try:
            if kind == "chat":
                yield sse(S.chunk(kind, p.rid, p.created, m, "", None, first=True))
            while left:
                try:
                    d = await self._next(q, deadline)
                except TimeoutError:
                    yield sse(error_body(504, f"request timed out after {self.cfg.request_timeout:g} s", None,
                                         "timeout"))
                    yield sse("[DONE]")
                    return
                if d.error:
                    yield sse(error_body(500, _failed(d.error), None, "engine_error"))
                    yield sse("[DONE]")
                    return
                i = index.get(d.seq_id, 0)
                seq, st = seqs[i], states[i]
                if st["first"] and p.echo:  # the prompt (scored by the prefill that just ran) comes first
                    prefix, echo_lps = self._echo(p, seq)
                    st["legacy"].offset = len(prefix)
                    yield sse(S.chunk(kind, p.rid, p.created, m, prefix, None, index=i, logprobs=echo_lps))
                st["first"] = False
                text = "" if p.no_output else d.text
                upto = d.num_output if kind == "completion" or not d.finished else _visible(seq)
                if text:
                    st["parts"].append(text)
                    yield sse(S.chunk(kind, p.rid, p.created, m, text, None, index=i,
                                      logprobs=self._stream_logprobs(p, seq, st, upto)))
                if d.finished:
                    left -= 1
                    st["reason"] = d.finish_reason
                    lps = self._stream_logprobs(p, seq, st, upto) if st["n"] < upto else None
                    yield sse(S.chunk(kind, p.rid, p.created, m, None, d.finish_reason, index=i, logprobs=lps))
            done = True
            entry = self._entry(p, seqs, [self._choice(p, s, "".join(st["parts"]), st["reason"])
                                          for s, st in zip(seqs, states, strict=True)])
            if include_usage:
                yield sse(S.chunk(kind, p.rid, p.created, m, None, None, use=entry["usage"], no_choices=True))
            yield sse("[DONE]")
            self._store(p, entry)
            self.settle(p, entry)
        finally:
            if not done:  # client disconnected, timed out or failed: abort and free the blocks
                for s in seqs:
                    self.loop.cancel(s.seq_id)
            self.settle(p, None)

    async def replay(self, kind: str, e: dict[str, Any], include_usage: bool) -> AsyncIterator[bytes]:
        """A cached (or coalesced) response as an SSE stream: one chunk per choice with all of its text."""
        m = self.cfg.model_name
        for i, c in enumerate(e["choices"]):
            if kind == "chat":
                yield sse(S.chunk(kind, e["id"], e["created"], m, "", None, first=True, index=i))
            if c["text"] or c.get("logprobs"):
                yield sse(S.chunk(kind, e["id"], e["created"], m, c["text"], None, index=i, logprobs=c.get("logprobs")))
            yield sse(S.chunk(kind, e["id"], e["created"], m, None, c["finish_reason"], index=i))
        if include_usage:
            yield sse(S.chunk(kind, e["id"], e["created"], m, None, None, use=e["usage"], no_choices=True))
        yield sse("[DONE]")
