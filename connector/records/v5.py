"""Bybit v5 mappers: one ``V5Data`` frame → Avro-ready dicts, compiled from ``avro/v5_*.avsc``.

Record rules: a book frame (``orderbook.*``, one ``data`` object) becomes one
record; tickers and priceLimit frames one record; every other frame one record
per ``data`` element (N trades → N records, N fills → N records).

Where each field comes from is read from the schema, once, at import:

* ``"bybit": "<key>"``: the key in a ``data`` element (see ``mapping.py`` for the
  strict v5 conversions);
* ``"bybit_frame": "<key>"``: the key in the frame's envelope (``ts``, ``cts``,
  ``cs``, ``id``, ``creationTime``, ``type``), which ``V5Data`` carries already
  parsed;
* ``"bybit_repeat": "<key>"`` on ``symbol``: public frames name the symbol in
  their topic, and each element repeats it under that key; the two must agree;
* envelope keys the schema does not name (beside ``topic`` and ``data``)
  go to ``frame_extra`` as JSON texts, item keys it does not know to ``extra``:
  nothing Bybit sends is dropped, and the two never mix;
* the rest are the connector's own: ``stream``, ``bybit_topic`` (the topic id),
  ``symbol`` from the topic (public), ``receive_time``, and for books ``depth``,
  ``is_snapshot`` (from ``type``) and ``resync_reason`` (null; see
  ``to_marker``).

Only what identifies a record is required (the symbol, the ids used for keys
and de-duplication, ``u``/``seq`` and the levels of a book); every other
field is nullable, null when Bybit leaves it out, and where the schema marks
it ``"bybit_expected"`` its absence is reported to ``on_missing(path)`` (the
metric ``record_fields_missing_total``). Anything else that does not fit
raises ``MappingError`` (the frame goes to the dead-letter topic); no
half-filled record is returned.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from connector.bybit.events import V5Data
from connector.bybit.topics import V5_ORDERBOOK_DEPTHS
from connector.records.mapping import (
    MappingError,
    OnMissing,
    exact_long,
    exact_str,
    expected_fields,
    field_plan,
    map_value,
    row_mapper,
)

__all__ = ["BOOK_KINDS", "KEY_FIELDS", "V5Mapper", "compile_mapper", "to_marker"]

V5Mapper = Callable[[V5Data], list[dict[str, Any]]]

BOOK_KINDS = frozenset({"v5_orderbook", "v5_orderbook_rpi"})
# Kafka key field per private kind: an order's updates and fills stay in order;
# wallet rows per account. Public kinds are keyed by symbol.
KEY_FIELDS = {"v5_order": "order_id", "v5_execution": "order_id",
              "v5_execution_fast": "order_id", "v5_wallet": "account_type"}

# Envelope key (the schema's "bybit_frame") → the V5Data attribute holding it.
_FRAME_ATTRS = {"ts": "ts", "cts": "cts", "cs": "cs", "id": "msg_id",
                "creationTime": "creation_time", "type": "type"}
# Book depth per topic id; orderbook.rpi is a 50-level book whose topic names no depth.
_DEPTHS = {f"orderbook.{d}": d for d in V5_ORDERBOOK_DEPTHS} | {"orderbook.rpi": 50}
_SNAPSHOT = {"snapshot": True, "delta": False}


def _envelope_reader(kind: str, schema: dict[str, Any],
                     on_missing: OnMissing | None) -> Callable[[V5Data, dict], None]:
    """Copies the envelope fields the schema names into a record, checking type and
    presence, and every other envelope key into ``frame_extra``."""
    fields = []
    for field in schema["fields"]:
        key = field.get("bybit_frame")
        if key is None:
            continue
        avro_type = field["type"]
        nullable = isinstance(avro_type, list) and "null" in avro_type
        if isinstance(avro_type, list):
            avro_type = next(t for t in avro_type if t != "null")
        if isinstance(avro_type, dict):
            avro_type = avro_type["type"]
        check, same = (exact_str, str) if avro_type == "string" else (exact_long, int)
        # 0 required, 1 nullable, 2 nullable and counted when missing (as in row_mapper)
        counted = bool(field.get("bybit_expected")) and on_missing is not None
        fields.append((field["name"], key, _FRAME_ATTRS[key], check, same,
                       (2 if counted else 1) if nullable else 0))
    # Envelope keys a record holds in fields of its own (books: `type` is among them).
    known = frozenset({"topic", "data"} | {key for _, key, *_ in fields})
    is_known = known.issuperset

    def read(data: V5Data, out: dict[str, Any]) -> None:
        frame = data.frame
        unread: set[str] | None = None  # known keys whose value the decoder could not take
        for name, key, attr, check, same, nullable in fields:
            value = getattr(data, attr)
            if type(value) is same:  # the usual case: no call
                pass
            elif value is None:
                if not nullable:
                    raise MappingError(kind, name, f"Bybit frame field {key!r} is missing")
                if frame.get(key) is not None:  # e.g. an `id` sent as a number: keep it
                    unread = (unread or set()) | {key}
                elif nullable == 2:
                    on_missing(name)  # type: ignore[misc]
            else:
                map_value(kind, name, f"Bybit frame field {key!r}", check, value)
            out[name] = value
        if unread is None and is_known(frame):
            out["frame_extra"] = None
        else:
            keep = known - (unread or set())
            try:
                out["frame_extra"] = {k: json.dumps(v) for k, v in frame.items()
                                      if k not in keep} or None
            except RecursionError:
                raise MappingError(kind, "frame_extra", "a frame field Bybit added is nested "
                                                        "too deeply to keep as JSON") from None

    return read


def compile_mapper(kind: str, schema: dict[str, Any],
                   on_missing: OnMissing | None = None) -> V5Mapper:
    """The mapper of one v5 kind, compiled from its parsed ``.avsc``; ``on_missing``
    is told the path of each expected field a frame leaves out."""
    fields = {f["name"]: f for f in schema["fields"]}
    plan = field_plan(schema, strict=True, on_missing=on_missing)
    repeat: str | None = fields["symbol"].get("bybit_repeat")
    known = frozenset({key for _, key, _, _ in plan} | ({repeat} if repeat else set()))
    map_row = row_mapper(kind, plan, known, expected_fields(schema["fields"]), on_missing)
    envelope = _envelope_reader(kind, schema, on_missing)
    symbol_field = fields["symbol"]
    # public: the topic's symbol; private rows: their own `symbol` (in the plan); wallet: null
    symbol_from_topic = "bybit" not in symbol_field and symbol_field["type"] == "string"
    book = kind in BOOK_KINDS
    one_per_frame = book or kind in ("v5_tickers", "v5_price_limit")

    def base_of(data: V5Data) -> dict[str, Any]:
        base: dict[str, Any] = {"stream": data.stream, "bybit_topic": data.topic_id,
                                "receive_time": data.stamp.wall_ms}
        if symbol_from_topic:
            if not data.symbol:
                raise MappingError(kind, "symbol", f"topic {data.topic!r} names no symbol")
            base["symbol"] = data.symbol
        elif "bybit" not in symbol_field:
            base["symbol"] = None
        envelope(data, base)
        if book:
            depth = _DEPTHS.get(data.topic_id)
            if depth is None:
                raise MappingError(kind, "depth", f"not a v5 book topic: {data.topic_id!r}")
            snapshot = _SNAPSHOT.get(data.type)  # type: ignore[arg-type]
            if snapshot is None:
                raise MappingError(kind, "is_snapshot",
                                   f"Bybit frame field 'type' is {data.type!r}, "
                                   "not snapshot or delta")
            base["depth"], base["is_snapshot"], base["resync_reason"] = depth, snapshot, None
        return base

    def check_symbol(item: dict[str, Any], symbol: str) -> None:
        value = item.get(repeat)  # type: ignore[arg-type]
        if value is not None and value != symbol:
            raise MappingError(kind, "symbol", f"Bybit field {repeat!r} is {value!r} but the "
                                               f"topic names {symbol!r}")

    def mapper(data: V5Data) -> list[dict[str, Any]]:
        base = base_of(data)
        items = data.items
        if one_per_frame:
            if len(items) != 1:
                raise MappingError(kind, "(data)", f"expected one object, got {len(items)}")
            record = map_row(items[0], base)
            if repeat is not None:
                check_symbol(items[0], data.symbol)
            return [record]
        records = [map_row(item, base.copy()) for item in items]
        if repeat is not None:
            for item in items:
                check_symbol(item, data.symbol)
        return records

    return mapper


def to_marker(record: dict[str, Any], reason: str) -> dict[str, Any]:
    """A resync marker made from the book record of the frame that revealed the problem.

    It keeps that frame's identity (symbol, depth, times, ``update_id``,
    ``cross_seq``) and says "discard your book until the next snapshot":
    ``is_snapshot`` false, no levels (a consumer applying it as a delta changes
    nothing), ``frame_type`` null (the connector wrote it, not Bybit),
    ``resync_reason`` set, ``extra`` and ``frame_extra`` null.
    """
    if not isinstance(reason, str) or not reason:
        raise ValueError("a resync marker needs a reason, e.g. 'gap'")
    return {**record, "frame_type": None, "is_snapshot": False, "bids": [], "asks": [],
            "resync_reason": reason, "extra": None, "frame_extra": None}
