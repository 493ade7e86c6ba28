"""``bybit-kafka-connector exchange`` / ``python -m connector.exchange``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

EXTRA_HINT = ("error: the local exchange needs the 'exchange' extra: "
              "pip install 'bybit-kafka-connector[exchange]'")


def main(argv: list[str] | None = None, prog: str = "python -m connector.exchange") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description="A local WebSocket server speaking Bybit's spot protocol "
                               "(v1, v2, private) with generated data and fault injection "
                               "(GET /control/drop, /control/pong_blackout?seconds=N, "
                               "/control/garbage?kind=text|binary|unknown, "
                               "/control/reject_subscribe, /control/fail_auth?mode=reject|close"
                               "|silent, /control/server_ping, /control/stats, "
                               "/control/trades?symbol=X: every trade made on X), and Bybit v5 "
                               "spot on the same port: /v5/public/spot and /v5/private "
                               "(same key; controls /control/v5/<action> with action gap, "
                               "restart, duplicate, resnapshot, resend_l1, reject_subscribe, "
                               "fail_auth, close_idle, drop, pause, resume, stats, book).")
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="default: 8765 (0: any free)")
    parser.add_argument("--api-key", default="demo-key", help="key the private stream accepts")
    parser.add_argument("--api-secret-env", default=None, metavar="VAR",
                        help="environment variable holding the API secret (default: "
                             "'demo-secret')")
    parser.add_argument("--rate", type=float, default=None,
                        help="data frames per second per subscription (default: Bybit's "
                             "periods, 100-300 ms)")
    parser.add_argument("--trades-per-frame", type=int, default=1,
                        help="new trades per symbol per market tick (default: 1)")
    parser.add_argument("--compression", choices=["gzip", "zlib", "deflate"], default="gzip",
                        help="codec of binary frames (default: gzip)")
    parser.add_argument("--private-interval", type=float, default=1.0,
                        help="seconds between simulated account fills (default: 1)")
    parser.add_argument("--idle-timeout", type=float, default=60.0,
                        help="drop clients that stop pinging after this many seconds")
    parser.add_argument("--v5-idle-timeout", type=float, default=600.0,
                        help="v5: drop connections with neither ping nor data for this many "
                             "seconds (default: 600, as Bybit)")
    parser.add_argument("--kline-scale", type=float, default=1.0,
                        help="v5: candle length multiplier (0.01: a 1-minute candle lasts "
                             "0.6 s; default: 1)")
    args = parser.parse_args(argv)
    try:
        from connector.exchange.server import ExchangeServer
        from connector.exchange.v5 import V5Settings
    except ImportError as exc:
        if exc.name != "websockets" and "websockets" not in str(exc):
            raise
        print(EXTRA_HINT, file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s exchange: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)  # one line per connection is noise
    secret = os.environ.get(args.api_secret_env, "") if args.api_secret_env else "demo-secret"
    if args.api_secret_env and not secret:
        parser.error(f"environment variable {args.api_secret_env} is not set")
    server = ExchangeServer(args.host, args.port, args.api_key, secret, rate=args.rate,
                            idle_timeout=args.idle_timeout, compression=args.compression,
                            private_interval=args.private_interval,
                            trades_per_frame=args.trades_per_frame,
                            v5=V5Settings(idle_timeout=args.v5_idle_timeout,
                                          kline_scale=args.kline_scale))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with server:
        print(f"local exchange at {server.url} (paths /spot/quote/ws/v1, /spot/quote/ws/v2, "
              f"/spot/ws, /v5/public/spot, /v5/private; "
              f"control {server.url.replace('ws:', 'http:')}/control/...)", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
