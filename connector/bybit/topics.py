"""The one table describing every Bybit spot topic the connector supports.

Adding a Bybit topic means: one row here, one ``avro/<kind>.avsc``, one
mapper in ``records/`` registered under the same ``kind``, one sample test.
"""

from __future__ import annotations

from dataclasses import dataclass

from connector.bybit.events import Stream

KLINE_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d", "1w", "1M")
# Bybit v5's own interval names (minutes, then day, week, month).
V5_KLINE_INTERVALS = ("1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M")
V5_ORDERBOOK_DEPTHS = (1, 50, 200, 1000)
LEGACY_STREAMS: tuple[Stream, ...] = ("v1", "v2", "private")
V5_STREAMS: tuple[Stream, ...] = ("v5", "v5-private")


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How one Bybit topic is subscribed, decoded and written.

    ``kind`` names the Avro schema (``avro/<kind>.avsc``) and the mapper in
    ``records.MAPPERS``. ``param`` is the topic parameter a subscription must
    give (``interval`` for klines, ``dump_scale`` for mergedDepth, ``depth``
    for v5 orderbooks) or None.
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
    # -- Bybit v5 spot (what Bybit serves today) --------------------------------------
    TopicSpec("v5", "orderbook", "v5_orderbook",
              "Order book, depth 1/50/200/1000: snapshot, then deltas (depth 1: snapshots only).",
              param="depth", book=True, snapshots="first"),
    TopicSpec("v5", "orderbook.rpi", "v5_orderbook_rpi",
              "Order book with RPI liquidity, 50 levels: snapshot, then deltas.",
              book=True, snapshots="first"),
    TopicSpec("v5", "publicTrade", "v5_public_trade", "Public trades (up to 1,024 a message)."),
    TopicSpec("v5", "tickers", "v5_tickers", "24 h ticker, every 50 ms."),
    TopicSpec("v5", "kline", "v5_kline", "Candlesticks; confirm=true is the closed candle.",
              param="interval"),
    TopicSpec("v5", "priceLimit", "v5_price_limit", "Highest bid and lowest ask allowed."),
    TopicSpec("v5-private", "order", "v5_order", "Order updates, every category."),
    TopicSpec("v5-private", "order.spot", "v5_order", "Spot order updates."),
    TopicSpec("v5-private", "execution", "v5_execution", "Own fills, every category."),
    TopicSpec("v5-private", "execution.spot", "v5_execution", "Own spot fills."),
    TopicSpec("v5-private", "execution.fast", "v5_execution_fast",
              "Own fills, low-latency subset, every category."),
    TopicSpec("v5-private", "execution.fast.spot", "v5_execution_fast",
              "Own spot fills, low-latency subset."),
    TopicSpec("v5-private", "wallet", "v5_wallet", "Unified account wallet: balances per coin."),
)

BY_STREAM_TOPIC: dict[tuple[str, str], TopicSpec] = {(t.stream, t.topic): t for t in TOPICS}
STREAMS: tuple[Stream, ...] = (*V5_STREAMS, *LEGACY_STREAMS)


def topic_id(topic: str, interval: str | None = None, dump_scale: int | None = None) -> str:
    """A subscription's id: the Bybit topic plus its parameter (``kline_1m``,
    ``mergedDepth_1``, ``trade``); used in metric labels and Kafka topic names."""
    if interval is not None:
        return f"{topic}_{interval}"
    if dump_scale is not None:
        return f"{topic}_{dump_scale}"
    return topic


def v5_topic_id(topic: str, interval: str | None = None, depth: int | None = None) -> str:
    """A v5 subscription's id, Bybit's topic without the symbol: ``orderbook.50``,
    ``kline.1``, ``publicTrade``, ``order.spot``; used in metric labels and
    Kafka topic names (``bybit.spot.v5.orderbook.50``)."""
    if depth is not None:
        return f"{topic}.{depth}"
    if interval is not None:
        return f"{topic}.{interval}"
    return topic


def topics_of(stream: str) -> list[str]:
    return [t.topic for t in TOPICS if t.stream == stream]


def lookup(stream: str, topic: str) -> TopicSpec | None:
    return BY_STREAM_TOPIC.get((stream, topic))
