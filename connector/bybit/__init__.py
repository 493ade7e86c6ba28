"""Everything that speaks Bybit's spot WebSocket protocol (client side)."""
