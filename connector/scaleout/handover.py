"""What a replica does before it streams a shard it was just given: remember
the trades already in Kafka, so Bybit's replay on subscribe is not written twice.

Bybit's v1 ``trade`` topic replays the last 60 trades on every subscribe. The
replica that streamed a shard before wrote those trades; the new owner has
never seen them. ``seed_trade_dedup`` reads the tail of each trade topic the
new subscriptions write to, decodes the trade ids of their symbols and adds
them to the pipeline's de-duplication memory (``Route.dedup``). It runs while
the shard's connections subscribe: ``hold`` buffers their de-duplicated
records before they start and ``release`` writes them through the seeded
memory afterwards (``connector.pipeline.hold``), so the seed costs no data. These are
the hooks ``connector.scaleout.coordinator`` gives ``ShardRunner``.

Bounded: per partition, ``per_symbol`` records (the replay is 60) times the
configured symbols whose key lands in that partition are read back, within
``timeout`` seconds. That covers a replay exactly when symbols trade at
similar rates; a quiet symbol among busy ones may be seeded short (some of its
replay written again). On a Kafka error it logs and returns: a failed seed
costs duplicates, never data.
"""

from __future__ import annotations

import io
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import fastavro
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from connector import records
from connector.config.model import Config, SubscriptionConfig
from connector.pipeline.core import DEDUP_CAPACITY, Route
from connector.pipeline.dedup import RecentIds
from connector.pipeline.hold import EVERY
from connector.pipeline.tail import read_tail
from connector.scaleout.shards import PRIVATE_STREAMS
from connector.serde.serializers import _without_logical_types
from connector.sink.kafka_sink import producer_settings

log = logging.getLogger(__name__)

REPLAY_DEPTH = 60  # records read back per symbol and partition: Bybit replays 60 trades
PRIVATE_DEPTH = 500  # private records read back per partition on a hand-over


def _held_symbols(routes: Mapping[tuple[str, str], Route],
                   subscriptions: Sequence[SubscriptionConfig]) -> list[tuple[Route, list[str]]]:
    out = []
    for sub in subscriptions:
        route = routes.get((sub.stream, sub.topic_id))
        if route is None or (route.dedup_field is None and not route.book):
            continue
        if sub.stream in PRIVATE_STREAMS:
            out.append((route, [EVERY]))  # not cut by symbol: the whole route waits
        elif sub.symbols:
            out.append((route, list(sub.symbols)))
    return out


def hold(routes: Mapping[tuple[str, str], Route],
         subscriptions: Sequence[SubscriptionConfig]) -> None:
    """Buffer the de-duplicated and book records of ``subscriptions`` until
    ``release``. Books too: while a previous owner still writes a book (the
    hand-over overlap), ours must not interleave with its chain; released after
    it stopped, our chain (starting with our snapshot) follows its last record."""
    for route, symbols in _held_symbols(routes, subscriptions):
        route.held.hold(symbols)


def release(routes: Mapping[tuple[str, str], Route],
            subscriptions: Sequence[SubscriptionConfig]) -> int:
    """Write what ``hold`` buffered, through the (now seeded) de-duplication."""
    released = sum(route.held.release(symbols)
                   for route, symbols in _held_symbols(routes, subscriptions))
    if released:
        log.info("released %d frames received while seeding", released)
    return released


