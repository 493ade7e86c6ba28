"""A local exchange speaking Bybit's spot WebSocket protocol (tests and demo).

It deliberately shares no parsing code with ``connector.bybit``. It needs the
``exchange`` extra (websockets); the server is imported on first use, so the
command line (``--help``) works from a plain install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connector.exchange.server import ExchangeServer

__all__ = ["ExchangeServer"]


def __getattr__(name: str) -> Any:
    if name == "ExchangeServer":
        from connector.exchange.server import ExchangeServer

        return ExchangeServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
