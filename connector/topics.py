"""The one table describing every Bybit spot topic the connector supports.

Adding a Bybit topic means: one row here, one ``avro/<kind>.avsc``, one
mapper in ``records/`` registered under the same ``kind``, one sample test.
"""

from __future__ import annotations

from dataclasses import dataclass

from connector.bybit.events import Stream

KLINE_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d", "1w", "1M")


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How one Bybit topic is subscribed, decoded and written.

    ``kind`` names the Avro schema (``avro/<kind>.avsc``) and the mapper in
    ``records.MAPPERS``. ``param`` is the topic parameter a subscription must
    give (``interval`` for klines, ``dump_scale`` for mergedDepth) or None.
    ``book`` topics become one record per book message; the others one record
    per item. ``snapshots``: "always" (every message is a full book),
    "first" (first message after subscribe is a snapshot, then deltas),
    or None for non-book topics.
    """

    stream: Stream
    topic: str
    kind: str
    description: str
    param: str | None = None
    book: bool = False
    snapshots: str | None = None


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("v1", "trade", "v1_trade", "Public trades; first message replays the last 60."),
    TopicSpec("v1", "realtimes", "v1_realtimes", "24 h ticker."),
    TopicSpec("v1", "kline", "v1_kline", "Candlesticks; subscribed as kline_<interval>.",
              param="interval"),
    TopicSpec("v1", "depth", "v1_depth", "Order book, 200 levels a side.",
              book=True, snapshots="always"),
    TopicSpec("v1", "mergedDepth", "v1_merged_depth", "Aggregated order book, 40 levels a side.",
              param="dump_scale", book=True, snapshots="always"),
    TopicSpec("v1", "diffDepth", "v1_diff_depth", "Order book snapshot, then deltas.",
              book=True, snapshots="first"),
    TopicSpec("v1", "lt", "v1_lt", "Leveraged-token net asset value."),
    TopicSpec("v2", "depth", "v2_depth", "Order book, 40 levels a side.",
              book=True, snapshots="always"),
    TopicSpec("v2", "kline", "v2_kline", "Candlesticks.", param="interval"),
    TopicSpec("v2", "trade", "v2_trade", "Public trades."),
    TopicSpec("v2", "bookTicker", "v2_book_ticker", "Best bid and ask."),
    TopicSpec("v2", "realtimes", "v2_realtimes", "24 h ticker."),
    TopicSpec("private", "outboundAccountInfo", "private_outbound_account_info",
              "Balance changes per asset."),
    TopicSpec("private", "executionReport", "private_execution_report", "Order updates."),
    TopicSpec("private", "ticketInfo", "private_ticket_info", "Own fills."),
    TopicSpec("private", "stop_executionReport", "private_stop_execution_report",
              "TP/SL order updates."),
)

BY_STREAM_TOPIC: dict[tuple[str, str], TopicSpec] = {(t.stream, t.topic): t for t in TOPICS}
STREAMS: tuple[Stream, ...] = ("v1", "v2", "private")


def topic_id(topic: str, interval: str | None = None, dump_scale: int | None = None) -> str:
    """A subscription's id: the Bybit topic plus its parameter (``kline_1m``,
    ``mergedDepth_1``, ``trade``); used in metric labels and Kafka topic names."""
    if interval is not None:
        return f"{topic}_{interval}"
    if dump_scale is not None:
        return f"{topic}_{dump_scale}"
    return topic


def topics_of(stream: str) -> list[str]:
    return [t.topic for t in TOPICS if t.stream == stream]


def lookup(stream: str, topic: str) -> TopicSpec | None:
    return BY_STREAM_TOPIC.get((stream, topic))
