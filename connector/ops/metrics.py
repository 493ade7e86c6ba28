"""Every Prometheus metric the connector exports, defined once, at import.

Naming: prefix ``bybit_connector_``, base units (seconds, bytes), ``_total``
for counters. Labels are bounded by the configuration (stream, connection,
Bybit topic, Kafka topic, symbol only where the config lists the symbols) or
by a fixed vocabulary (``reason``). Never label by price, id or error text.

Hot paths update children they looked up once (``.labels()`` is a dict
lookup plus a lock; do it at setup where you can).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, Info
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector

from connector import __version__
from connector.ops.fastmetrics import FastCounter, FastHistogram

PREFIX = "bybit_connector"

# 1 ms .. 10 s, roughly three buckets a decade.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

# The `topic` label of data for a topic no subscription names: whatever the server
# sends folds into this one value, so series stay bounded by the config.
UNKNOWN = "(unknown)"

# Fixed vocabularies for `reason` labels (documented in README).
DISCONNECT_REASONS = (
    "server_closed", "network_error", "pong_timeout", "auth_failed", "auth_timeout", "shutdown",
)
SUBSCRIPTION_FAILURE_REASONS = ("error_ack", "ack_timeout")
AUTH_FAILURE_REASONS = ("rejected", "closed_after_auth", "timeout")
UNDECODABLE_REASONS = (
    "invalid_json", "unknown_shape", "decompress_failed", "invalid_utf8", "unexpected_binary",
    "frame_too_large",
)
DEAD_LETTER_REASONS = ("undecodable_frame", "mapping_failed", "serialization_failed",
                       "delivery_failed")
DROP_REASONS = ("buffer_full", "dead_letter_failed", "shutdown_timeout")
BOOK_RESYNC_REASONS = ("gap", "out_of_order", "dead_letter", "dropped", "delivery_failed")
BOOK_DROP_REASONS = ("stale", "before_snapshot")
KAFKA_ERROR_REASONS = ("timeout", "record_too_large", "authorization_failed", "unknown_topic",
                       "network", "other")

build_info = Info(f"{PREFIX}_build", "Version of the running connector.")
build_info.info({"version": __version__})

# --- connections ---------------------------------------------------------
connection_up = Gauge(
    f"{PREFIX}_connection_up",
    "1 while the WebSocket connection is open (and authenticated, for private), else 0.",
    ["stream", "connection"],
)
connects_total = Counter(
    f"{PREFIX}_connects_total", "WebSocket connections successfully opened.",
    ["stream", "connection"],
)
disconnects_total = Counter(
    f"{PREFIX}_disconnects_total", "WebSocket connections lost or closed, by reason.",
    ["stream", "connection", "reason"],
)
reconnect_attempts_total = Counter(
    f"{PREFIX}_reconnect_attempts_total",
    "Connection attempts made after the first (successful or not).",
    ["stream", "connection"],
)
read_lag_seconds = Gauge(
    f"{PREFIX}_read_lag_seconds",
    "How far behind its socket the connector reads: the last data frame's exchange time "
    "(v5 ts/creationTime, v1 sendTime) to the moment it was read (includes clock offset).",
    ["stream", "connection"],
)
reconnect_backoff_seconds = Gauge(
    f"{PREFIX}_reconnect_backoff_seconds",
    "Delay before the next reconnect attempt; 0 while connected.",
    ["stream", "connection"],
)
heartbeat_rtt_seconds = Histogram(
    f"{PREFIX}_heartbeat_rtt_seconds", "Round-trip time of our ping to Bybit's pong.",
    ["stream", "connection"], buckets=LATENCY_BUCKETS,
)
pong_timeouts_total = Counter(
    f"{PREFIX}_pong_timeouts_total", "Pings that got no pong in time (the connection is recycled).",
    ["stream", "connection"],
)
server_pings_total = Counter(
    f"{PREFIX}_server_pings_total", "Pings sent by the server and answered with a pong.",
    ["stream", "connection"],
)
connect_budget_waits_total = Counter(
    f"{PREFIX}_connect_budget_waits_total",
    "Connects delayed because the per-host connection budget (Bybit: 500 per 5 min) was used up.",
    ["stream", "connection"],
)
auth_failures_total = Counter(
    f"{PREFIX}_auth_failures_total", "Private-stream authentication failures, by reason.",
    ["connection", "reason"],
)

# --- subscriptions -------------------------------------------------------
subscriptions_configured = Gauge(
    f"{PREFIX}_subscriptions_configured",
    "Subscriptions (topic x symbol) the config asks for.", ["stream", "topic"],
)
subscriptions_active = Gauge(
    f"{PREFIX}_subscriptions_active",
    "Subscriptions currently acknowledged by the server.", ["stream", "topic"],
)
subscription_failures_total = Counter(
    f"{PREFIX}_subscription_failures_total",
    "Subscribe requests that failed (error ack or no ack in time); they are retried.",
    ["stream", "topic", "reason"],
)
subscription_ack_seconds = Histogram(
    f"{PREFIX}_subscription_ack_seconds", "Time from subscribe request to its acknowledgement.",
    ["stream"], buckets=LATENCY_BUCKETS,
)

# --- data ------------------------------------------------------------------
# Per-frame and per-record series are fastmetrics families (no lock per update):
# each is updated only by the thread that looked its child up (a connection's own
# thread; the Kafka client's delivery thread). Same exposition as prometheus-client's.
frames_received_total = FastCounter(
    f"{PREFIX}_frames_received_total", "Data frames received from Bybit.", ["stream", "topic"],
)
received_bytes_total = FastCounter(
    f"{PREFIX}_received_bytes_total", "Bytes of data frames received (after decompression).",
    ["stream", "topic"],
)
records_produced_total = FastCounter(
    f"{PREFIX}_records_produced_total", "Records acknowledged by Kafka.", ["kafka_topic"],
)
produced_bytes_total = FastCounter(
    f"{PREFIX}_produced_bytes_total", "Serialized value bytes acknowledged by Kafka.",
    ["kafka_topic"],
)

# --- lag -------------------------------------------------------------------
event_lag_seconds = FastHistogram(
    f"{PREFIX}_event_lag_seconds",
    "Bybit's event time to local receive time (includes clock offset).",
    ["stream", "topic"], buckets=LATENCY_BUCKETS,
)
send_lag_seconds = Histogram(
    f"{PREFIX}_send_lag_seconds",
    "Bybit's sendTime to local receive time (v1 frames only; includes clock offset).",
    ["stream", "topic"], buckets=LATENCY_BUCKETS,
)
delivery_latency_seconds = FastHistogram(
    f"{PREFIX}_delivery_latency_seconds",
    "Local receive of the frame to Kafka's acknowledgement of the record.",
    ["kafka_topic"], buckets=LATENCY_BUCKETS,
)

# --- kafka -----------------------------------------------------------------
kafka_send_errors_total = Counter(
    f"{PREFIX}_kafka_send_errors_total",
    "Records Kafka refused after the client's retries, by reason (bounded vocabulary).",
    ["kafka_topic", "reason"],
)
dead_letter_records_total = Counter(
    f"{PREFIX}_dead_letter_records_total", "Records written to the dead-letter topic, by reason.",
    ["reason"],
)
dropped_records_total = Counter(
    f"{PREFIX}_dropped_records_total",
    "Records that could not be delivered anywhere, by reason. 0 in a healthy run.",
    ["reason"],
)
producer_buffer_records = Gauge(
    f"{PREFIX}_producer_buffer_records", "Records sent to the producer and not yet acknowledged.",
)
producer_buffer_capacity_records = Gauge(
    f"{PREFIX}_producer_buffer_capacity_records",
    "Bound on unacknowledged records before backpressure applies.",
)
producer_restarts_total = Counter(
    f"{PREFIX}_producer_restarts_total",
    "Kafka producers replaced because they stopped making progress with a broker connected.",
)
kafka_record_retries_per_second = Gauge(
    f"{PREFIX}_kafka_record_retries_per_second",
    "Records the Kafka client is retrying per second (kafka-python's record-retry-rate).",
)
schema_registry_requests_total = Counter(
    f"{PREFIX}_schema_registry_requests_total", "Calls to the schema registry, by outcome.",
    ["operation", "outcome"],
)

# --- decode ----------------------------------------------------------------
undecodable_frames_total = Counter(
    f"{PREFIX}_undecodable_frames_total",
    "Frames that could not be decoded (sent to the dead-letter topic).", ["stream", "reason"],
)
duplicates_suppressed_total = Counter(
    f"{PREFIX}_duplicates_suppressed_total",
    "Records not written again because they were already written (trade replay on resubscribe).",
    ["stream", "topic"],
)
unrouted_events_total = Counter(
    f"{PREFIX}_unrouted_events_total",
    "Data for a topic or symbol no subscription asked for (not written); unknown topics "
    "count as topic=\"(unknown)\".",
    ["stream", "topic"],
)
record_fields_missing_total = Counter(
    f"{PREFIX}_record_fields_missing_total",
    "Fields Bybit documents as always sent that a frame left out (the record was written "
    "with null there). Labels come from the schema: topic_kind (e.g. v5_wallet) and the "
    "field's path (e.g. coins.usd_value), never from the frame.",
    ["topic_kind", "field"],
)

book_resyncs_total = Counter(
    f"{PREFIX}_book_resyncs_total",
    "v5 order books resynchronised (marker record written, topic resubscribed), by reason.",
    ["stream", "topic", "reason"],
)
book_deltas_dropped_total = Counter(
    f"{PREFIX}_book_deltas_dropped_total",
    "v5 book deltas not written: stale/duplicate update id, or before the first snapshot.",
    ["stream", "topic", "reason"],
)


# --- scale-out (connector/scaleout/coordinator.py) ---------------------------------
shards_owned = Gauge(
    f"{PREFIX}_shards_owned",
    "Shards (partitions of the coordination topic) this replica owns and streams.",
)
rebalances_total = Counter(
    f"{PREFIX}_rebalances_total",
    "Consumer-group generations this replica joined (each rebalance it took part in).",
)
standby_shards = Gauge(
    f"{PREFIX}_standby_shards",
    "Shards this replica streams unwritten as a hot standby (coordination.standby).",
)
standby_frames_written_total = Counter(
    f"{PREFIX}_standby_frames_written_total",
    "Frames a standby wrote for an owner that left the group (their records already in "
    "Kafka dropped by identity).",
)
shard_gap_seconds_total = Counter(
    f"{PREFIX}_shard_gap_seconds_total",
    "Seconds a shard taken over went unwritten: from the previous owner's last record "
    "in Kafka to this replica's first data. v5 sends no history on subscribe, so trades "
    "in that window are lost (without a standby, a crash costs the session timeout).",
    ["shard"],
)
shard_handover_seconds = Histogram(
    f"{PREFIX}_shard_handover_seconds",
    "From a shard's assignment to this replica to its first data (private: authenticated).",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0),
)


class LastMessageAge(Collector):
    """``bybit_connector_last_message_age_seconds{stream,topic,symbol}``.

    Computed at scrape time from monotonic timestamps, so a stalled stream
    shows a growing age without anything on the hot path but a dict store.
    Before the first message the age counts from registration (startup).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str, str], float] = {}

    def register(self, keys: Iterable[tuple[str, str, str]]) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._last.setdefault(key, now)

    def unregister(self, keys: Iterable[tuple[str, str, str]]) -> None:
        """Stop exporting these subscriptions (their shard moved to another replica)."""
        with self._lock:
            for key in keys:
                self._last.pop(key, None)

    def touch(self, stream: str, topic: str, symbol: str, mono: float | None = None) -> None:
        """Only registered (configured) keys: what the server sends must not add series."""
        key = (stream, topic, symbol)
        if key in self._last:
            self._last[key] = time.monotonic() if mono is None else mono

    def age(self, stream: str, topic: str, symbol: str) -> float | None:
        last = self._last.get((stream, topic, symbol))
        return None if last is None else time.monotonic() - last

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            f"{PREFIX}_last_message_age_seconds",
            "Seconds since the last data message of a subscription (grows when a stream stalls).",
            labels=["stream", "topic", "symbol"],
        )
        now = time.monotonic()
        with self._lock:
            items = list(self._last.items())
        for (stream, topic, symbol), last in items:
            family.add_metric([stream, topic, symbol], now - last)
        yield family


