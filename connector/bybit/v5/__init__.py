"""Bybit v5 spot WebSocket protocol, client side: requests (``protocol``) and
frame decoding (``frames``), beside the legacy modules in ``connector.bybit``."""
