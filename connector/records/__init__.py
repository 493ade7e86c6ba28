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
from connector.bybit.legacy.frames import market_topic_id
from connector.bybit.topics import LEGACY_STREAMS, TOPICS, V5_STREAMS
from connector.ops import metrics
from connector.records import v5
from connector.records.mapping import (
    MappingError,
    OnMissing,
    expected_fields,
    field_plan,
    map_item,
    row_mapper,
    to_bool,
    to_str,
)

__all__ = ["MAPPERS", "PRIVATE_KINDS", "MappingError", "expected_paths", "load_schema",
           "record_key", "repeated_fields", "resync_marker"]

_PACKAGED = Path(__file__).resolve().parent.parent / "avro"  # inside an installed wheel
_CHECKOUT = Path(__file__).resolve().parents[2] / "avro"  # a source checkout


def schema_dir() -> Path:
    """The folder of ``.avsc`` files: the package's own when installed from a wheel.

    The packaged folder is looked for first: next to an installed package,
    ``<site-packages>/avro`` is another distribution (Apache Avro's), not ours.
    """
    return _PACKAGED if _PACKAGED.is_dir() else _CHECKOUT


@functools.cache
def load_schema(kind: str) -> dict[str, Any]:
    """The parsed JSON of ``avro/<kind>.avsc``."""
    schema: dict[str, Any] = json.loads((schema_dir() / f"{kind}.avsc").read_text())
    return schema


# Record fields a mapper fills once per frame (one object shared by the frame's records).
_FRAME_LEVEL = frozenset({"stream", "bybit_topic", "symbol", "receive_time", "send_time",
                          "first_message", "frame_symbol_name", "binary", "interval",
                          "dump_scale", "is_snapshot", "depth", "resync_reason"})


@functools.cache
def repeated_fields(kind: str) -> frozenset[str]:
    """The fields of ``kind`` that every record of one frame shares: the
    serializer writes their bytes once per frame (a hint for speed only: a
    record holding other values is written just the same)."""
    schema = load_schema(kind)
    return frozenset(f["name"] for f in schema["fields"]
                     if f["name"] in _FRAME_LEVEL or "bybit_frame" in f)


# Frame-level keys (envelope, params) a record holds in fields of its own; any other
# goes to `frame_extra`, so nothing Bybit sends is dropped.
_FRAME_KEYS = {"v1": frozenset({"symbol", "symbolName", "topic", "params", "data", "f",
                                 "sendTime"}),
               "v2": frozenset({"topic", "params", "data", "f", "sendTime"})}
_PARAM_KEYS = {"v1": frozenset({"binary", "klineType", "dumpScale"}),
               "v2": frozenset({"symbol", "symbolName", "binary", "klineType"})}


def _frame_fields(kind: str, data: MarketData) -> dict[str, Any]:
    """The values of the frame (not of one item) every record of it carries."""
    frame, params = data.frame, data.frame.get("params")
    params = params if isinstance(params, dict) else {}
    symbol_name = frame.get("symbolName") if data.stream == "v1" else params.get("symbolName")
    extra = {k: json.dumps(v) for k, v in frame.items() if k not in _FRAME_KEYS[data.stream]}
    extra.update((f"params.{k}", json.dumps(v)) for k, v in params.items()
                 if k not in _PARAM_KEYS[data.stream])
    try:
        return {
            "first_message": None if frame.get("f") is None else to_bool(frame["f"]),
            "frame_symbol_name": None if symbol_name is None else to_str(symbol_name),
            "binary": None if params.get("binary") is None else to_bool(params["binary"]),
            "frame_extra": extra or None,
        }
    except ValueError as exc:
        raise MappingError(kind, "(frame)", str(exc)) from None