last_message_age = LastMessageAge()
REGISTRY.register(last_message_age)


def init_reason_children(streams: Iterable[str] = (),
                         stream_topics: Iterable[tuple[str, str]] = (),
                         private_connections: Iterable[str] = (),
                         kafka_topics: Iterable[str] = ()) -> None:
    """Create every fixed-vocabulary child so dashboards show 0, not gaps, and
    ``increase()`` alerts fire on the very first failure."""
    for reason in DEAD_LETTER_REASONS:
        dead_letter_records_total.labels(reason)
    for reason in DROP_REASONS:
        dropped_records_total.labels(reason)
    for stream in streams:
        for reason in UNDECODABLE_REASONS:
            undecodable_frames_total.labels(stream, reason)
    for stream, topic in stream_topics:
        for reason in SUBSCRIPTION_FAILURE_REASONS:
            subscription_failures_total.labels(stream, topic, reason)
    for stream, topic in stream_topics:
        if stream == "v5" and topic.startswith("orderbook."):
            for reason in BOOK_RESYNC_REASONS:
                book_resyncs_total.labels(stream, topic, reason)
            for reason in BOOK_DROP_REASONS:
                book_deltas_dropped_total.labels(stream, topic, reason)
    for connection in private_connections:
        for reason in AUTH_FAILURE_REASONS:
            auth_failures_total.labels(connection, reason)
    for topic in kafka_topics:
        for reason in KAFKA_ERROR_REASONS:
            kafka_send_errors_total.labels(topic, reason)
