"""The v5 wire protocol's small pieces for the local exchange: paths, topic
names Bybit accepts on ``/v5/private``, the auth signature, error texts, and
the v5 knobs. No I/O."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

V5_PATHS = {"/v5/public/spot": "v5", "/v5/private": "v5-private"}
PRIVATE_STREAMS = ("order", "execution", "execution.fast")
CATEGORIES = ("spot", "linear", "inverse", "option")
PRIVATE_TOPICS = ({*PRIVATE_STREAMS, "wallet", "position", "greeks", "dcp.spot", "dcp.future",
                   "dcp.option"}
                  | {f"{s}.{c}" for s in (*PRIVATE_STREAMS, "position") for c in CATEGORIES})
ACTIVE_RE = re.compile(r"^(\d+)([sm])$")


def signature(secret: str, expires: int) -> str:
    """Bybit's auth signature: hex HMAC-SHA256 of ``GET/realtime{expires}``."""
    return hmac.new(secret.encode(), f"GET/realtime{expires}".encode(),
                    hashlib.sha256).hexdigest()


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class V5Settings:
    """Knobs of the v5 paths (defaults: Bybit's documented behaviour)."""

    idle_timeout: float = 600.0
    max_args: int = 10
    args_size_message: str = "args size >10"
    args_budget: int = 21_000
    args_budget_message: str = "error:args length exceeds 21000 characters per connection"
    # True: the topics subscribed now count (unsubscribing refunds); False: every topic
    # ever accepted on the connection counts (a resubscribe loop eventually fails).
    args_budget_refunds: bool = True
    echo_req_id: bool = True
    l1_resend: float = 3.0  # level 1: resend the unchanged snapshot after this many s
    l1_change_prob: float = 0.5  # level 1: chance a push period changes the book
    kline_scale: float = 1.0  # candle length multiplier (0.001: a 1-minute candle is 60 ms)
    book_history: int = 10_000  # states kept per book topic for book_at()
    seed: int = 7



def max_active(query: str) -> float | None:
    """``max_active_time`` (``30s``..``600s``, ``1m``..``10m``) in seconds."""
    value = dict(urllib.parse.parse_qsl(query)).get("max_active_time", "")
    m = ACTIVE_RE.match(value)
    if not m:
        return None
    seconds = int(m.group(1)) * (60 if m.group(2) == "m" else 1)
    return float(min(600, max(30, seconds)))


def decode_error(message: str | bytes) -> str:
    """Bybit's (Go jsoniter) text for a frame that is not a JSON object."""
    head = (message if isinstance(message, str) else message.decode("latin-1"))[:10]
    if head.startswith("{"):
        return ("Failed to decode incoming data:ReadMapCB: expect \" after {, but found "
                f"{head[1:2] or 'EOF'}, error found in #2 byte of ...|{head}|...")
    return ("Failed to decode incoming data:readObjectStart: expect { or n, but found "
            f"{head[:1] or 'EOF'}, error found in #1 byte of ...|{head}|...")


