"""One WebSocket's life: connect, (auth), subscribe, read, heartbeat, reconnect.

A loop you can follow top to bottom: ``_run`` retries ``_session`` with
backoff; ``_session`` connects, authenticates (private), subscribes, then
reads with a short timeout whose tick also sends the ``{"ping"}`` heartbeat,
checks pong freshness, ack timeouts and due retries. One thread per
connection; ``stop()`` sets an event the loop checks every tick.

``on_event`` is called on this thread for ``MarketData``, ``PrivateData`` and
``Undecodable``. It must return within a bounded time (the sink bounds its
backpressure wait to ``kafka.block_timeout_seconds``); the heartbeat is
re-checked after every callback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import websocket

from connector import metrics
from connector.bybit import frames, protocol
from connector.bybit.backoff import backoff, is_retryable
from connector.bybit.events import (
    Ack,
    AuthResult,
    Event,
    MarketData,
    Pong,
    PrivateData,
    ServerPing,
    Stamp,
    SubError,
    Undecodable,
)
from connector.bybit.protocol import Request, Subscription

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything one connection needs. Times in seconds."""

    name: str
    stream: str
    url: str
    subscriptions: tuple[Subscription, ...]
    ping_interval: float = 20.0
    pong_timeout: float = 10.0
    ack_timeout: float = 10.0
    auth_timeout: float = 10.0
    connect_timeout: float = 10.0
    read_timeout: float = 0.5
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    auth_retry_initial: float = 30.0  # bad keys must not hammer the server
    auth_retry_max: float = 300.0
    resubscribe_initial: float = 1.0
    resubscribe_max: float = 60.0
    max_symbols_per_request: int = 20
    api_key: str | None = field(default=None, repr=False)
    api_secret: str | None = field(default=None, repr=False)