def _market_mapper(kind: str, book: bool, snapshots: str | None) -> Callable[..., list[dict]]:
    schema = load_schema(kind)
    names = {f["name"] for f in schema["fields"]}
    plan = field_plan(schema)
    # `s`/`symbol` repeat the envelope's symbol; the record keeps them as `item_symbol`.
    known = frozenset({key for _, key, _, _ in plan} | {"s", "symbol"})
    has_send, has_interval = "send_time" in names, "interval" in names
    has_dump_scale, has_event = "dump_scale" in names, "event_time" in names
    event_from_item = any(name == "event_time" for name, *_ in plan)
    map_row = row_mapper(kind, plan, known)

    def mapper(data: MarketData) -> list[dict[str, Any]]:
        # bybit_topic is the subscription's topic id (kline_1m, mergedDepth_1), the same
        # as the bybit.topic header and the Kafka topic name.
        base: dict[str, Any] = {"stream": data.stream, "bybit_topic": market_topic_id(data),
                                "symbol": data.symbol, "receive_time": data.stamp.wall_ms}
        base.update(_frame_fields(kind, data))
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
        out = []
        for item in data.items:
            rec = map_row(item, dict(base))
            rec["item_symbol"] = _item_symbol(kind, item, data.symbol)
            out.append(rec)
        return out

    return mapper


def _item_symbol(kind: str, item: dict[str, Any], symbol: str) -> str | None:
    """The item's own ``s`` (bookTicker: ``symbol``); it must name the frame's symbol.

    A mismatch is not written under the envelope's symbol (which keys, routes and
    de-duplicates the record): the mapper refuses the frame, so it goes to the
    dead-letter topic whole, with both symbols in the detail.
    """
    value = item.get("s", item.get("symbol"))
    if value is None:
        return None
    if value != symbol:
        raise MappingError(kind, "item_symbol",
                           f"item symbol {json.dumps(value)[:40]} differs from the frame's "
                           f"symbol {symbol!r}")
    return value


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


def expected_paths(kind: str) -> list[str]:
    """Paths of the fields of ``kind`` whose absence is counted (``coins.usd_value``
    for a field of a nested row): the only ``field`` label values of
    ``record_fields_missing_total`` for that kind."""
    def walk(fields: list[dict[str, Any]], prefix: str) -> list[str]:
        out = [prefix + name for name in sorted(expected_fields(fields))]
        for field in fields:
            types = field["type"] if isinstance(field["type"], list) else [field["type"]]
            for branch in types:
                items = branch.get("items") if isinstance(branch, dict) else None
                if isinstance(items, dict) and items.get("type") == "record":
                    out += walk(items["fields"], f"{prefix}{field['name']}.")
        return out
    return walk(load_schema(kind)["fields"], "")


def _missing_counter(kind: str) -> OnMissing:
    """Counts an expected field a frame of ``kind`` left out. Every child is created
    here, once, so dashboards show zeros and the label set stays the schema's."""
    children = {path: metrics.record_fields_missing_total.labels(kind, path)
                for path in expected_paths(kind)}

    def count(path: str) -> None:
        children[path].inc()

    return count


MAPPERS.update({kind: v5.compile_mapper(kind, load_schema(kind), _missing_counter(kind))
                for kind in dict.fromkeys(t.kind for t in TOPICS if t.stream in V5_STREAMS)})

# Private event type `e` → kind.
PRIVATE_KINDS: dict[str, str] = {t.topic: t.kind for t in TOPICS if t.stream == "private"}


def record_key(kind: str, record: dict[str, Any]) -> bytes:
    """Kafka key: the symbol, so per-symbol order holds within a partition.

    ``outboundAccountInfo`` has no symbol; its key is the first asset of the
    change (balance updates of one asset stay in order). v5 orders and fills
    are keyed by ``order_id`` (an order's updates and fills stay in order),
    the v5 wallet by ``account_type``, or by its topic (``wallet``) for a row
    without one (some wallet frames carry none): an account's rows then still
    share a partition.
    """
    field = v5.KEY_FIELDS.get(kind)
    if field is not None:
        value = record[field]
        return (value if value is not None else record["bybit_topic"]).encode()
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
