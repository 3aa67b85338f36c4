"""Prometheus metrics on a per-app registry, vLLM-style names (`llmspeed:time_to_first_token_seconds`)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from llmspeed.runtime.sequence import Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LAT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_TPOT = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5)


class _EngineCollector(Collector):
    """Gauges and counters from the engine's end-of-step snapshot, read at scrape time (no bookkeeping on
    the hot path, no reads of engine internals from the scraping thread)."""

    def __init__(self, loop: object) -> None:
        self.loop = loop  # EngineLoop

    def collect(self) -> Iterator[object]:
        lp = self.loop
        st = lp.stats()  # type: ignore[attr-defined]
        yield _gauge("llmspeed:num_requests_waiting", "requests queued for a batch slot", lp.num_waiting)  # type: ignore[attr-defined]
        yield _gauge("llmspeed:num_requests_running", "requests in the running batch", st.num_running)
        yield _gauge("llmspeed:kv_cache_blocks_used", "KV-cache blocks in use", st.kv_blocks_used)
        yield _gauge("llmspeed:kv_cache_blocks_total", "KV-cache blocks", st.kv_blocks_total)
        yield _gauge("llmspeed:kv_cache_usage_perc", "fraction of KV-cache blocks in use", st.kv_usage)
        yield _counter("llmspeed:prefix_cache_hits", "prompt tokens served from the prefix cache",
                       st.prefix_cache_hit_tokens)
        yield _counter("llmspeed:prefix_cache_queries", "prompt tokens looked up in the prefix cache",
                       st.prefix_cache_query_tokens)
        yield _counter("llmspeed:num_preemptions", "requests preempted for lack of KV blocks", st.num_preemptions)
        yield _counter("llmspeed:request_failures", "requests failed in the engine (the rest of their batch ran on)",
                       st.num_failed)
        if getattr(lp.engine, "spec", None) is not None:  # only a server with --draft has these (dashboard: n/a)
            yield _counter("llmspeed:spec_decode_num_draft_tokens", "speculative decoding: tokens proposed and verified",
                           st.spec_draft_tokens)
            yield _counter("llmspeed:spec_decode_num_accepted_tokens", "speculative decoding: proposed tokens accepted",
                           st.spec_accepted_tokens)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc)
    g.add_metric([], float(value))
    return g


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    c = CounterMetricFamily(name, doc)
    c.add_metric([], float(value))
    return c


class ServerMetrics:
    def __init__(self, engine_loop: object) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ttft = Histogram("llmspeed:time_to_first_token_seconds", "time to first token", buckets=_LAT, registry=r)
        self.tpot = Histogram("llmspeed:time_per_output_token_seconds", "mean time per output token after the first",
                              buckets=_TPOT, registry=r)
        self.e2e = Histogram("llmspeed:e2e_request_latency_seconds", "end-to-end request latency", buckets=_LAT,
                             registry=r)
        self.generated = Counter("llmspeed:generation_tokens", "generated tokens", registry=r)
        self.prompt_tokens = Counter("llmspeed:prompt_tokens", "prompt tokens of finished requests", registry=r)
        self.requests = Counter("llmspeed:request_success", "finished requests by finish reason", ["finished_reason"],
                                registry=r)
        self.rejected = Counter("llmspeed:requests_rejected", "requests refused by status code", ["status"], registry=r)
        self.cache = Counter("llmspeed:response_cache", "response-cache lookups by result", ["result"], registry=r)
        for lvl in ("hit-l1", "hit-l2", "miss", "coalesced"):
            self.cache.labels(lvl)
        r.register(_EngineCollector(engine_loop))

    def observe_finished(self, seq: Sequence) -> None:
        """Called from the engine thread when a request finishes."""
        tm = seq.timings
        n = len(seq.output_ids)
        self.requests.labels(seq.finish_reason or "unknown").inc()
        self.generated.inc(n)
        self.prompt_tokens.inc(len(seq.prompt_ids))
        if tm.first_token is not None:
            self.ttft.observe(tm.first_token - tm.arrival)
            if tm.finished is not None:
                self.e2e.observe(tm.finished - tm.arrival)
                if n > 1:
                    self.tpot.observe((tm.finished - tm.first_token) / (n - 1))

    def render(self) -> bytes:
        return generate_latest(self.registry)
