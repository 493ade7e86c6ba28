"""Bybit spot WebSocket → Apache Kafka source connector."""

__version__ = "0.1.0"
