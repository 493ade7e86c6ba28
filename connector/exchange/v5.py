"""Bybit v5 spot on the local exchange: ``/v5/public/spot`` and ``/v5/private``.

Served by the same server and port as the legacy paths (``ExchangeServer``
routes the two paths here) with the same key pair. The protocol as Bybit
documents it (see ``tests/samples/v5``):

* ``{"op":"subscribe"|"unsubscribe","req_id"?,"args":[...]}``. Public acks
  ``{"success","ret_msg":"subscribe","conn_id","req_id"?,"op"}``, private acks
  ``{"req_id"?,"success","ret_msg":"","op","conn_id"}``; ``req_id`` is echoed
  only when sent. Failures (``success:false``, the whole request fails and
  nothing of it is subscribed): ``error:handler not found,topic:<t>`` (unknown
  topic, symbol, depth or interval, lowercase symbol, a private topic on the
  public socket or the reverse), ``error:already subscribed,topic:<t>`` (the
  existing subscription keeps streaming), ``args size >10`` (more than 10
  args in one public request), the args budget message, ``Request not
  authorized`` (private subscribe before auth), and
  ``error:all-in-one and categorised topics in one request`` (``order`` with
  ``order.spot`` ...). Unsubscribing a topic that is not subscribed succeeds.
* Args budget (public), cumulative over the connection's requests: each
  subscribed topic costs ``len(topic)`` characters (JSON quotes and commas
  not counted); unsubscribing refunds it (``args_budget_refunds=False``:
  never, every topic ever accepted counts); a subscribe request that would
  take the connection past ``args_budget`` (21,000) fails as a whole.
* Invalid JSON (or not an object): ``{"success":false,"ret_msg":"Failed to
  decode incoming data:readObjectStart: ...","conn_id","op":""}``; the socket
  stays open. Unknown op: ``error:invalid op``.
* ``{"op":"ping"}``: public ``{"success":true,"ret_msg":"pong","conn_id",
  "req_id"?,"op":"ping"}``; private ``{"req_id"?,"op":"pong","args":["<ms>"],
  "conn_id"}``. RFC 6455 pings are answered by the websockets library.
* ``{"op":"auth","args":[key, expires_ms, hex hmac_sha256(secret,
  "GET/realtime"+expires)]}``; ``expires`` must be in the future. Success
  ``{"req_id"?,"success":true,"ret_msg":"","op":"auth","conn_id"}``, failure
  ``ret_msg:"Params Error"``.
* Idle close: a connection that neither pinged nor was sent data for
  ``idle_timeout`` s (default 600; ``/v5/private?max_active_time=30s..600s``
  or ``1m``..``10m`` lowers it per connection) is dropped without a close frame.

Fault controls (HTTP GET ``/control/v5/<action>`` on the same port; the same
names as methods of ``ExchangeServer.v5``): ``gap?symbol=&depth=`` (the next
update of the matching books is applied but never sent), ``restart?symbol=
&depth=`` (fresh book, snapshot with ``u=1``), ``duplicate?symbol=&depth=``
(the last delta again), ``resnapshot?symbol=&depth=`` (a snapshot at the
current ``u``), ``resend_l1?symbol=``,
``reject_subscribe?count=N``, ``fail_auth?mode=reject|close|silent|none``,
``close_idle?seconds=S`` (drop connections idle for S s now), ``drop?stream=
v5|v5-private|/v5/public/spot|/v5/private``, ``pause``, ``resume``, ``stats``,
``book?symbol=&depth=&u=``. The server-wide ``/control/drop``,
``pong_blackout``, ``reject_subscribe`` and ``fail_auth`` apply to v5 too
(and ``ExchangeServer.pause_feeds()`` pauses v5; ``v5.pause(False)`` resumes).

Data: books, trades, tickers, klines and price limits (``v5_feeds``) at
Bybit's spot push periods unless the server's ``rate`` forces one for all;
the simulated account (``v5_private``) every ``private_interval`` s. Knobs
live in ``V5Settings`` (``ExchangeServer(v5=V5Settings(...))``); ground truth
for tests (``book_at``, ``sent_frames``, ``stats``) is in ``v5_control``.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from connector.exchange.v5_control import V5Controls
from connector.exchange.v5_feeds import PERIODS, Feed, Feeds, parse_public
from connector.exchange.v5_market import V5Market, now_ms
from connector.exchange.v5_private import SpotAccount, private_frame
from connector.exchange.v5_protocol import (
    CATEGORIES,
    PRIVATE_STREAMS,
    PRIVATE_TOPICS,
    V5_PATHS,
    V5Settings,
    decode_error,
    dumps,
    max_active,
    signature,
)

if TYPE_CHECKING:
    from connector.exchange.server import ExchangeServer

log = logging.getLogger(__name__)

MAX_QUEUE = 100_000  # frames waiting for one slow client before it is dropped


@dataclass(eq=False)
class V5Client:
    conn: ServerConnection
    stream: str  # "v5" | "v5-private"
    conn_id: str
    idle_limit: float
    queue: asyncio.Queue[tuple[str, str | None]] = field(default_factory=asyncio.Queue)
    topics: dict[str, None] = field(default_factory=dict)
    args_used: int = 0
    authed: bool = False
    last_active: float = field(default_factory=time.monotonic)
    writer: asyncio.Task[None] | None = None

    def push(self, text: str, topic: str | None) -> None:
        """Queue a frame (never blocks; order of calls = order on the wire)."""
        if self.queue.qsize() > MAX_QUEUE:
            log.warning("dropping a %s client %d frames behind", self.stream, MAX_QUEUE)
            self.conn.transport.abort()
            return
        self.queue.put_nowait((text, topic))


class V5Exchange(V5Controls):
    """The v5 half of ``ExchangeServer``; runs on the server's event loop."""

    def __init__(self, server: ExchangeServer, settings: V5Settings,
                 record_frames: int) -> None:
        self.server, self.settings = server, settings
        self.market = V5Market(settings.seed, settings.kline_scale)
        self.feeds = Feeds(self.market, self._broadcast, settings.book_history,
                           settings.l1_resend, settings.l1_change_prob)
        self.account = SpotAccount(settings.seed + 4)
        self.account_subscribers: dict[V5Client, None] = {}
        self.account_task: asyncio.Task[None] | None = None
        self.clients: set[V5Client] = set()
        # (conn_id, stream, text) of every frame written, oldest first
        self.sent: collections.deque[tuple[str, str, str]] = collections.deque(
            maxlen=record_frames)
        self.counters: collections.Counter[str] = collections.Counter()
        self.paused = False
        self.reject_next = 0
        self.auth_mode: str | None = None
        self._reaper: asyncio.Task[None] | None = None

    # -- connections -------------------------------------------------------------------

    async def handle(self, conn: ServerConnection, path: str, query: str) -> None:
        stream = V5_PATHS[path]
        private = stream == "v5-private"
        idle = self.settings.idle_timeout
        if private and (limit := max_active(query)) is not None:
            idle = min(idle, limit)
        conn_id = (f"{secrets.token_hex(10)}-{secrets.token_hex(3)}" if private
                   else str(uuid.uuid4()))
        client = V5Client(conn, stream, conn_id, idle)
        client.writer = asyncio.create_task(self._writer(client))
        self.clients.add(client)
        self.counters[f"connections.{stream}"] += 1
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_idle())
        try:
            async for message in conn:
                await self._on_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(client)
            for topic in list(client.topics):
                self._unsubscribe(client, topic)
            client.writer.cancel()

    async def _writer(self, client: V5Client) -> None:
        record = self.sent.maxlen is not None and self.sent.maxlen > 0
        try:
            while True:
                text, topic = await client.queue.get()
                await client.conn.send(text)
                if topic is not None:
                    client.last_active = time.monotonic()
                    self.counters[f"frames.{client.stream}.{topic}"] += 1
                    if self.server._record:
                        self.server.sent.append((client.stream, text))
                if record:
                    self.sent.append((client.conn_id, client.stream, text))
        except (ConnectionClosed, asyncio.CancelledError):
            return

    def abort_all(self) -> None:
        for c in list(self.clients):
            c.conn.transport.abort()
        if self._reaper is not None:
            self._reaper.cancel()

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.settings.idle_timeout / 4))
            now = time.monotonic()
            for c in list(self.clients):
                if now - c.last_active > c.idle_limit:
                    log.info("dropping an idle %s client", c.stream)
                    self.counters["idle_closes"] += 1
                    c.conn.transport.abort()

    # -- replies -----------------------------------------------------------------------

    def _reply(self, c: V5Client, op: str, success: bool, ret_msg: str,
               req_id: Any = None) -> None:
        echo = req_id is not None and self.settings.echo_req_id
        if c.stream == "v5":
            frame: dict[str, Any] = {"success": success, "ret_msg": ret_msg,
                                     "conn_id": c.conn_id}
            if echo:
                frame["req_id"] = req_id
            frame["op"] = op
        else:
            frame = {"req_id": req_id} if echo else {}
            frame.update({"success": success, "ret_msg": ret_msg, "op": op,
                          "conn_id": c.conn_id})
        if not success:
            self.counters[f"failures.{c.stream}"] += 1
        c.push(dumps(frame), None)

    def _pong(self, c: V5Client, req_id: Any) -> None:
        echo = req_id is not None and self.settings.echo_req_id
        if c.stream == "v5":
            self._reply(c, "ping", True, "pong", req_id)
            return
        frame: dict[str, Any] = {"req_id": req_id} if echo else {}
        frame.update({"op": "pong", "args": [str(now_ms())], "conn_id": c.conn_id})
        c.push(dumps(frame), None)

    # -- requests ----------------------------------------------------------------------

    async def _on_message(self, c: V5Client, message: str | bytes) -> None:
        try:
            msg = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            msg = None
        if not isinstance(msg, dict):
            self._reply(c, "", False, decode_error(message))
            return
        op, req_id = msg.get("op"), msg.get("req_id")
        if op == "ping":
            c.last_active = time.monotonic()
            self.counters[f"pings.{c.stream}"] += 1
            if time.monotonic() >= self.server._pong_blackout_until:
                self._pong(c, req_id)
        elif op in ("subscribe", "unsubscribe"):
            self._request(c, op, msg.get("args"), req_id)
        elif op == "auth" and c.stream == "v5-private":
            await self._auth(c, msg.get("args"), req_id)
        else:
            self._reply(c, str(op or ""), False, "error:invalid op", req_id)

    async def _auth(self, c: V5Client, args: Any, req_id: Any) -> None:
        mode = self.auth_mode or self.server._auth_mode
        self.counters["auth_attempts"] += 1
        if mode == "silent":
            return
        if mode == "close":
            await c.conn.close()
            return
        key, expires, sig = (list(args) + [None] * 3)[:3] if isinstance(args, list) else [None] * 3
        try:  # a JSON number per the docs; a numeric string is tolerated
            exp = int(expires) if isinstance(expires, int | str) and expires is not True else 0
        except ValueError:
            exp = 0
        ok = (mode is None and key == self.server.api_key and isinstance(sig, str)
              and hmac.compare_digest(sig, signature(self.server.api_secret, exp))
              and exp > now_ms())
        if ok:
            c.authed = True
        self.counters["auth_ok" if ok else "auth_failed"] += 1
        self._reply(c, "auth", ok, "" if ok else "Params Error", req_id)

    def _check(self, c: V5Client, op: str, args: list[str]) -> str | None:
        """The failure text for a request, or None when it can be applied."""
        public = c.stream == "v5"
        for t in args:
            known = parse_public(t) is not None if public else t in PRIVATE_TOPICS
            if not known:
                return f"error:handler not found,topic:{t}"
        if op == "unsubscribe":
            return None
        if public and len(args) > self.settings.max_args:
            return self.settings.args_size_message
        if not public and not c.authed:
            return "Request not authorized"
        seen: set[str] = set()
        for t in args:
            if t in c.topics or t in seen:
                return f"error:already subscribed,topic:{t}"
            seen.add(t)
        if public and c.args_used + sum(len(t) for t in args) > self.settings.args_budget:
            return self.settings.args_budget_message
        if not public:
            whole = {t for t in args if t in PRIVATE_STREAMS}
            split = {t for t in args if t.rpartition(".")[0] in PRIVATE_STREAMS
                     and t.rpartition(".")[2] in CATEGORIES}
            if whole and split:
                return "error:all-in-one and categorised topics in one request"
        return None

    def _request(self, c: V5Client, op: str, args: Any, req_id: Any) -> None:
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            self._reply(c, op, False, "error:args must be an array of topic strings", req_id)
            return
        if op == "subscribe" and (self.reject_next > 0 or self.server._reject_next > 0):
            if self.reject_next > 0:
                self.reject_next -= 1
            else:
                self.server._reject_next -= 1
            self.counters["rejected_subscribes"] += 1
            self._reply(c, op, False, "error:subscription rejected (injected fault)", req_id)
            return
        failure = self._check(c, op, args)
        if failure is not None:
            self._reply(c, op, False, failure, req_id)
            return
        public = c.stream == "v5"
        self._reply(c, op, True, op if public else "", req_id)
        for t in args:
            if op == "unsubscribe":
                self._unsubscribe(c, t)
            else:
                c.args_used += len(t) if public else 0
                self._subscribe(c, t)

    def _subscribe(self, c: V5Client, topic: str) -> None:
        c.topics[topic] = None
        spec = parse_public(topic) if c.stream == "v5" else None
        if spec is None:  # private: no snapshot; the account runs while anyone listens
            if topic.split(".")[0] in ("order", "execution", "wallet"):
                self.account_subscribers[c] = None
                if self.account_task is None:
                    self.account_task = asyncio.create_task(self._run_account())
            return
        feed = self.feeds.get(spec)
        feed.subscribers[c] = None
        first = self.feeds.initial(feed)
        if first is not None:
            feed.frames += 1
            c.push(dumps(first), topic)
        if feed.task is None:
            feed.task = asyncio.create_task(self._run_feed(feed))

    def _unsubscribe(self, c: V5Client, topic: str) -> None:
        if topic in c.topics and c.stream == "v5" and self.settings.args_budget_refunds:
            c.args_used -= len(topic)
        c.topics.pop(topic, None)
        spec = parse_public(topic) if c.stream == "v5" else None
        if spec is not None and spec.topic in self.feeds.feeds:
            self.feeds.feeds[spec.topic].subscribers.pop(c, None)
        if spec is None and not any(t.split(".")[0] in ("order", "execution", "wallet")
                                    for t in c.topics):
            self.account_subscribers.pop(c, None)

    # -- feeds -------------------------------------------------------------------------

    def _period(self, key: str) -> float:
        rate = self.server.rate
        return 1.0 / rate if rate else PERIODS[key]

    async def _run_feed(self, feed: Feed) -> None:
        """Tick a feed at its push period while anyone is subscribed."""
        period = self._period(feed.spec.period_key)
        next_at = time.monotonic()
        try:
            while feed.subscribers:
                next_at += period
                delay = next_at - time.monotonic()
                if delay < -1.0:  # the loop stalled: do not burst to catch up
                    next_at, delay = time.monotonic(), 0.0
                await asyncio.sleep(max(0.0, delay))
                if not self.paused and feed.subscribers:
                    self.feeds.tick(feed)
        finally:
            feed.task = None

    def _broadcast(self, feed: Feed, frame: dict[str, Any] | str) -> None:
        text = frame if isinstance(frame, str) else dumps(frame)
        feed.frames += 1
        for c in feed.subscribers:
            c.push(text, feed.spec.topic)

    async def _run_account(self) -> None:
        try:
            while self.account_subscribers:
                await asyncio.sleep(self.server.private_interval)
                if self.paused:
                    continue
                for stream, rows, msg_id in self.account.step():
                    self._deliver(stream, rows, msg_id)
        finally:
            self.account_task = None

    def _deliver(self, stream: str, rows: list[dict[str, Any]], msg_id: str | None) -> None:
        """Send one account event on every topic form each client subscribed."""
        created = now_ms()
        for c in list(self.account_subscribers):
            for topic in (stream, f"{stream}.spot"):
                if topic not in c.topics:
                    continue
                c.push(dumps(private_frame(stream, topic, rows, msg_id, created)), topic)

    # -- HTTP control ------------------------------------------------------------------

    def http(self, conn: ServerConnection, action: str, q: dict[str, str]) -> Response:
        try:
            result = self.control(action, q)
        except KeyError as exc:
            return conn.respond(HTTPStatus.NOT_FOUND, f"{exc.args[0]}\n")
        except ValueError as exc:
            return conn.respond(HTTPStatus.BAD_REQUEST, f"{exc}\n")
        return conn.respond(HTTPStatus.OK, dumps({"ok": True, "result": result}) + "\n")


__all__ = ["V5_PATHS", "V5Exchange", "V5Settings", "signature"]
