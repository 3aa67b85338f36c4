"""The router's view of the fleet: each replica's Prometheus metrics, merged into one exposition with a
`replica` label on every sample, so one scrape of the router sees every engine (queue, KV use, caches, TTFT)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector


def label_replicas(texts: dict[str, str]) -> list[Metric]:
    """{replica label: its /metrics text} -> metric families whose samples carry `replica` (one family per name,
    so HELP/TYPE appear once)."""
    merged: dict[str, Metric] = {}
    for replica, text in texts.items():
        for fam in text_string_to_metric_families(text):
            m = merged.get(fam.name)
            if m is None:
                m = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
            for s in fam.samples:
                m.add_sample(s.name, {**s.labels, "replica": replica}, s.value, s.timestamp, s.exemplar)
    return list(merged.values())


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def render_fleet(router: CollectorRegistry, texts: dict[str, str]) -> bytes:
    """The router's own metrics followed by every replica's, labelled."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Families(label_replicas(texts)))
    return generate_latest(router) + generate_latest(reg)
