"""One /metrics view over several seqlens processes: scrape each worker's own /metrics at
scrape time and merge the samples (counters and histograms add up; gauges add up or take
the lowest/highest, per what they mean). Used by the ``workers`` supervisor."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

# Gauges whose processes' values add up; other gauges take the lowest value (a model is ready
# only when ready in every process) except those listed as highest.
SUM_GAUGES = frozenset({"seqlens_inflight_requests", "process_resident_memory_bytes", "process_virtual_memory_bytes",
                        "process_open_fds"})
MAX_GAUGES = frozenset({"seqlens_model_load_seconds", "process_max_fds", "python_info"})


def merge(texts: Iterable[str]) -> list[Metric]:
    """Exposition texts of several processes -> merged metric families."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            if fam.name not in families:
                families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                values[fam.name] = {}
            combine = _combiner(fam.name, fam.type)
            slot = values[fam.name]
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                value = s.value
                if s.name.endswith("_created"):  # when the series began: the earliest
                    slot[key] = min(slot.get(key, value), value)
                elif key in slot:
                    slot[key] = combine(slot[key], value)
                else:
                    slot[key] = value
    for name, fam in families.items():
        for (sample, labels), value in values[name].items():
            fam.add_sample(sample, dict(labels), value)
    return list(families.values())


def _combiner(name: str, kind: str) -> Callable[[float, float], float]:
    if kind != "gauge" or name in SUM_GAUGES:
        return lambda a, b: a + b
    if name in MAX_GAUGES:
        return max
    return min


class MergedCollector(Collector):
    """Scrapes the workers' /metrics (URLs from ``urls()``) on every collect."""

    def __init__(self, urls: Callable[[], list[str]], timeout_s: float = 5.0) -> None:
        self._urls = urls
        self._timeout = timeout_s

    def collect(self) -> Iterable[Metric]:
        texts = []
        for url in self._urls():
            try:
                with urllib.request.urlopen(url, timeout=self._timeout) as reply:
                    texts.append(reply.read().decode("utf-8"))
            except OSError:
                continue  # a worker that is stopping: the others still count
        return merge(texts)


def merged_registry(urls: Callable[[], list[str]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MergedCollector(urls))
    return registry
