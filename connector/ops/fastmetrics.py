"""Counters and histograms for the per-record path: plain attribute updates,
read by Prometheus at scrape time.

A prometheus-client ``Counter.inc`` takes a lock; ``Histogram.observe``
walks the bucket list and takes two (~1.6 µs per record for the metrics of
one trade). Here a labelled child is a small object owned by one thread
(``labels()`` gives each calling thread its own): ``inc`` is one addition,
``observe`` one ``bisect`` and two additions, no lock. The families are
``Collector``s: at scrape they sum the children of every thread per label
set and expose exactly what prometheus-client's own ``Counter`` and
``Histogram`` expose (``_total``/``_created``; cumulative ``_bucket``,
``_count``, ``_sum``, ``_created``), so dashboards and alerts see no change.

Use them only for metrics updated on a hot path by the thread that looked the
child up (a child used from two threads may lose an increment); everything
else stays on prometheus-client. A scrape may see a histogram's count one
observation ahead of its sum: no lock, by design.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable, Sequence

from prometheus_client import REGISTRY
from prometheus_client import metrics as _client_metrics
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import INF, floatToGoString


def _use_created() -> bool:
    """prometheus-client's switch for ``_created`` series (env or disable_created_metrics())."""
    return bool(getattr(_client_metrics, "_use_created", True))


DEFAULT_BUCKETS = (.005, .01, .025, .05, .075, .1, .25, .5, .75, 1.0, 2.5, 5.0, 7.5, 10.0)


class CounterChild:
    """One thread's share of one label set."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramChild:
    """One thread's share of one label set: per-bucket counts (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        # The first bound >= amount: prometheus-client's `amount <= bound` bucket.
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1
        self.sum += amount


class _Family(Collector):
    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 registry: CollectorRegistry | None = REGISTRY) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()  # only for creating children, never per record
        # label values -> (created, {thread id: child})
        self._children: dict[tuple[str, ...], tuple[float, dict[int, object]]] = {}
        if registry is not None:
            registry.register(self)

    def _child(self, values: tuple[str, ...]) -> object:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        ident = threading.get_ident()
        entry = self._children.get(values)
        if entry is not None:
            child = entry[1].get(ident)
            if child is not None:
                return child
        with self._lock:
            entry = self._children.setdefault(values, (time.time(), {}))
            return entry[1].setdefault(ident, self._new_child())

    def _new_child(self) -> object:
        raise NotImplementedError

    def _snapshot(self) -> list[tuple[tuple[str, ...], float, list[object]]]:
        with self._lock:
            return [(values, created, list(children.values()))
                    for values, (created, children) in self._children.items()]

    def describe(self) -> Iterable[Metric]:
        return [Metric(self._family_name(), self.documentation, self.kind)]

    def _family_name(self) -> str:
        return self.name

    def _labels(self, values: tuple[str, ...], extra: dict[str, str] | None = None
                ) -> dict[str, str]:
        labels = dict(zip(self.labelnames, values, strict=True))
        if extra:
            labels.update(extra)
        return labels


class FastCounter(_Family):
    """A counter family; ``labels(*values)`` is the calling thread's ``CounterChild``."""

    kind = "counter"

    def _family_name(self) -> str:
        return self.name[:-6] if self.name.endswith("_total") else self.name

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def labels(self, *values: str) -> CounterChild:
        child = self._child(tuple(str(v) for v in values))
        assert isinstance(child, CounterChild)
        return child

    def collect(self) -> Iterable[Metric]:
        base = self._family_name()
        metric = Metric(base, self.documentation, self.kind)
        created_series = _use_created()
        for values, created, children in self._snapshot():
            total = sum(c.value for c in children)  # type: ignore[attr-defined]
            metric.add_sample(base + "_total", self._labels(values), total)
            if created_series:
                metric.add_sample(base + "_created", self._labels(values), created)
        yield metric


class FastHistogram(_Family):
    """A histogram family; ``labels(*values)`` is the calling thread's ``HistogramChild``."""

    kind = "histogram"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] = DEFAULT_BUCKETS,
                 registry: CollectorRegistry | None = REGISTRY) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds):
            raise ValueError(f"{name}: buckets not in sorted order")
        if not bounds or bounds[-1] != INF:
            bounds.append(INF)
        self.bounds = tuple(bounds)
        super().__init__(name, documentation, labelnames, registry)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def labels(self, *values: str) -> HistogramChild:
        child = self._child(tuple(str(v) for v in values))
        assert isinstance(child, HistogramChild)
        return child

    def collect(self) -> Iterable[Metric]:
        metric = Metric(self.name, self.documentation, self.kind)
        created_series = _use_created()
        for values, created, children in self._snapshot():
            counts = [0] * len(self.bounds)
            total = 0.0
            for child in children:
                assert isinstance(child, HistogramChild)
                total += child.sum
                for i, n in enumerate(child.counts):
                    counts[i] += n
            cumulative = 0
            for bound, n in zip(self.bounds, counts, strict=True):
                cumulative += n
                metric.add_sample(self.name + "_bucket",
                                  self._labels(values, {"le": floatToGoString(bound)}),
                                  cumulative)
            metric.add_sample(self.name + "_count", self._labels(values), cumulative)
            if self.bounds[0] >= 0:
                metric.add_sample(self.name + "_sum", self._labels(values), total)
            if created_series:
                metric.add_sample(self.name + "_created", self._labels(values), created)
        yield metric
