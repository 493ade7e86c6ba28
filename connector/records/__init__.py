"""Map decoded Bybit events to Avro-ready dicts, one mapper per topic kind.

Pure functions, no I/O. The record rule: a Bybit message carrying N items
(a v1 ``data`` list, a private event list) becomes N records; a book message
becomes one record per book.

``MAPPERS[kind]`` is ``(MarketData) -> list[dict]`` for market kinds,
``(event, PrivateData) -> dict`` for private kinds and ``(V5Data) ->
list[dict]`` for Bybit v5 kinds (``v5.py``). Each is compiled once from
``avro/<kind>.avsc`` (see ``mapping.py``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connector.bybit.events import MarketData, PrivateData, V5Data
from connector.records import v5
from connector.records.mapping import MappingError, field_plan, map_item
from connector.topics import LEGACY_STREAMS, TOPICS, V5_STREAMS

__all__ = ["MAPPERS", "PRIVATE_KINDS", "MappingError", "load_schema", "record_key",
           "resync_marker"]

_PACKAGED = Path(__file__).resolve().parent.parent / "avro"  # inside an installed wheel
_CHECKOUT = Path(__file__).resolve().parents[2] / "avro"  # a source checkout


def schema_dir() -> Path:
    return _CHECKOUT if _CHECKOUT.is_dir() else _PACKAGED


@functools.cache
def load_schema(kind: str) -> dict[str, Any]:
    """The parsed JSON of ``avro/<kind>.avsc``."""
    schema: dict[str, Any] = json.loads((schema_dir() / f"{kind}.avsc").read_text())
    return schema


def _market_mapper(kind: str, book: bool, snapshots: str | None) -> Callable[..., list[dict]]:
    schema = load_schema(kind)
    names = {f["name"] for f in schema["fields"]}
    plan = field_plan(schema)
    # `s`/`symbol` repeat the envelope's symbol, which the record carries as `symbol`.
    known = frozenset({key for _, key, _, _ in plan} | {"s", "symbol"})
    has_send, has_interval = "send_time" in names, "interval" in names
    has_dump_scale, has_event = "dump_scale" in names, "event_time" in names
    event_from_item = any(name == "event_time" for name, *_ in plan)

    def mapper(data: MarketData) -> list[dict[str, Any]]:
        base: dict[str, Any] = {"stream": data.stream, "bybit_topic": data.topic,
                                "symbol": data.symbol, "receive_time": data.stamp.wall_ms}
        if has_send:
            base["send_time"] = data.send_time_ms
        if has_event and not event_from_item:
            base["event_time"] = data.send_time_ms  # klines: no event time of their own
        if has_interval:
            interval = data.params.get("klineType")
            if not isinstance(interval, str):
                raise MappingError(kind, "interval", "params.klineType is missing")
            base["interval"] = interval
        if has_dump_scale:
            try:
                base["dump_scale"] = int(data.params.get("dumpScale"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise MappingError(kind, "dump_scale", "params.dumpScale is missing") from None
        if book:
            base["is_snapshot"] = True if snapshots == "always" else bool(data.first)
        return [map_item(kind, plan, known, item, dict(base)) for item in data.items]

    return mapper


def _private_mapper(kind: str) -> Callable[..., dict]:
    schema = load_schema(kind)
    plan = field_plan(schema)
    known = frozenset(key for _, key, _, _ in plan)

    def mapper(event: dict[str, Any], data: PrivateData) -> dict[str, Any]:
        out: dict[str, Any] = {"stream": "private", "bybit_topic": event.get("e"),
                               "receive_time": data.stamp.wall_ms}
        return map_item(kind, plan, known, event, out)

    return mapper


MAPPERS: dict[str, Callable[..., Any]] = {
    t.kind: (_private_mapper(t.kind) if t.stream == "private"
             else _market_mapper(t.kind, t.book, t.snapshots))
    for t in TOPICS if t.stream in LEGACY_STREAMS
}
MAPPERS.update({kind: v5.compile_mapper(kind, load_schema(kind))
                for kind in dict.fromkeys(t.kind for t in TOPICS if t.stream in V5_STREAMS)})

# Private event type `e` → kind.
PRIVATE_KINDS: dict[str, str] = {t.topic: t.kind for t in TOPICS if t.stream == "private"}


def record_key(kind: str, record: dict[str, Any]) -> bytes:
    """Kafka key: the symbol, so per-symbol order holds within a partition.

    ``outboundAccountInfo`` has no symbol; its key is the first asset of the
    change (balance updates of one asset stay in order). v5 orders and fills
    are keyed by ``order_id`` (an order's updates and fills stay in order),
    the v5 wallet by ``account_type``.
    """
    field = v5.KEY_FIELDS.get(kind)
    if field is not None:
        return record[field].encode()
    symbol = record.get("symbol")
    if isinstance(symbol, str):
        return symbol.encode()
    balances = record.get("balances") or []
    return (balances[0]["asset"] if balances else kind).encode()


def resync_marker(kind: str, data: V5Data, reason: str) -> dict[str, Any]:
    """A v5 book resync marker (a valid ``kind`` record) for the frame ``data``
    that revealed a gap or an out-of-order update; ``reason`` e.g. ``"gap"``.

    Raises ``MappingError`` if ``data`` does not map (then there is no ``u``
    to name), ``ValueError`` for a kind that is not a v5 book or an empty reason.
    """
    if kind not in v5.BOOK_KINDS:
        raise ValueError(f"{kind} is not a v5 book kind")
    return v5.to_marker(MAPPERS[kind](data)[0], reason)
