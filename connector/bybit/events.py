"""Typed events a raw WebSocket frame decodes into.

These small frozen values are the contract between the exchange side
(``legacy/frames.py`` produces them, ``connection.py`` routes them) and the record
side (``records/`` maps ``MarketData``/``PrivateData`` to Avro-ready dicts).
Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Stream = Literal["v1", "v2", "private", "v5", "v5-private"]


@dataclass(frozen=True, slots=True)
class Stamp:
    """When the connector received a frame.

    ``wall_ms`` is epoch milliseconds (comparable with Bybit's timestamps, for
    lag); ``mono_ns`` is ``time.monotonic_ns()`` (for latency inside the
    process, immune to clock steps).
    """

    wall_ms: int
    mono_ns: int


@dataclass(frozen=True, slots=True)
class Ack:
    """A subscribe/cancel acknowledgement. ``ok`` is ``code == "0"``."""

    topic: str | None
    symbol: str | None
    event: str | None
    params: dict[str, Any]
    code: str
    msg: str

    @property
    def ok(self) -> bool:
        return self.code == "0"


@dataclass(frozen=True, slots=True)
class SubError:
    """An error frame that may name neither topic nor symbol.

    e.g. ``{"code":"-100010","desc":"Invalid Symbols!"}``. The connection
    correlates it with a pending subscription by what it names, else by order.
    """

    code: str
    msg: str
    topic: str | None = None
    symbol: str | None = None


@dataclass(frozen=True, slots=True)
class Pong:
    """Answer to our ping. ``ts`` is the server's clock in ms where the pong
    carries one (legacy ``{"pong": ms}``, v5 private ``args[0]``), else 0; it
    is not an echo of ours, so any pong answers the oldest outstanding ping."""

    ts: int


@dataclass(frozen=True, slots=True)
class ServerPing:
    """A server-initiated ping; must be answered with ``{"pong": ts}``."""

    ts: int


@dataclass(frozen=True, slots=True)
class AuthResult:
    success: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class MarketData:
    """One public data frame (v1 or v2), already unwrapped.

    ``topic`` is the normalised Bybit topic: ``kline`` for both v1
    (``kline_1m`` subscriptions send ``"topic":"kline"``) and v2, with the
    interval in ``params["klineType"]``. ``symbol`` is the envelope's symbol
    (v1 ``symbol``, v2 ``params.symbol``): route by it, not by ``items[].s``.
    ``items`` is v1's ``data`` list, or v2's single ``data`` object as a
    one-element tuple. ``first`` is v1's ``f`` parsed leniently (``"True"``
    counts), ``None`` on v2. ``send_time_ms`` is v1's ``sendTime``, ``None``
    on v2. ``params`` values are kept as Bybit sent them (often strings).
    ``size`` is the frame's size in bytes as received (after decompression).
    """

    stream: Stream
    topic: str
    symbol: str
    params: dict[str, Any]
    items: tuple[dict[str, Any], ...]
    first: bool | None
    send_time_ms: int | None
    stamp: Stamp
    size: int = 0
    raw: str | bytes = b""  # the frame as received, for the dead-letter topic if mapping fails
    # The decoded frame object itself (v1/v2 envelope as sent: symbolName, f, params, any
    # key Bybit adds), so records keep frame-level values; not copied, not parsed again.
    frame: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PrivateData:
    """One private frame: a list of account events (a bare object becomes a
    one-element tuple). Each event keeps Bybit's fields; ``e`` names its type.
    """

    events: tuple[dict[str, Any], ...]
    stamp: Stamp
    size: int = 0
    raw: str | bytes = b""  # the frame as received, for the dead-letter topic if mapping fails


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A frame we could not understand. Never dropped: it goes to the
    dead-letter topic with ``raw`` (exact bytes as received, before
    decompression) and ``reason`` (a short, bounded machine-readable label
    such as ``invalid_json`` or ``unknown_shape``) plus ``detail`` (human text).
    """

    raw: bytes
    reason: str
    detail: str
    stream: Stream
    stamp: Stamp = field(default_factory=lambda: Stamp(0, 0))


@dataclass(frozen=True, slots=True)
class V5Data:
    """One Bybit v5 data frame (public spot or private), already unwrapped.

    The contract between the v5 decoder (``bybit/v5/frames.py``) and the v5
    mappers (``records/v5.py``); nothing here is parsed again downstream.

    ``topic`` is the wire topic as Bybit sent it (``orderbook.50.BTCUSDT``,
    ``publicTrade.BTCUSDT``, ``order.spot``, ``wallet``). ``topic_id`` is the
    subscription it belongs to, without the symbol (``orderbook.50``,
    ``kline.1``, ``publicTrade``, ``order.spot``): used for routing, metric
    labels and Kafka topic names. ``symbol`` is the symbol the topic names
    (public) or ``""`` (private). ``type`` is ``snapshot``/``delta`` where
    Bybit sends one. ``ts`` (public ``ts``), ``cts`` (book matching-engine
    time), ``cs`` (tickers cross sequence), ``msg_id`` (private ``id``) and
    ``creation_time`` (private ``creationTime``) are the envelope's values,
    ``None`` where absent. ``items`` is ``data`` as a tuple: the array's
    elements, or the single object (books, tickers, priceLimit) as a
    one-element tuple. ``size`` is the frame's size in bytes as received.
    """

    stream: Stream
    topic: str
    topic_id: str
    symbol: str
    type: str | None
    ts: int | None
    cts: int | None
    cs: int | None
    msg_id: str | None
    creation_time: int | None
    items: tuple[dict[str, Any], ...]
    stamp: Stamp
    size: int = 0
    raw: str | bytes = b""  # the frame as received, for the dead-letter topic if mapping fails
    # The decoded frame object itself, so envelope keys no field names (any key Bybit
    # adds) reach the record's `frame_extra`; not copied, not parsed again.
    frame: dict[str, Any] = field(default_factory=dict)


Event = (Ack | SubError | Pong | ServerPing | AuthResult | MarketData | PrivateData | V5Data
         | Undecodable)
