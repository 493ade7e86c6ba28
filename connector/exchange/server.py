"""A local exchange speaking Bybit's spot WebSocket protocol (server side).

Test infrastructure and demo tool. It parses and writes the protocol by
itself and imports nothing of the connector's client, so a mistake in one
shows up in the other.

Paths: ``/spot/quote/ws/v1``, ``/spot/quote/ws/v2``, ``/spot/ws`` (private),
Bybit v5 ``/v5/public/spot`` and ``/v5/private`` (``connector.exchange.v5``),
and ``/control/<action>?...`` (plain HTTP GET) for fault injection from
another process. Error frames it sends:

* a symbol outside the universe (``INVALID*``, or not ``^[A-Z0-9]{2,20}$``):
  ``{"code":"-100010","desc":"Invalid Symbols!"}`` (names nothing, like Bybit);
* an unknown topic: an ack with ``"code":"-10001","msg":"Invalid topic"``;
* mergedDepth without dumpScale: ack ``"code":"-10002","msg":"Param dumpScale required"``;
* an injected rejection: ack ``"code":"-10005","msg":"Subscription rejected"``.
"""

from __future__ import annotations

import asyncio
import collections
import gzip
import hashlib
import hmac
import json
import logging
import re
import threading
import time
import urllib.parse
import zlib
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from connector.exchange.market import KLINE_SECONDS, DiffBook, Market, now_ms
from connector.exchange.private import Account
from connector.exchange.v5 import V5_PATHS, V5Exchange, V5Settings

log = logging.getLogger(__name__)

PATHS = {"/spot/quote/ws/v1": "v1", "/spot/quote/ws/v2": "v2", "/spot/ws": "private"}
SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")
V1_TOPICS = {"trade", "realtimes", "depth", "mergedDepth", "diffDepth", "lt"} | {
    f"kline_{i}" for i in KLINE_SECONDS}
V2_TOPICS = {"depth", "kline", "trade", "bookTicker", "realtimes"}
# Bybit's push period per topic (seconds) when no rate is forced.
DEFAULT_PERIOD: dict[str | tuple[str, str], float] = {
    "v1": 0.3, ("v2", "depth"): 0.1, ("v2", "bookTicker"): 0.1, "v2": 0.3}


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


@dataclass(eq=False)
class Client:
    conn: ServerConnection
    stream: str
    tasks: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)
    authed: bool = False
    last_ping: float = field(default_factory=time.monotonic)


