"""Bybit v5 end to end, against a real Kafka broker and the local exchange.

Every v5 topic lands in its Kafka topic exactly as the exchange sent it
(inverted through the schemas' ``"bybit"``/``"bybit_frame"`` attributes);
every book rebuilt from Kafka equals the exchange's own book at every update
id, across forced drops, gaps, ``u=1`` restarts, duplicates and re-snapshots;
and the v5 failure paths (rejected subscribe, failed auth, undecodable
frames) are visible and bounded.

The book recipe a consumer follows (and ``rebuild`` below does): start at a
record with ``is_snapshot``; apply each delta level by level (size ``"0"``,
every size ``"0"`` for RPI levels, removes the price, anything else sets it);
a record with ``resync_reason`` and no levels means "discard the book until the
next snapshot".
"""

from __future__ import annotations

import itertools
import json
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from connector.config.load import loads
from connector.config.model import Config
from connector.dev.consume import AvroDecoder, Message, read_all
from connector.dev.kafka_broker import KafkaBroker
from connector.exchange import ExchangeServer
from connector.exchange.v5 import V5Settings
from connector.records import load_schema
from connector.service import Connector

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_end_to_end import kinds
from test_records_v5 import invert, ms, named_records, same_json

pytestmark = pytest.mark.integration

BOOK_KINDS = ("v5_orderbook", "v5_orderbook_rpi")
ONE_PER_FRAME = (*BOOK_KINDS, "v5_tickers", "v5_price_limit")
SYMBOLS = ("BTCUSDT", "ETHUSDT")
DEPTHS: tuple[int | str, ...] = (1, 50, 200, 1000, "rpi")

ALL_V5 = """
  - {stream: v5, topic: orderbook, depth: 1, symbols: [BTCUSDT, ETHUSDT]}
  - {stream: v5, topic: orderbook, depth: 50, symbols: [BTCUSDT, ETHUSDT]}
  - {stream: v5, topic: orderbook, depth: 200, symbols: [BTCUSDT]}
  - {stream: v5, topic: orderbook, depth: 1000, symbols: [ETHUSDT]}
  - {stream: v5, topic: orderbook.rpi, symbols: [BTCUSDT]}
  - {stream: v5, topic: publicTrade, symbols: [BTCUSDT, ETHUSDT]}
  - {stream: v5, topic: tickers, symbols: [BTCUSDT, ETHUSDT]}
  - {stream: v5, topic: kline, interval: "1", symbols: [BTCUSDT]}
  - {stream: v5, topic: priceLimit, symbols: [ETHUSDT]}
  - {stream: v5-private, topic: order.spot}
  - {stream: v5-private, topic: order}
  - {stream: v5-private, topic: execution.spot}
  - {stream: v5-private, topic: execution}
  - {stream: v5-private, topic: execution.fast.spot}
  - {stream: v5-private, topic: execution.fast}
  - {stream: v5-private, topic: wallet}
"""

ALL_BOOKS = """
  - {stream: v5, topic: orderbook, depth: 1, symbols: [BTCUSDT, ETHUSDT]}
  - {stream: v5, topic: orderbook, depth: 50, symbols: [BTCUSDT, ETHUSDT]}
  - {stream: v5, topic: orderbook, depth: 200, symbols: [BTCUSDT, ETHUSDT]}
  - {stream: v5, topic: orderbook, depth: 1000, symbols: [BTCUSDT, ETHUSDT]}
  - {stream: v5, topic: orderbook.rpi, symbols: [BTCUSDT, ETHUSDT]}
  - {stream: v5, topic: publicTrade, symbols: [BTCUSDT, ETHUSDT]}
  - {stream: v5-private, topic: execution.spot}
"""


def unique(prefix: str) -> str:
    """A Kafka topic prefix no other test (or parameter) of the session uses."""
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


