"""A local exchange speaking Bybit's spot WebSocket protocol (tests and demo).

It deliberately shares no parsing code with ``connector.bybit``."""

from connector.exchange.server import ExchangeServer

__all__ = ["ExchangeServer"]