class ExchangeServer:
    """The exchange in a background thread (a context manager).

    ``rate``: data frames per second per subscription (None: Bybit's own
    periods). ``record_frames``: keep the last N data frames sent (as
    ``(stream, text)``) for tests that compare them with what Kafka got.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str = "demo-key",
                 api_secret: str = "demo-secret", rate: float | None = None,
                 idle_timeout: float | None = 60.0, record_frames: int = 0,
                 compression: str = "gzip", private_interval: float = 1.0,
                 trades_per_frame: int = 1, seed: int = 7,
                 v5: V5Settings | None = None) -> None:
        self.host, self.port = host, port
        self.api_key, self.api_secret = api_key, api_secret
        self.rate, self.idle_timeout = rate, idle_timeout
        self.compression = compression
        self.private_interval = private_interval
        self.trades_per_frame = trades_per_frame
        self.market = Market(seed)
        self.clients: set[Client] = set()
        self.sent: collections.deque[tuple[str, str]] = collections.deque(maxlen=record_frames)
        self._record = record_frames > 0
        self.counters: collections.Counter[str] = collections.Counter()
        self.server_pongs: list[int] = []
        self._pong_blackout_until = 0.0
        self._reject_next = 0
        self._auth_mode: str | None = None  # None | "reject" | "close" | "silent"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self.v5 = V5Exchange(self, v5 or V5Settings(), record_frames)

    # -- lifecycle -----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self) -> ExchangeServer:
        self._thread = threading.Thread(target=self._thread_main, name="exchange", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the local exchange did not start")
        return self

    def _thread_main(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        async with serve(self._handle, self.host, self.port, process_request=self._http,
                         compression=None, ping_interval=None, max_queue=None,
                         write_limit=2 ** 20) as server:
            self._server = server
            self.port = next(iter(server.sockets)).getsockname()[1]
            log.info("local exchange on %s (v1 %s/spot/quote/ws/v1, v2 .../ws/v2, "
                     "private .../spot/ws)", self.url, self.url)
            self._ready.set()
            reaper = asyncio.create_task(self._reap_idle())
            ticker = asyncio.create_task(self._ticker())
            await self._stopping.wait()
            reaper.cancel()
            ticker.cancel()
            for client in list(self.clients):
                client.conn.transport.abort()
            self.v5.abort_all()

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> ExchangeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn`` on the server's loop from another thread and wait for it."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(fn(*args), self._loop).result(10)

    # -- fault injection (thread-safe) ---------------------------------------------------

    def drop(self, stream: str | None = None) -> int:
        """Abruptly drop connections (no close frame), like a network failure."""
        async def go() -> int:
            victims = [c for c in self.clients if stream is None or c.stream == stream]
            for c in victims:
                c.conn.transport.abort()
            return len(victims) + self.v5.drop_now(stream)
        return int(self._call(go))

    def pong_blackout(self, seconds: float) -> None:
        """Stop answering pings for ``seconds``."""
        self._pong_blackout_until = time.monotonic() + seconds

    def send_garbage(self, kind: str = "text", stream: str | None = None) -> int:
        """Send an invalid frame: ``text`` (bad JSON), ``binary`` (bad bytes) or
        ``unknown`` (valid JSON of no known shape)."""
        payloads: dict[str, str | bytes] = {
            "text": "{not json", "binary": b"\x00\xffgarbage\x9c",
            "unknown": dumps({"hello": "world", "n": [1, 2]})}
        payload = payloads[kind]

        async def go() -> int:
            victims = [c for c in self.clients if stream is None or c.stream == stream]
            for c in victims:
                await c.conn.send(payload)
            return len(victims)
        return int(self._call(go))

    def server_ping(self, stream: str | None = None) -> int:
        """Send ``{"ping": ms}`` to clients; their pongs land in ``server_pongs``."""
        async def go() -> int:
            victims = [c for c in self.clients if stream is None or c.stream == stream]
            for c in victims:
                await c.conn.send(dumps({"ping": now_ms()}))
            return len(victims)
        return int(self._call(go))

    def pause_feeds(self) -> None:
        """Stop every data feed (connections stay open): nothing more is sent,
        so a test can compare what was sent with what arrived."""
        async def go() -> None:
            for c in self.clients:
                for task in c.tasks.values():
                    task.cancel()
                c.tasks.clear()
            self.v5.paused = True
        self._call(go)

    def reject_next_subscribe(self, count: int = 1) -> None:
        self._reject_next += count

    def fail_auth(self, mode: str | None = "reject") -> None:
        """``reject`` ({"auth":"fail"}), ``close`` (close after auth), ``silent``, or None."""
        self._auth_mode = mode

    def client_count(self, stream: str | None = None) -> int:
        return sum(1 for c in self.clients if stream is None or c.stream == stream)

    def trade_tape(self, symbol: str) -> list[dict[str, Any]]:
        """Every trade the market made on ``symbol`` (ids ``v``, oldest first), listened
        to or not: what a client that was away should have got."""
        async def go() -> list[dict[str, Any]]:
            return self.market.trade_tape(symbol)
        result: list[dict[str, Any]] = self._call(go)
        return result

    def subscriptions(self) -> dict[str, int]:
        """How many clients stream each subscription now (``"stream topic symbol"``)."""
        async def go() -> dict[str, int]:
            held = collections.Counter(f"{c.stream} {topic.rstrip(':')} {symbol}"
                                       for c in self.clients for (topic, symbol) in c.tasks)
            return dict(held)
        return dict(self._call(go))

    def sent_frames(self, stream: str | None = None) -> list[dict[str, Any]]:
        return [json.loads(t) for s, t in list(self.sent) if stream is None or s == stream]

    # -- HTTP control ----------------------------------------------------------------

    def _http(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urllib.parse.urlsplit(request.path)
        if url.path in PATHS or url.path in V5_PATHS:
            return None
        if not url.path.startswith("/control/"):
            return conn.respond(HTTPStatus.NOT_FOUND, "not found\n")
        q = dict(urllib.parse.parse_qsl(url.query))
        action = url.path.removeprefix("/control/")
        if action.startswith("v5/"):
            return self.v5.http(conn, action.removeprefix("v5/"), q)
        stream = q.get("stream")
        loop_actions = {"drop": lambda: self._drop_now(stream),
                        "garbage": lambda: self._schedule_garbage(q.get("kind", "text"), stream),
                        "server_ping": lambda: self._schedule_server_ping(stream)}
        if action in loop_actions:
            result: Any = loop_actions[action]()
        elif action == "pong_blackout":
            self.pong_blackout(float(q.get("seconds", "30")))
            result = "ok"
        elif action == "reject_subscribe":
            self.reject_next_subscribe(int(q.get("count", "1")))
            result = "ok"
        elif action == "fail_auth":
            self.fail_auth(q.get("mode") or None)
            result = "ok"
        elif action == "trades":  # on the loop thread already: no lock needed
            result = self.market.trade_tape(q.get("symbol", ""))
        elif action == "stats":
            result = {"clients": {s: self.client_count(s) for s in PATHS.values()},
                      "counters": dict(self.counters), "v5": self.v5.control("stats", {}),
                      "subscriptions": collections.Counter(
                          f"{c.stream} {t.rstrip(':')} {s}" for c in self.clients
                          for (t, s) in c.tasks)}
        else:
            return conn.respond(HTTPStatus.NOT_FOUND, f"unknown action {action}\n")
        return conn.respond(HTTPStatus.OK, dumps({"ok": True, "result": result}) + "\n")

    def _drop_now(self, stream: str | None) -> int:
        victims = [c for c in self.clients if stream is None or c.stream == stream]
        for c in victims:
            c.conn.transport.abort()
        return len(victims) + self.v5.drop_now(stream)

    def _schedule_garbage(self, kind: str, stream: str | None) -> str:
        payloads: dict[str, str | bytes] = {"text": "{not json", "binary": b"\x00\xffgarbage",
                                            "unknown": dumps({"hello": "world"})}
        payload = payloads.get(kind, "{not json")
        for c in [c for c in self.clients if stream is None or c.stream == stream]:
            self._background(c.conn.send(payload))
        return "scheduled"

    def _schedule_server_ping(self, stream: str | None) -> str:
        for c in [c for c in self.clients if stream is None or c.stream == stream]:
            self._background(c.conn.send(dumps({"ping": now_ms()})))
        return "scheduled"

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- protocol --------------------------------------------------------------------

    async def _handle(self, conn: ServerConnection) -> None:
        path = urllib.parse.urlsplit(conn.request.path if conn.request else "/")
        if path.path in V5_PATHS:
            await self.v5.handle(conn, path.path, path.query)
            return
        client = Client(conn, PATHS[path.path])
        self.clients.add(client)
        self.counters[f"connections.{client.stream}"] += 1
        try:
            if client.stream == "private":
                q = dict(urllib.parse.parse_qsl(path.query))
                if "api_key" in q and await self._auth(client, q["api_key"], q.get("expires"),
                                                       q.get("signature")) is False:
                    return
            async for message in conn:
                await self._on_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(client)
            for task in client.tasks.values():
                task.cancel()

    async def _on_message(self, client: Client, message: str | bytes) -> None:
        try:
            msg = json.loads(message)
        except ValueError:
            await client.conn.send(dumps({"code": "-10000", "desc": "Invalid request"}))
            return
        if not isinstance(msg, dict):
            return
        if "ping" in msg:
            client.last_ping = time.monotonic()
            self.counters["pings"] += 1
            if time.monotonic() >= self._pong_blackout_until:
                await client.conn.send(dumps({"pong": now_ms()}))  # its own clock, as Bybit
            return
        if "pong" in msg:
            self.server_pongs.append(msg["pong"])
            return
        if msg.get("op") == "auth" and client.stream == "private":
            args = msg.get("args") or [None, None, None]
            await self._auth(client, *(list(args) + [None] * 3)[:3])
            return
        if msg.get("event") in ("sub", "cancel") and client.stream in ("v1", "v2"):
            await self._subscribe(client, msg)

    async def _auth(self, client: Client, key: Any, expires: Any, signature: Any) -> bool:
        mode = self._auth_mode
        self.counters["auth_attempts"] += 1
        if mode == "silent":
            return False
        if mode == "close":
            await client.conn.close()
            return False
        try:
            exp = int(expires)
        except (TypeError, ValueError):
            exp = 0
        expected = hmac.new(self.api_secret.encode(), f"GET/realtime{exp}".encode(),
                            hashlib.sha256).hexdigest()
        ok = (mode is None and key == self.api_key and isinstance(signature, str)
              and hmac.compare_digest(signature, expected) and exp > now_ms())
        await client.conn.send(dumps({"auth": "success" if ok else "fail"}))
        if ok and not client.authed:
            client.authed = True
            client.tasks[("private", "")] = asyncio.create_task(self._private_feed(client))
        return ok

    async def _subscribe(self, client: Client, msg: dict[str, Any]) -> None:
        topic = msg.get("topic")
        params: dict[str, Any] = msg["params"] if isinstance(msg.get("params"), dict) else {}
        binary = params.get("binary") in (True, "true")
        if client.stream == "v1":
            symbols = [s for s in str(msg.get("symbol", "")).split(",") if s]
            known = topic in V1_TOPICS
        else:
            symbols = [str(params.get("symbol", ""))]
            known = topic in V2_TOPICS
        echo = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items()}
        ack = ({"topic": topic, "event": msg["event"], "symbol": msg.get("symbol"),
                "params": echo} if client.stream == "v1"
               else {"topic": topic, "event": msg["event"], "params": echo})
        if not known:
            await client.conn.send(dumps({**ack, "code": "-10001", "msg": "Invalid topic"}))
            return
        if not symbols or any(not SYMBOL_RE.match(s) or s.startswith("INVALID") for s in symbols):
            await client.conn.send(dumps({"code": "-100010", "desc": "Invalid Symbols!"}))
            return
        if topic == "mergedDepth" and "dumpScale" not in params:
            await client.conn.send(dumps({**ack, "code": "-10002",
                                          "msg": "Param dumpScale required"}))
            return
        if client.stream == "v2" and topic == "kline" and params.get("klineType") not in (
                KLINE_SECONDS):
            await client.conn.send(dumps({**ack, "code": "-10002",
                                          "msg": "Param klineType invalid"}))
            return
        if msg["event"] == "sub" and self._reject_next > 0:
            self._reject_next -= 1
            await client.conn.send(dumps({**ack, "code": "-10005",
                                          "msg": "Subscription rejected"}))
            return
        await client.conn.send(dumps({**ack, "code": "0", "msg": "Success"}))
        for symbol in symbols:
            key = (str(topic) + ":" + str(params.get("klineType", params.get("dumpScale", ""))),
                   symbol)
            old = client.tasks.pop(key, None)
            if old is not None:
                old.cancel()
            if msg["event"] == "sub":
                client.tasks[key] = asyncio.create_task(
                    self._feed(client, str(topic), symbol, params, binary))

    # -- data feeds --------------------------------------------------------------------

    def _period(self, stream: str, topic: str) -> float:
        if self.rate:
            return 1.0 / self.rate
        return DEFAULT_PERIOD.get((stream, topic), DEFAULT_PERIOD[stream])

    async def _send_data(self, client: Client, frame: dict[str, Any], binary: bool) -> None:
        text = dumps(frame)
        if self._record:
            self.sent.append((client.stream, text))
        self.counters[f"frames.{client.stream}.{frame.get('topic')}"] += 1
        if binary:
            data = text.encode()
            if self.compression == "gzip":
                payload = gzip.compress(data, 1)
            elif self.compression == "zlib":
                payload = zlib.compress(data, 1)
            else:
                c = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
                payload = c.compress(data) + c.flush()
            await client.conn.send(payload)
        else:
            await client.conn.send(text)

    async def _feed(self, client: Client, topic: str, symbol: str, params: dict[str, Any],
                    binary: bool) -> None:
        period = self._period(client.stream, topic.split("_")[0])
        sym = self.market.symbol(symbol)
        first = True
        book = DiffBook(self.market, sym) if topic == "diffDepth" else None
        cursor = sym.count  # trades: forward what the market made since the last frame
        next_at = time.monotonic()
        try:
            while True:
                for frame in self._frames(client.stream, topic, sym, params, first, book,
                                          cursor):
                    await self._send_data(client, frame, binary)
                cursor = sym.count
                first = False
                next_at += period
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        except (ConnectionClosed, asyncio.CancelledError):
            return
        except Exception:  # a generator bug must not leave a silent, open connection
            log.exception("the %s %s feed for %s failed; closing the connection",
                          client.stream, topic, symbol)
            await client.conn.close(1011, "feed failed")

    async def _ticker(self) -> None:
        """Keep the market trading whether or not anyone is subscribed (like Bybit)."""
        period = self._period("v1", "trade")
        next_at = time.monotonic()
        while True:  # on schedule, as the feeds: a busy loop catches up, not slows down
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            self.market.tick(self.trades_per_frame)

    def _frames(self, stream: str, topic: str, sym: Any, params: dict[str, Any], first: bool,
                book: DiffBook | None, cursor: int) -> list[dict[str, Any]]:
        """This period's frames: one, or for trades one per batch of new trades (v1: the
        60-trade replay first) or per trade (v2), none when the market made none."""
        if topic == "trade":
            trades = list(sym.trades) if first and stream == "v1" else sym.trades_after(cursor)
            if stream == "v1":
                return [self._frame(stream, topic, sym, params, first, book, trades)] if (
                    trades) else []
            return [self._frame(stream, topic, sym, params, first, book, [t]) for t in trades]
        return [self._frame(stream, topic, sym, params, first, book, [])]

    def _frame(self, stream: str, topic: str, sym: Any, params: dict[str, Any], first: bool,
               book: DiffBook | None, trades: list[dict[str, Any]]) -> dict[str, Any]:
        m = self.market
        binary = "true" if params.get("binary") in (True, "true") else "false"
        if stream == "v2":
            p2: dict[str, Any] = {"symbol": sym.name, "binary": binary, "symbolName": sym.name}
            if topic == "depth":
                bids, asks = m.levels(sym, 40)
                data: dict[str, Any] = {"s": sym.name, "t": now_ms(), "v": m.next_version(),
                                        "b": bids, "a": asks}
            elif topic == "kline":
                p2["klineType"] = params.get("klineType")
                data = m.kline(sym, str(params.get("klineType")))
            elif topic == "trade":
                data = {**trades[0], "type": "1" if m._rng.random() < 0.05 else "0"}
            elif topic == "bookTicker":
                data = m.book_ticker(sym)
            else:
                data = m.ticker(sym, v1=False)
            return {"topic": topic, "params": p2, "data": data}
        p1: dict[str, Any] = {"realtimeInterval": "24h", "binary": binary}
        wire_topic = topic
        if topic == "trade":
            items = trades
        elif topic.startswith("kline_"):
            interval = topic.removeprefix("kline_")
            wire_topic = "kline"
            p1["klineType"] = interval
            items = [m.kline(sym, interval)]
        elif topic == "realtimes":
            items = [m.ticker(sym, v1=True, string_t=m._rng.random() < 0.05)]
        elif topic == "lt":
            items = [m.lt(sym)]
        elif topic == "diffDepth":
            assert book is not None
            items = [book.snapshot() if first else book.delta()]
        else:
            scale = int(params.get("dumpScale", 2)) if topic == "mergedDepth" else 2
            if topic == "mergedDepth":
                p1["dumpScale"] = str(params.get("dumpScale"))
            bids, asks = m.levels(sym, 40 if topic == "mergedDepth" else 200, max(scale, 0))
            items = [{"e": 301, "s": sym.name, "t": now_ms(), "v": m.next_version(),
                      "b": bids, "a": asks, "o": 0}]
        return {"symbol": sym.name, "symbolName": sym.name, "topic": wire_topic, "params": p1,
                "data": items, "f": first, "sendTime": now_ms()}

    async def _private_feed(self, client: Client) -> None:
        account = Account(self.market)
        try:
            while True:
                await asyncio.sleep(self.private_interval)
                for frame in account.next_frames():
                    text = dumps(frame)
                    if self._record:
                        self.sent.append(("private", text))
                    self.counters["frames.private"] += 1
                    await client.conn.send(text)
        except (ConnectionClosed, asyncio.CancelledError):
            return

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(1)
            if self.idle_timeout is None:
                continue
            now = time.monotonic()
            for c in list(self.clients):
                if now - c.last_ping > self.idle_timeout:
                    log.info("dropping a %s client that stopped pinging", c.stream)
                    c.conn.transport.abort()