class _Disconnect(Exception):
    """Ends a session with a reason from ``metrics.DISCONNECT_REASONS``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


@dataclass
class _Pending:
    request: Request
    sent: float
    attempt: int = 0


class Connection:
    """A resilient subscription to one Bybit stream endpoint (see module doc)."""

    def __init__(self, settings: ConnectionSettings, on_event: Callable[[Event], None]) -> None:
        self.settings = settings
        self.name = settings.name
        self._on_event = on_event
        self._stream: Any = settings.stream
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ws-{settings.name}")
        self._lock = threading.Lock()
        self._ws: websocket.WebSocket | None = None
        self.last_error: str | None = None
        self._up = False
        # (topic_id, symbol) → "pending" | "active" | "failed"
        self._state: dict[tuple[str, str], str] = {}
        self._pending: list[_Pending] = []
        self._retry_at: dict[Request, tuple[float, int]] = {}
        per_request = settings.max_symbols_per_request
        self._requests = [req for sub in settings.subscriptions
                          for req in protocol.build_subscribe(sub, per_request)]
        labels = (settings.stream, settings.name)
        self._m_up = metrics.connection_up.labels(*labels)
        self._m_rtt = metrics.heartbeat_rtt_seconds.labels(*labels)
        self._m_up.set(0)
        metrics.connects_total.labels(*labels)
        metrics.reconnect_attempts_total.labels(*labels)
        metrics.pong_timeouts_total.labels(*labels)
        for reason in metrics.DISCONNECT_REASONS:
            metrics.disconnects_total.labels(*labels, reason)
        self._frame_metrics: dict[str, tuple[Any, Any, Any]] = {}

    # -- public state ------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        return self._up

    @property
    def all_subscribed(self) -> bool:
        """Every configured (topic, symbol) acknowledged (private: authenticated)."""
        if self._stream == "private":
            return self._up
        with self._lock:
            return bool(self._state) and all(s == "active" for s in self._state.values())

    def subscription_states(self) -> dict[tuple[str, str], str]:
        with self._lock:
            return dict(self._state)

    def start(self) -> Connection:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the socket and join the thread (bounded by ``timeout``)."""
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s: thread did not stop within %.1f s", self.name, timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # -- the loop ------------------------------------------------------------------

    def _run(self) -> None:
        s = self.settings
        delays: Iterator[float] = backoff(s.backoff_initial, s.backoff_max)
        first = True
        while not self._stop.is_set():
            if not first:
                metrics.reconnect_attempts_total.labels(s.stream, s.name).inc()
            first = False
            reason = "network_error"
            try:
                subscribed = self._session()
                reason = "shutdown"
                if subscribed:
                    delays = backoff(s.backoff_initial, s.backoff_max)
            except _Disconnect as exc:
                reason = exc.reason
                self.last_error = f"{reason}: {exc}"
                if reason in ("auth_failed", "auth_timeout"):
                    delays = backoff(s.auth_retry_initial, s.auth_retry_max,
                                     immediate_first=False)
            except websocket.WebSocketConnectionClosedException as exc:
                reason = "server_closed"
                self.last_error = f"server closed the connection: {exc}"
            except (websocket.WebSocketException, OSError, ValueError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                if not is_retryable(exc):
                    log.error("%s: %s (will retry slowly)", self.name, self.last_error)
                    delays = backoff(s.backoff_max, s.auth_retry_max, immediate_first=False)
            finally:
                if self.all_subscribed and reason not in ("auth_failed", "auth_timeout"):
                    delays = backoff(s.backoff_initial, s.backoff_max)  # a good subscribe
                self._close(reason)
            if self._stop.is_set():
                break
            delay = next(delays)
            log.warning("%s: disconnected (%s); reconnecting in %.1f s", self.name,
                        self.last_error or reason, delay)
            metrics.reconnect_backoff_seconds.labels(s.stream, s.name).set(delay)
            self._stop.wait(delay)
        metrics.reconnect_backoff_seconds.labels(s.stream, s.name).set(0)

    def _session(self) -> bool:
        """One connection's life. Returns when stopped; raises on failure."""
        s = self.settings
        # skip_utf8_validation: websocket-client validates text frames in pure Python
        # (~120 us a frame, most of the client's CPU when profiled); the decoder's
        # json.loads validates UTF-8 anyway and dead-letters what is not.
        ws = websocket.create_connection(s.url, timeout=s.connect_timeout,
                                         enable_multithread=True, skip_utf8_validation=True)
        self._ws = ws
        ws.settimeout(s.read_timeout)
        metrics.connects_total.labels(s.stream, s.name).inc()
        log.info("%s: connected to %s", s.name, s.url)
        if self._stream == "private":
            self._authenticate(ws)
        self._set_up(True)
        self._subscribe_all(ws)
        next_ping = time.monotonic()
        ping_out: tuple[int, float] | None = None  # (ms sent, monotonic sent)
        while not self._stop.is_set():
            now = time.monotonic()
            if ping_out is not None and now - ping_out[1] > s.pong_timeout:
                metrics.pong_timeouts_total.labels(s.stream, s.name).inc()
                raise _Disconnect("pong_timeout", f"no pong within {s.pong_timeout:.1f} s")
            if now >= next_ping:
                ms = time.time_ns() // 1_000_000
                ws.send(protocol.build_ping(ms))
                if ping_out is None:
                    ping_out = (ms, now)
                next_ping = now + s.ping_interval
            self._check_acks(ws, now)
            try:
                opcode, data = ws.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            stamp = Stamp(time.time_ns() // 1_000_000, time.monotonic_ns())
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise websocket.WebSocketConnectionClosedException("close frame received")
            event = frames.decode(data, self._stream, stamp,
                                  binary=opcode == websocket.ABNF.OPCODE_BINARY)
            if isinstance(event, Pong):
                if ping_out is not None and event.ts == ping_out[0]:
                    self._m_rtt.observe(time.monotonic() - ping_out[1])
                    ping_out = None
            else:
                self._handle(ws, event)
        return self.all_subscribed

    def _authenticate(self, ws: websocket.WebSocket) -> None:
        s = self.settings
        if not s.api_key or not s.api_secret:
            raise _Disconnect("auth_failed", "no API credentials configured")
        expires = time.time_ns() // 1_000_000 + 10_000
        ws.send(protocol.build_auth(s.api_key, s.api_secret, expires))
        deadline = time.monotonic() + s.auth_timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                opcode, data = ws.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            except websocket.WebSocketConnectionClosedException:
                metrics.auth_failures_total.labels(s.name, "closed_after_auth").inc()
                raise _Disconnect("auth_failed", "server closed the connection after auth") \
                    from None
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                metrics.auth_failures_total.labels(s.name, "closed_after_auth").inc()
                raise _Disconnect("auth_failed", "server closed the connection after auth")
            event = frames.decode(data, self._stream, Stamp(time.time_ns() // 1_000_000,
                                                            time.monotonic_ns()))
            if isinstance(event, AuthResult):
                if event.success:
                    log.info("%s: authenticated", s.name)
                    return
                metrics.auth_failures_total.labels(s.name, "rejected").inc()
                log.error("%s: authentication rejected by the server (%s); check the API key "
                          "and secret; retrying slowly", s.name, event.detail)
                raise _Disconnect("auth_failed", f"auth rejected: {event.detail}")
            self._handle(ws, event)
        if self._stop.is_set():
            raise _Disconnect("shutdown")
        metrics.auth_failures_total.labels(s.name, "timeout").inc()
        raise _Disconnect("auth_timeout", f"no auth answer within {s.auth_timeout:.1f} s")

    # -- subscriptions ----------------------------------------------------------

    def _subscribe_all(self, ws: websocket.WebSocket) -> None:
        with self._lock:
            self._pending.clear()
            self._retry_at.clear()
            for sub in self.settings.subscriptions:
                for pair in sub.pairs():
                    self._state[pair] = "pending"
        if self._stream == "private":  # auth subscribes to every private topic at once
            self._activate(tuple((sub.topic_id, "") for sub in self.settings.subscriptions))
        for request in self._requests:
            self._send_request(ws, request, 0)

    def _send_request(self, ws: websocket.WebSocket, request: Request, attempt: int) -> None:
        ws.send(request.text)
        with self._lock:
            self._pending.append(_Pending(request, time.monotonic(), attempt))

    def _check_acks(self, ws: websocket.WebSocket, now: float) -> None:
        s = self.settings
        expired = []
        with self._lock:
            for p in self._pending:
                if now - p.sent > s.ack_timeout:
                    expired.append(p)
            for p in expired:
                self._pending.remove(p)
            due = [(r, a) for r, (t, a) in self._retry_at.items() if t <= now]
            for r, _ in due:
                del self._retry_at[r]
        for p in expired:
            if all(self._state.get(pair) == "active" for pair in p.request.pairs):
                continue  # data arrived (implicit ack); the ack itself was lost
            log.warning("%s: no ack for %s within %.1f s; retrying", s.name, p.request.text,
                        s.ack_timeout)
            self._failed(p, "ack_timeout")
        for request, attempt in due:
            self._send_request(ws, request, attempt)

    def _failed(self, pending: _Pending, reason: str) -> None:
        s = self.settings
        request = pending.request
        delay = min(s.resubscribe_max, s.resubscribe_initial * 2 ** pending.attempt)
        with self._lock:
            for pair in request.pairs:
                if self._state.get(pair) == "active":
                    metrics.subscriptions_active.labels(self._stream, pair[0]).dec()
                self._state[pair] = "failed"
            self._retry_at[request] = (time.monotonic() + delay, pending.attempt + 1)
        metrics.subscription_failures_total.labels(self._stream, request.pairs[0][0],
                                                   reason).inc()

    def _acked(self, pending: _Pending) -> None:
        metrics.subscription_ack_seconds.labels(self._stream).observe(
            time.monotonic() - pending.sent)
        self._activate(pending.request.pairs)

    def _activate(self, pairs: tuple[tuple[str, str], ...]) -> None:
        with self._lock:
            for pair in pairs:
                if self._state.get(pair) != "active":
                    self._state[pair] = "active"
                    metrics.subscriptions_active.labels(self._stream, pair[0]).inc()

    def _match(self, topic: str | None, symbol: str | None) -> _Pending | None:
        """The pending request an ack or error names, else the oldest one."""
        with self._lock:
            for p in self._pending:
                req = p.request
                if topic is not None and req.topic != topic:
                    continue
                if symbol is not None and ",".join(s for _, s in req.pairs) != symbol:
                    continue
                self._pending.remove(p)
                return p
            if topic is None and symbol is None and self._pending:
                return self._pending.pop(0)
        return None

    # -- frames ------------------------------------------------------------------

    def _handle(self, ws: websocket.WebSocket, event: Event) -> None:
        s = self.settings
        if isinstance(event, MarketData):
            self._count(event, event.topic, frames.market_topic_id(event), event.symbol)
        elif isinstance(event, PrivateData):
            for e in event.events:
                self._count(event, str(e.get("e"))[:40], str(e.get("e"))[:40], "")
        elif isinstance(event, ServerPing):
            ws.send(protocol.build_pong(event.ts))
            metrics.server_pings_total.labels(s.stream, s.name).inc()
            return
        elif isinstance(event, Ack):
            pending = self._match(event.topic, event.symbol)
            if pending is None:
                log.info("%s: ack for nothing pending: %s %s", s.name, event.topic, event.symbol)
            elif event.ok:
                self._acked(pending)
            else:
                log.error("%s: subscribe %s rejected: code %s: %s", s.name,
                          pending.request.text, event.code, event.msg)
                self._failed(pending, "error_ack")
            return
        elif isinstance(event, SubError):
            pending = self._match(event.topic, event.symbol)
            log.error("%s: server error code %s: %s (for %s)", s.name, event.code, event.msg,
                      pending.request.text if pending else "no pending request")
            if pending is not None:
                self._failed(pending, "error_ack")
            return
        elif isinstance(event, Undecodable):
            metrics.undecodable_frames_total.labels(s.stream, event.reason).inc()
            log.warning("%s: undecodable frame (%s): %s", s.name, event.reason, event.detail)
        elif isinstance(event, AuthResult | Pong):
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("%s: event handler failed", s.name)

    def _count(self, event: MarketData | PrivateData, topic: str, topic_id: str,
               symbol: str) -> None:
        children = self._frame_metrics.get(topic_id)
        if children is None:
            children = (metrics.frames_received_total.labels(self._stream, topic_id),
                        metrics.received_bytes_total.labels(self._stream, topic_id),
                        metrics.send_lag_seconds.labels(self._stream, topic_id))
            self._frame_metrics[topic_id] = children
        children[0].inc()
        children[1].inc(event.size)
        if isinstance(event, MarketData):
            if event.send_time_ms is not None:
                children[2].observe(max(0.0, (event.stamp.wall_ms - event.send_time_ms) / 1000))
            if self._state.get((topic_id, symbol)) != "active":
                self._implicit_ack(topic_id, symbol)
        metrics.last_message_age.touch(self._stream, topic_id, symbol)

    def _implicit_ack(self, topic_id: str, symbol: str) -> None:
        if (topic_id, symbol) not in self._state:
            return
        log.info("%s: data for %s %s before its ack; treating it as subscribed", self.name,
                 topic_id, symbol)
        self._activate(((topic_id, symbol),))

    # -- teardown ----------------------------------------------------------------

    def _set_up(self, up: bool) -> None:
        self._up = up
        self._m_up.set(1 if up else 0)

    def _close(self, reason: str) -> None:
        was_up = self._ws is not None
        self._set_up(False)
        with self._lock:
            for pair, state in self._state.items():
                if state == "active":
                    metrics.subscriptions_active.labels(self._stream, pair[0]).dec()
                self._state[pair] = "pending"
            self._pending.clear()
        if self._ws is not None:
            try:
                self._ws.close(timeout=1)
            except (websocket.WebSocketException, OSError):
                pass
            self._ws = None
        if was_up:
            metrics.disconnects_total.labels(self.settings.stream, self.name, reason).inc()