def seed_trade_dedup(config: Config, routes: Mapping[tuple[str, str], Route],
                     subscriptions: Sequence[SubscriptionConfig], per_symbol: int = REPLAY_DEPTH,
                     timeout: float = 5.0, last_written: dict[str, int] | None = None) -> int:
    """Seed ``routes``' trade de-dup for ``subscriptions`` from Kafka. Returns ids seeded.

    ``last_written``, if given, receives per symbol the Kafka timestamp (ms) of
    its newest record found: where the previous writer stopped, so the new
    owner can report the gap (``ShardRunner``)."""
    wanted: dict[str, tuple[Route, set[str]]] = {}  # kafka topic -> (route, symbols)
    private: dict[str, Route] = {}  # kafka topic -> route: read whole (not cut by symbol)
    for sub in subscriptions:
        route = routes.get((sub.stream, sub.topic_id))
        if route is None or route.dedup_field is None:
            continue
        if sub.stream in PRIVATE_STREAMS:
            private[route.kafka_topic] = route
            continue
        wanted.setdefault(route.kafka_topic, (route, set()))[1].update(sub.symbols)
    if not wanted and not private:
        return 0
    symbols_per_topic: dict[str, list[str]] = {}
    for sub in config.subscriptions:
        symbols_per_topic.setdefault(config.kafka_topic(sub), []).extend(sub.symbols)
    settings = {k: v for k, v in producer_settings(config.kafka).items()
                if k in KafkaConsumer.DEFAULT_CONFIG and k != "client_id"}
    started = time.monotonic()
    seeded = 0
    try:
        consumer = KafkaConsumer(**settings, group_id=None, enable_auto_commit=False,
                                 client_id="bybit-kafka-connector-seed")
    except KafkaError as exc:
        log.warning("cannot seed trade de-duplication from Kafka (%s); a replay may be "
                    "written twice", exc)
        return 0
    try:
        for topic, (route, symbols) in wanted.items():
            seeded += _seed_topic(consumer, topic, route, symbols,
                                  symbols_per_topic.get(topic, []), per_symbol,
                                  started + timeout, config.serialization.format,
                                  last_written if last_written is not None else {})
        for topic, route in private.items():
            seeded += _seed_private(consumer, topic, route, started + timeout,
                                    config.serialization.format)
    except KafkaError as exc:
        log.warning("seeding trade de-duplication failed (%s); a replay may be written "
                    "twice", exc)
    finally:
        consumer.close()
    log.info("seeded %d trade ids for %d symbols in %.2f s", seeded,
             sum(len(s) for _, s in wanted.values()), time.monotonic() - started)
    return seeded


def _seed_private(consumer: KafkaConsumer, topic: str, route: Route, deadline: float,
                  fmt: str) -> int:
    """A private topic's last ``PRIVATE_DEPTH`` records per partition: their
    identities (exec id, order id and updated time, wallet push) join the
    de-duplication, so what the previous owner wrote during the overlap is not
    written again."""
    decode = _decoder(route.kind, fmt)
    seeded = 0
    for m in read_tail(consumer, topic, PRIVATE_DEPTH, deadline):
        try:
            rec = decode(m.value)
            identity = route.identity(rec)
        except (ValueError, KeyError, TypeError, EOFError, IndexError):
            continue
        symbol = rec.get("symbol") or ""
        seen = route.dedup.get(symbol)
        if seen is None:
            seen = route.dedup.setdefault(symbol, RecentIds(DEDUP_CAPACITY))
        seen.add(identity)
        seeded += 1
    return seeded


def _seed_topic(consumer: KafkaConsumer, topic: str, route: Route, symbols: set[str],
                all_symbols: list[str], per_symbol: int, deadline: float, fmt: str,
                last_written: dict[str, int]) -> int:
    ids = sorted(consumer.partitions_for_topic(topic) or ())
    if not ids:
        return 0

    def partition(symbol: str) -> int:  # as sink.KeyHashPartitioner (murmur2 of the key)
        return ids[(murmur2(symbol.encode()) & 0x7FFFFFFF) % len(ids)]

    per_partition = Counter(partition(s) for s in all_symbols)
    decode = _decoder(route.kind, fmt)
    seeded = 0
    for p in sorted({partition(s) for s in symbols}):
        tp = TopicPartition(topic, p)
        mine = {s for s in symbols if partition(s) == p}
        found = _read_back(consumer, tp, mine, per_symbol,
                           per_symbol * max(1, per_partition[p]), deadline, decode,
                           route.identity, last_written)
        for symbol, trade_ids in found.items():
            seen = route.dedup.get(symbol)
            if seen is None:
                seen = route.dedup.setdefault(symbol, RecentIds(DEDUP_CAPACITY))
            for trade_id in trade_ids[-per_symbol:]:  # oldest first
                seen.add(trade_id)
                seeded += 1
    return seeded


