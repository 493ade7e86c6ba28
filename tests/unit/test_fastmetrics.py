"""Fast counters and histograms expose exactly what prometheus-client's own would."""

from __future__ import annotations

import random
import re
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from connector.ops.fastmetrics import FastCounter, FastHistogram
from connector.ops.metrics import LATENCY_BUCKETS

CREATED = re.compile(r"^\S+_created\{.*$|^\S+_created .*$", re.M)


def exposition(registry: CollectorRegistry) -> tuple[str, list[str]]:
    """The text format without ``_created`` values (creation times differ), and their series."""
    text = generate_latest(registry).decode()
    created = sorted(line.rsplit(" ", 1)[0] for line in CREATED.findall(text))
    return CREATED.sub("", text), created


def test_counter_and_histogram_equal_prometheus_client_after_n_observations() -> None:
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours_c = FastCounter("x_records_total", "Records.", ["topic"], registry=ours_registry)
    theirs_c = Counter("x_records_total", "Records.", ["topic"], registry=theirs_registry)
    ours_h = FastHistogram("x_latency_seconds", "Latency.", ["topic"], buckets=LATENCY_BUCKETS,
                           registry=ours_registry)
    theirs_h = Histogram("x_latency_seconds", "Latency.", ["topic"], buckets=LATENCY_BUCKETS,
                         registry=theirs_registry)
    rng = random.Random(7)
    topics = ["a", "b", "c"]
    # Exact bucket bounds, values between and beyond them, zero, and big values.
    values = [*LATENCY_BUCKETS, 0.0, 1e-9, 11.0, 1e6] + [rng.expovariate(20) for _ in range(20_000)]
    for i, value in enumerate(values):
        topic = topics[i % 3]
        ours_c.labels(topic).inc()
        theirs_c.labels(topic).inc()
        ours_c.labels(topic).inc(i % 5)
        theirs_c.labels(topic).inc(i % 5)
        ours_h.labels(topic).observe(value)
        theirs_h.labels(topic).observe(value)
    ours, ours_created = exposition(ours_registry)
    theirs, theirs_created = exposition(theirs_registry)
    assert ours == theirs
    assert ours_created == theirs_created and len(ours_created) == 6


def test_each_thread_writes_its_own_child_and_the_scrape_sums_them() -> None:
    registry = CollectorRegistry()
    counter = FastCounter("y_total", "Y.", ["k"], registry=registry)
    histogram = FastHistogram("y_seconds", "Y.", ["k"], buckets=(0.5, 1.0), registry=registry)

    def work() -> None:
        child, hist = counter.labels("k"), histogram.labels("k")
        assert counter.labels("k") is child  # cached per thread
        for _ in range(50_000):
            child.inc()
            hist.observe(0.7)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert registry.get_sample_value("y_total", {"k": "k"}) == 200_000
    assert registry.get_sample_value("y_seconds_bucket", {"k": "k", "le": "1.0"}) == 200_000
    assert registry.get_sample_value("y_seconds_bucket", {"k": "k", "le": "0.5"}) == 0
    assert registry.get_sample_value("y_seconds_sum", {"k": "k"}) == pytest.approx(140_000)


def test_label_count_and_bucket_order_are_checked() -> None:
    registry = CollectorRegistry()
    counter = FastCounter("z_total", "Z.", ["a", "b"], registry=registry)
    with pytest.raises(ValueError, match="expected labels"):
        counter.labels("only one")
    with pytest.raises(ValueError, match="sorted"):
        FastHistogram("z_seconds", "Z.", buckets=(2.0, 1.0), registry=registry)
    with pytest.raises(ValueError):  # the name is taken: defined once, like any metric
        FastCounter("z_total", "Z.", registry=registry)