def v5_config(exchange: ExchangeServer, bootstrap: str, subscriptions: str,
              prefix: str, bybit_extra: str = "") -> Config:
    text = f"""
bybit:
  urls:
    v5: {exchange.url}/v5/public/spot
    v5-private: {exchange.url}/v5/private
  credentials: {{api_key: demo-key, api_secret: demo-secret}}
  ping_interval_seconds: 1
{bybit_extra}kafka:
  bootstrap_servers: ["{bootstrap}"]
  topic_template: "{prefix}.{{stream}}.{{topic}}"
  dead_letter_topic: {prefix}.dead-letter
metrics: {{enabled: false}}
subscriptions:
{subscriptions}
"""
    return loads(text, env={})


@pytest.fixture
def exchange() -> Iterator[ExchangeServer]:
    # rate: every public feed ticks 20 times a second (books: 20 updates/s);
    # kline_scale: a 1-minute candle lasts 0.3 s, so confirm=true shows up.
    with ExchangeServer(port=0, rate=20, record_frames=2_000_000, private_interval=0.05,
                        v5=V5Settings(kline_scale=0.005)) as server:
        yield server


# -- helpers ---------------------------------------------------------------------------


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(f"bybit_connector_{name}", labels) or 0.0


def wait(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll until ``cond()`` is true (generous: the machine may be loaded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not met within {timeout:.0f} s")


def wire_topic(stream: str, topic_id: str, symbol: str) -> str:
    return topic_id if stream == "v5-private" else f"{topic_id}.{symbol}"


def subscribed(connector: Connector) -> bool:
    return bool(connector.connections) and all(c.is_up and c.all_subscribed
                                               for c in connector.connections)


def received(config: Config) -> dict[tuple[str, str], float]:
    return {(s.stream, s.topic_id): sample("frames_received_total",
                                           {"stream": s.stream, "topic": s.topic_id})
            for s in config.subscriptions}


def sent_counts(exchange: ExchangeServer, config: Config) -> dict[tuple[str, str], float]:
    counters = exchange.v5.stats()["counters"]
    return {(s.stream, s.topic_id): float(sum(
        counters.get(f"frames.{s.stream}.{wire_topic(s.stream, s.topic_id, sym)}", 0)
        for sym in (s.symbols or [""]))) for s in config.subscriptions}


def settle_exact(exchange: ExchangeServer, config: Config,
                 before: dict[tuple[str, str], float]) -> None:
    """Pause the feeds, then wait until the connector received every data frame
    the exchange sent (one connection per stream, none dropped)."""
    exchange.v5.pause(True)

    def caught_up() -> bool:
        now, sent = received(config), sent_counts(exchange, config)
        return all(now[k] - before[k] == sent[k] for k in sent)
    wait(caught_up, 60, "the connector received every frame the exchange sent")


def settle_quiet(exchange: ExchangeServer, config: Config, quiet: float = 1.5) -> None:
    """Pause the feeds, then wait until nothing more arrives for ``quiet`` s."""
    exchange.v5.pause(True)
    last, since = received(config), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.1)
        now = received(config)
        if now != last:
            last, since = now, time.monotonic()


def collect(config: Config, bootstrap: str) -> dict[str, list[Message]]:
    topics = [*kinds(config), config.kafka.dead_letter_topic]
    messages = read_all(bootstrap, topics, timeout=60)
    for msgs in messages.values():
        msgs.sort(key=lambda m: (m.partition, m.offset))
    return messages


def frame_items(frame: dict[str, Any]) -> list[dict[str, Any]]:
    data = frame["data"]
    return data if isinstance(data, list) else [data]


def expected_key(kind: str, symbol: str, item: dict[str, Any]) -> bytes:
    """The Kafka key ``records.record_key`` gives, from Bybit's own item."""
    field = {"v5_order": "orderId", "v5_execution": "orderId",
             "v5_execution_fast": "orderId", "v5_wallet": "accountType"}.get(kind)
    return (item[field] if field else symbol).encode()


# -- 1. every topic, exactly -----------------------------------------------------------


def test_every_v5_topic_lands_exactly_as_sent(kafka_broker: KafkaBroker,
                                              exchange: ExchangeServer) -> None:
    prefix = unique("e2e5.all")
    config = v5_config(exchange, kafka_broker.bootstrap_servers, ALL_V5, prefix)
    before = received(config)
    connector = Connector(config).start()
    try:
        wait(lambda: subscribed(connector), what="every v5 subscription acknowledged")
        # run until every topic has something, including a closed candle
        wait(lambda: all(v > 0 for v in sent_counts(exchange, config).values())
             and any('"confirm":true' in text for _, _, text in list(exchange.v5.sent)),
             what="every v5 topic sent data and a kline closed")
        time.sleep(1.0)
        settle_exact(exchange, config, before)
    finally:
        connector.stop()
    messages = collect(config, kafka_broker.bootstrap_servers)
    decoder = AvroDecoder()
    by_kind = kinds(config)
    for sub in config.subscriptions:
        topic = config.kafka_topic(sub)
        kind = by_kind[topic]
        schema = load_schema(kind)
        named = named_records(schema, {})
        frames = exchange.v5.sent_frames(stream=sub.stream)
        expected: list[tuple[bytes, dict[str, Any], dict[str, Any]]] = []
        for frame in frames:
            for symbol in sub.symbols or [""]:
                if frame["topic"] != wire_topic(sub.stream, sub.topic_id, symbol):
                    continue
                items = frame_items(frame)
                assert kind not in ONE_PER_FRAME or len(items) == 1
                expected += [(expected_key(kind, symbol, item), item, frame) for item in items]
        got = messages[topic]
        assert expected, f"the exchange sent nothing for {topic}"
        assert len(got) == len(expected), (topic, len(got), len(expected))
        for m, (key, item, frame) in zip(got, expected, strict=True):
            record = decoder.decode(kind, m)
            assert m.key == key, topic
            assert m.headers["bybit.stream"] == sub.stream.encode()
            assert m.headers["bybit.topic"] == sub.topic_id.encode()
            assert m.headers["bybit.received_ms"].isdigit()
            assert "avro.schema.fingerprint" in m.headers
            assert record["stream"] == sub.stream and record["bybit_topic"] == sub.topic_id
            rebuilt = invert(schema["fields"], record, named)
            assert same_json(rebuilt, item), (topic, rebuilt, item)
            for field in schema["fields"]:
                if "bybit_frame" in field:
                    assert ms(record[field["name"]]) == frame.get(field["bybit_frame"]), (
                        topic, field["name"])
            # nothing on the envelope is dropped: what no field names is in frame_extra
            unmapped = {k: v for k, v in frame.items() if k not in {"topic", "data"} | {
                f["bybit_frame"] for f in schema["fields"] if "bybit_frame" in f}}
            kept = {k: json.loads(v) for k, v in (record["frame_extra"] or {}).items()}
            assert same_json(kept, unmapped), (topic, kept, unmapped)
            if kind in BOOK_KINDS:
                assert record["is_snapshot"] is (frame["type"] == "snapshot")
                assert record["resync_reason"] is None
        if kind == "v5_public_trade":
            assert any(len(frame_items(f)) > 1 for _, _, f in expected), \
                "some trade frame carries several trades (N trades -> N records)"
    kline = [AvroDecoder().decode("v5_kline", m) for m in messages[f"{prefix}.v5.kline.1"]]
    assert any(r["is_closed"] for r in kline) and any(not r["is_closed"] for r in kline)
    assert messages[config.kafka.dead_letter_topic] == []


# -- 2. books rebuilt from Kafka equal the exchange's, through every fault --------------


Book = tuple[list[list[str]], list[list[str]]]


def capture(exchange: ExchangeServer) -> dict[tuple[str, str], dict[int, Book]]:
    """The exchange's book at every ``u`` it still remembers, for every book."""
    out: dict[tuple[str, str], dict[int, Book]] = {}
    for symbol in SYMBOLS:
        for depth in DEPTHS:
            lo, hi = exchange.v5.book_span(symbol, depth)
            out[(symbol, str(depth))] = {u: exchange.v5.book_at(symbol, depth, u)
                                         for u in range(lo, hi + 1)}
    return out


def levels(record_side: list[dict[str, Any]], fields: list[str]) -> list[list[str]]:
    return [[lv[f] for f in fields] for lv in record_side]


def apply(side: dict[str, list[str]], changes: list[list[str]]) -> None:
    for lv in changes:
        if all(size == "0" for size in lv[1:]):
            side.pop(lv[0], None)
        else:
            side[lv[0]] = lv


def as_book(bids: dict[str, list[str]], asks: dict[str, list[str]]) -> Book:
    return (sorted(bids.values(), key=lambda lv: -float(lv[0])),
            sorted(asks.values(), key=lambda lv: float(lv[0])))


def rebuild(records: list[dict[str, Any]], fields: list[str],
            truths: list[dict[int, Book]], name: str) -> int:
    """Replay one book's records as a consumer would; compare with the exchange
    at every update id (``truths``: one capture per ``u=1`` epoch). Returns how
    many states were compared."""
    bids: dict[str, list[str]] | None = None
    asks: dict[str, list[str]] = {}
    epoch, last_u, compared = 0, None, 0
    for i, r in enumerate(records):
        u = r["update_id"]
        if last_u is not None and u < last_u:  # a u=1 restart: a new epoch
            epoch += 1
            assert r["is_snapshot"] and u == 1, (name, i, "u went back without a restart")
        last_u = u
        marker = r["resync_reason"] and not r["is_snapshot"]
        if marker:
            assert r["bids"] == [] and r["asks"] == [], (name, i)
            bids = None
            continue
        if r["is_snapshot"]:
            bids, asks = {}, {}
            apply(bids, levels(r["bids"], fields))
            apply(asks, levels(r["asks"], fields))
        else:
            assert bids is not None, (name, i, "a delta while the book is discarded")
            apply(bids, levels(r["bids"], fields))
            apply(asks, levels(r["asks"], fields))
        truth = truths[epoch]
        assert u in truth, (name, i, u, "not in the exchange's history")
        assert as_book(bids, asks) == truth[u], (name, i, u)
        compared += 1
    return compared


def conn_of_frames(exchange: ExchangeServer) -> tuple[dict[tuple[Any, ...], list[str]],
                                                      list[str]]:
    """(wire topic, type, u, ts) → conn_ids that were sent that frame; conn_ids in
    the order they first received data."""
    index: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    order: list[str] = []
    for conn_id, stream, text in exchange.v5._run(lambda: list(exchange.v5.sent)):
        if stream != "v5" or '"topic":"orderbook' not in text:
            continue
        frame = json.loads(text)
        index[(frame["topic"], frame["type"], frame["data"]["u"], frame["ts"])].append(conn_id)
        if conn_id not in order:
            order.append(conn_id)
    return index, order


def wait_resynced(config: Config, before: dict[str, float], want: dict[str, int],
                  connector: Connector) -> None:
    def done() -> bool:
        return all(sample("book_resyncs_total", {"stream": "v5", "topic": t, "reason": "gap"})
                   - before.get(t, 0) >= n for t, n in want.items())
    wait(done, what=f"gap resyncs {want}")
    wait(lambda: subscribed(connector), what="resubscribed after the gap")


@pytest.fixture(params=[20, None], ids=["20-per-s", "bybit-periods"])
def book_exchange(request: pytest.FixtureRequest) -> Iterator[ExchangeServer]:
    """20 updates a second per book, or Bybit's own push periods (depth 1 every
    10 ms, 50 every 20 ms ...: more frames in flight around each fault)."""
    with ExchangeServer(port=0, rate=request.param, record_frames=2_000_000,
                        private_interval=0.05) as server:
        yield server


def test_books_rebuilt_from_kafka_equal_the_exchange(kafka_broker: KafkaBroker,
                                                     book_exchange: ExchangeServer) -> None:
    exchange = book_exchange
    prefix = unique("e2e5.books")
    config = v5_config(exchange, kafka_broker.bootstrap_servers, ALL_BOOKS, prefix)
    book_topics = [f"orderbook.{d}" for d in DEPTHS]
    resyncs_before = {t: sample("book_resyncs_total",
                                {"stream": "v5", "topic": t, "reason": "gap"})
                      for t in book_topics}
    stale_before = sum(sample("book_deltas_dropped_total",
                              {"stream": "v5", "topic": t, "reason": "stale"})
                       for t in book_topics)
    connector = Connector(config).start()
    conns = {c.settings.stream: c for c in connector.connections}
    assert set(conns) == {"v5", "v5-private"}

    def connects(stream: str) -> float:
        return sample("connects_total", {"stream": stream, "connection": conns[stream].name})

    def drop(stream: str) -> None:
        n = connects(stream)
        assert exchange.v5.drop(stream) == 1
        wait(lambda: connects(stream) == n + 1 and subscribed(connector),
             what=f"{stream} reconnected and resubscribed")
        time.sleep(1.0)

    truths: list[dict[tuple[str, str], dict[int, Book]]] = []
    try:
        wait(lambda: subscribed(connector), what="every subscription acknowledged")
        time.sleep(1.5)
        # a gap in every BTCUSDT book (depth 1: harmless, every frame is whole)
        assert exchange.v5.gap("BTCUSDT") == len(DEPTHS)
        wait_resynced(config, resyncs_before, {"orderbook.50": 1, "orderbook.200": 1,
                                               "orderbook.1000": 1, "orderbook.rpi": 1},
                      connector)
        time.sleep(1.0)
        assert exchange.v5.duplicate() >= 8  # every book with a delta sent
        assert exchange.v5.resnapshot() == 10
        assert exchange.v5.resend_l1() == 2
        time.sleep(1.0)
        drop("v5")
        drop("v5-private")
        # three updates lost at once: still one marker, one resync
        assert exchange.v5.gap("ETHUSDT", 50, count=3) == 1
        wait_resynced(config, resyncs_before, {"orderbook.50": 2}, connector)
        time.sleep(1.0)
        # u=1 restart of every book; keep the exchange's books from before it
        settle_quiet(exchange, config)
        truths.append(capture(exchange))
        assert exchange.v5.restart() == 10
        exchange.v5.pause(False)
        time.sleep(1.5)
        drop("v5")
        time.sleep(1.0)
        settle_quiet(exchange, config)
        truths.append(capture(exchange))
    finally:
        connector.stop()

    messages = collect(config, kafka_broker.bootstrap_servers)
    decoder = AvroDecoder()
    index, conn_order = conn_of_frames(exchange)
    assert len(conn_order) == 3  # the first connection and two reconnects
    markers: Counter[tuple[str, str]] = Counter()
    total = 0
    for depth in DEPTHS:
        kind = "v5_orderbook_rpi" if depth == "rpi" else "v5_orderbook"
        level_fields = _level_fields(kind)
        topic = f"{prefix}.v5.orderbook.{depth}"
        for symbol in SYMBOLS:
            name = f"orderbook.{depth}.{symbol}"
            recs = [decoder.decode(kind, m) for m in messages[topic]
                    if m.key == symbol.encode()]
            assert recs and recs[0]["is_snapshot"], name
            total += rebuild(recs, level_fields,
                             [t[(symbol, str(depth))] for t in truths], name)
            # markers: each is followed by a snapshot carrying its reason
            for i, r in enumerate(recs):
                if r["resync_reason"] and not r["is_snapshot"]:
                    markers[(name, r["resync_reason"])] += 1
                    nxt = recs[i + 1]
                    assert nxt["is_snapshot"] and nxt["resync_reason"] == r["resync_reason"], \
                        (name, i)
                elif r["resync_reason"]:
                    assert recs[i - 1]["resync_reason"] == r["resync_reason"], (name, i)
            # deltas never repeat an update id (duplicates are not written)
            for a, b in itertools.pairwise(recs):
                if not b["is_snapshot"] and not b["resync_reason"] and b["update_id"] != 1:
                    assert b["update_id"] == a["update_id"] + 1 or a["resync_reason"], \
                        (name, a["update_id"], b["update_id"])
            # the first record from each connection is a snapshot
            last_conn = None
            for r in recs:
                if r["resync_reason"] and not r["is_snapshot"]:
                    continue
                key = (name, r["frame_type"], r["update_id"], ms(r["event_time"]))
                assert key in index, (name, key, "a record the exchange never sent")
                conn = index[key][0]
                if conn != last_conn:
                    assert r["is_snapshot"], (name, r["update_id"], "first after reconnect")
                    assert last_conn is None or conn_order.index(conn) > conn_order.index(
                        last_conn)
                    last_conn = conn
    assert total > 1000
    assert markers == {("orderbook.50.BTCUSDT", "gap"): 1, ("orderbook.200.BTCUSDT", "gap"): 1,
                       ("orderbook.1000.BTCUSDT", "gap"): 1, ("orderbook.rpi.BTCUSDT", "gap"): 1,
                       ("orderbook.50.ETHUSDT", "gap"): 1}
    resyncs = {t: sample("book_resyncs_total", {"stream": "v5", "topic": t, "reason": "gap"})
               - resyncs_before[t] for t in book_topics}
    assert resyncs == {"orderbook.1": 0, "orderbook.50": 2, "orderbook.200": 1,
                       "orderbook.1000": 1, "orderbook.rpi": 1}
    stale = sum(sample("book_deltas_dropped_total",
                       {"stream": "v5", "topic": t, "reason": "stale"})
                for t in book_topics) - stale_before
    assert stale >= 8, "the duplicated deltas were dropped as stale"

    # trades: unique across the drops, each as sent, in the exchange's order
    sent_trades = [t["i"] for f in exchange.v5.sent_frames(stream="v5")
                   if f["topic"].startswith("publicTrade.") for t in f["data"]]
    trades = [decoder.decode("v5_public_trade", m)["trade_id"]
              for m in messages[f"{prefix}.v5.publicTrade"]]
    assert trades and len(trades) == len(set(trades))
    assert set(trades) <= set(sent_trades)
    positions = {t: i for i, t in enumerate(sent_trades)}
    assert [positions[t] for t in trades] == sorted(positions[t] for t in trades)
    # executions: one record per execId
    sent_execs = [r["execId"] for f in exchange.v5.sent_frames(stream="v5-private")
                  if f["topic"] == "execution.spot" for r in f["data"]]
    execs = [decoder.decode("v5_execution", m)["exec_id"]
             for m in messages[f"{prefix}.v5-private.execution.spot"]]
    assert execs and len(execs) == len(set(execs)) and set(execs) <= set(sent_execs)
    assert messages[config.kafka.dead_letter_topic] == []


def _level_fields(kind: str) -> list[str]:
    """Field names of one book level, in wire order (``[price, size(s)]``)."""
    schema = load_schema(kind)
    bids = next(f for f in schema["fields"] if f["name"] == "bids")
    items = bids["type"]["items"]
    return [f["name"] for f in items["fields"]]


# -- 3. failure paths ------------------------------------------------------------------


def test_rejected_subscribe_is_retried_counted_and_then_streams(
        kafka_broker: KafkaBroker, exchange: ExchangeServer) -> None:
    subs = "  - {stream: v5, topic: tickers, symbols: [BTCUSDT]}\n"
    prefix = unique("e2e5.reject")
    config = v5_config(exchange, kafka_broker.bootstrap_servers, subs, prefix)
    labels = {"stream": "v5", "topic": "tickers", "reason": "error_ack"}
    failures = sample("subscription_failures_total", labels)
    exchange.v5.reject_next_subscribe(2)
    connector = Connector(config).start()
    try:
        wait(lambda: subscribed(connector), 60, "subscribed after two rejections")
        wait(lambda: sample("frames_received_total", {"stream": "v5", "topic": "tickers"})
             > 0, what="tickers streaming")
        assert sample("subscription_failures_total", labels) - failures == 2
        assert exchange.v5.stats()["counters"]["rejected_subscribes"] == 2
        time.sleep(0.5)
    finally:
        connector.stop()
    messages = collect(config, kafka_broker.bootstrap_servers)
    assert messages[f"{prefix}.v5.tickers"]


@pytest.mark.parametrize(("mode", "reason"), [("reject", "rejected"),
                                               ("close", "closed_after_auth"),
                                               ("silent", "timeout")])
def test_failed_auth_is_reported_without_a_retry_storm(kafka_broker: KafkaBroker,
                                                       exchange: ExchangeServer, mode: str,
                                                       reason: str) -> None:
    """Rejected, closed or unanswered auth: readiness and the metric say so, and
    the connection waits (30 s at first) before it tries again: one attempt
    at the exchange in the 4 s after the failure (a storm retries at once: the
    first reconnect is immediate). The unanswered auth gives up after 2 s (the
    configured timeout; 10 s by default)."""
    subs = "  - {stream: v5-private, topic: wallet}\n"
    config = v5_config(exchange, kafka_broker.bootstrap_servers, subs, unique(f"e2e5.auth.{mode}"),
                       bybit_extra="  auth_timeout_seconds: 2\n")
    labels = {"connection": "v5-private-0", "reason": reason}
    failures = sample("auth_failures_total", labels)
    exchange.v5.fail_auth(mode)
    connector = Connector(config).start()
    try:
        wait(lambda: sample("auth_failures_total", labels) > failures,
             what="the auth failure counted")
        body = connector.readiness()
        assert body["ready"] is False
        [conn] = body["connections"]
        assert conn["up"] is False and "auth" in (conn["last_error"] or "")
        assert sample("connection_up", {"stream": "v5-private",
                                        "connection": "v5-private-0"}) == 0
        time.sleep(4)  # the window in which a retry storm would show
        assert exchange.v5.stats()["counters"]["auth_attempts"] == 1
        assert sample("auth_failures_total", labels) - failures == 1
    finally:
        connector.stop()


def test_undecodable_v5_frames_go_to_the_dead_letter_topic(kafka_broker: KafkaBroker,
                                                           exchange: ExchangeServer) -> None:
    """Bad JSON, an unknown shape and a binary frame on the v5 socket, and a
    tickers frame that does not map: each lands in the dead-letter topic with
    its exact bytes; the connection keeps streaming."""
    subs = "  - {stream: v5, topic: tickers, symbols: [BTCUSDT]}\n"
    prefix = unique("e2e5.dlq")
    config = v5_config(exchange, kafka_broker.bootstrap_servers, subs, prefix)
    bad_tickers = ('{"topic":"tickers.BTCUSDT","ts":1760000005300,"type":"snapshot","cs":1,'
                '"data":{"symbol":"BTCUSDT","lastPrice":12}}')
    payloads: list[str | bytes] = ["{not json", '{"hello":"world","n":[1,2]}',
                                   b"\x00\xffgarbage\x9c", bad_tickers]
    reasons = [b"invalid_json", b"unknown_shape", b"unexpected_binary"]
    undecodable = {r: sample("undecodable_frames_total", {"stream": "v5", "reason": r.decode()})
                   for r in reasons}
    connector = Connector(config).start()
    try:
        wait(lambda: subscribed(connector), what="subscribed")

        def garbage() -> None:
            for client in exchange.v5.clients:
                for payload in payloads:
                    client.push(payload, None)  # type: ignore[arg-type]
        exchange.v5._run(garbage)
        before = received(config)
        wait(lambda: received(config)[("v5", "tickers")] > before[("v5", "tickers")] + 5,
             what="still streaming after the garbage")
        assert all(c.is_up for c in connector.connections)
    finally:
        connector.stop()
    messages = collect(config, kafka_broker.bootstrap_servers)
    dead = messages[config.kafka.dead_letter_topic]
    assert [m.value for m in dead] == [p if isinstance(p, bytes) else p.encode()
                                       for p in payloads]
    assert [m.headers["dlq.reason"] for m in dead] == [b"undecodable_frame"] * 3 + [
        b"mapping_failed"]
    assert [m.headers.get("dlq.undecodable_reason") for m in dead[:3]] == reasons
    assert {m.headers["dlq.source"] for m in dead[:3]} == {b"stream:v5"}
    assert dead[3].headers["dlq.source"] == f"{prefix}.v5.tickers".encode()
    for r in reasons:
        assert sample("undecodable_frames_total",
                      {"stream": "v5", "reason": r.decode()}) - undecodable[r] == 1
    assert messages[f"{prefix}.v5.tickers"]