def _read_back(consumer: KafkaConsumer, tp: TopicPartition, symbols: set[str],
               per_symbol: int, step: int, deadline: float,
               decode: Callable[[bytes], dict[str, Any]],
               identity: Callable[[dict[str, Any]], str],
               last_written: dict[str, int]) -> dict[str, list[str]]:
    """The last ``per_symbol`` ids of each of ``symbols`` in ``tp``: read backwards
    from the end in chunks (doubling) until each has them, or the partition's
    beginning, or the deadline. Ids per symbol oldest first; ``last_written``
    gets each symbol's newest record timestamp (ms)."""
    consumer.assign([tp])
    hi = consumer.end_offsets([tp])[tp]
    begin = consumer.beginning_offsets([tp])[tp]
    keys = {s.encode(): s for s in symbols}
    found: dict[str, list[str]] = {s: [] for s in symbols}
    while hi > begin and any(len(v) < per_symbol for v in found.values()):
        if time.monotonic() > deadline:
            log.warning("seeding %s: not finished within the time allowed", tp)
            break
        lo = max(begin, hi - step)
        chunk: dict[str, list[str]] = {}
        consumer.seek(tp, lo)
        done = False
        while not done and time.monotonic() < deadline:
            for msgs in consumer.poll(timeout_ms=200, max_records=5000).values():
                for m in msgs:
                    if m.offset >= hi - 1:
                        done = True
                    if m.offset >= hi:
                        break
                    symbol = keys.get(m.key or b"")
                    if symbol is None:
                        continue
                    if m.timestamp > last_written.get(symbol, -1):
                        last_written[symbol] = m.timestamp
                    try:
                        chunk.setdefault(symbol, []).append(identity(decode(m.value)))
                    except (ValueError, KeyError, TypeError, EOFError, IndexError):
                        continue  # not ours to judge here; the topic's reader will
            done = done or consumer.position(tp) >= hi  # gaps (compaction, markers)
        for symbol, older in chunk.items():
            found[symbol] = older + found[symbol]
        hi, step = lo, step * 2
    return found


def _decoder(kind: str, fmt: str) -> Callable[[bytes], dict[str, Any]]:
    # Timestamps read as plain longs: same bytes, no datetime built per record.
    schema = fastavro.parse_schema(_without_logical_types(records.load_schema(kind)))
    skip = 5 if fmt == "confluent" else 0  # magic byte + schema id

    def decode(value: bytes) -> dict[str, Any]:
        out = fastavro.schemaless_reader(io.BytesIO(value[skip:]), schema, None)
        assert isinstance(out, dict)
        return out

    return decode


BOOK_TAIL = 2000  # book records read back per partition: every book's last one


def last_book_updates(config: Config, routes: Mapping[tuple[str, str], Route],
                      subscriptions: Sequence[SubscriptionConfig],
                      timeout: float = 10.0) -> dict[tuple[str, str], int | None]:
    """Where each v5 book of ``subscriptions`` ends in Kafka: (topic id, symbol)
    -> the ``update_id`` of its newest record, None if that record is a resync
    marker (the chain waits for a snapshot). A book absent from the tail is absent.
    A standby taking over continues each chain from there (``connector.scaleout.standby``)."""
    wanted: dict[str, tuple[Route, set[str]]] = {}
    for sub in subscriptions:
        route = routes.get((sub.stream, sub.topic_id))
        if route is not None and route.book:
            wanted.setdefault(route.kafka_topic, (route, set()))[1].update(sub.symbols)
    out: dict[tuple[str, str], int | None] = {}
    if not wanted:
        return out
    settings = {k: v for k, v in producer_settings(config.kafka).items()
                if k in KafkaConsumer.DEFAULT_CONFIG and k != "client_id"}
    deadline = time.monotonic() + timeout
    try:
        consumer = KafkaConsumer(**settings, group_id=None, enable_auto_commit=False,
                                 client_id="bybit-kafka-connector-seed")
    except KafkaError as exc:
        log.warning("cannot read the books' tail (%s)", exc)
        return out
    try:
        for topic, (route, symbols) in wanted.items():
            decode = _decoder(route.kind, config.serialization.format)
            for m in read_tail(consumer, topic, BOOK_TAIL, deadline):
                try:
                    rec = decode(m.value)
                except (ValueError, KeyError, TypeError, EOFError, IndexError):
                    continue
                symbol = str(rec.get("symbol"))
                # Depths may share a Kafka topic: a record names its Bybit topic.
                if symbol in symbols and str(rec.get("bybit_topic")) == \
                        f"{route.topic_id}.{symbol}":
                    out[(route.topic_id, symbol)] = (None if rec.get("resync_reason")
                                                     else int(rec["update_id"]))
    except KafkaError as exc:
        log.warning("reading the books' tail failed (%s)", exc)
    finally:
        consumer.close()
    return out
