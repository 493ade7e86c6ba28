"""One WebSocket's life: connect, (auth), subscribe, read, heartbeat, reconnect.

A loop you can follow top to bottom: ``_run`` retries ``_session`` with
backoff; ``_session`` connects, authenticates (private), subscribes, then
reads with a short timeout whose tick also sends the ping heartbeat, checks
pong freshness, ack timeouts, due retries and requested resubscribes. One
thread per connection; ``stop()`` sets an event the loop checks every tick.

Liveness: any frame read proves the connection alive. The pong timeout ends
only a connection that has gone silent (a ping unanswered and nothing read
for ``pong_timeout``): a connector that reads behind its socket finds its pong
behind the backlog, and dropping the socket then would lose everything in
flight. How far behind it reads is ``read_lag_seconds``, shown, not "fixed" by
reconnecting.

The loop is the same for every stream; what differs between the legacy
protocol and Bybit v5 (request and ping shapes, auth, ack matching, frame
decoding) lives behind ``family.Family``.

Reconnect policy: the first retry is immediate and the backoff grows only
while attempts fail; a session that got fully subscribed (or stayed up for
``healthy_after`` seconds) resets it, after an auth failure too. Every
connect draws from a process-wide per-host budget (Bybit: 500 new
connections per 5 minutes per host).

``on_event`` is called on this thread for data events and ``Undecodable``.
It must return within a bounded time (the sink bounds its backpressure wait
to ``kafka.block_timeout_seconds``); the heartbeat is re-checked after every
callback. ``on_subscribe(stream, pairs)`` is called before each subscribe
request is sent, so the pipeline knows a fresh snapshot is due.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import websocket

from connector.bybit import wire
from connector.bybit.backoff import backoff, is_retryable
from connector.bybit.budget import SHARED, ConnectBudget
from connector.bybit.events import AuthResult, Event, Pong, ServerPing, Stamp, Undecodable
from connector.bybit.family import DataInfo, Family, Pair
from connector.bybit.legacy import frames
from connector.bybit.legacy.family import LegacyFamily
from connector.bybit.legacy.protocol import Request, Subscription
from connector.bybit.subscriptions import Subscriptions
from connector.bybit.v5.family import V5Family
from connector.ops import metrics

log = logging.getLogger(__name__)


def family_for(stream: str, max_symbols_per_request: int = 20,
               max_frame_bytes: int = frames.MAX_FRAME_BYTES) -> Family:
    """The family of a configured stream."""
    if stream in ("v5", "v5-private"):
        return V5Family(stream)  # type: ignore[arg-type]
    return LegacyFamily(stream, max_symbols_per_request,  # type: ignore[arg-type]
                        max_frame_bytes)


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
    healthy_after: float = 30.0  # a session up this long counts as healthy (resets backoff)
    max_symbols_per_request: int = 20
    max_frame_bytes: int = frames.MAX_FRAME_BYTES
    api_key: str | None = field(default=None, repr=False)
    api_secret: str | None = field(default=None, repr=False)
    budget: ConnectBudget | None = field(default=None, repr=False, compare=False)


class _Disconnect(Exception):
    """Ends a session with a reason from ``metrics.DISCONNECT_REASONS``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


class Connection:
    """A resilient subscription to one Bybit stream endpoint (see module doc)."""

    def __init__(self, settings: ConnectionSettings, on_event: Callable[[Event], None],
                 family: Family | None = None,
                 on_subscribe: Callable[[str, tuple[Pair, ...]], None] | None = None) -> None:
        self.settings = settings
        self.name = settings.name
        self._on_event = on_event
        self._on_subscribe = on_subscribe
        self.family = family or family_for(settings.stream, settings.max_symbols_per_request,
                                           settings.max_frame_bytes)
        self._stream: Any = settings.stream
        self._budget = settings.budget or SHARED
        self._host = urllib.parse.urlsplit(settings.url).netloc
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ws-{settings.name}")
        self._ws: websocket.WebSocket | None = None
        self.last_error: str | None = None
        self._up = False
        self._session_ok = False
        self._opened = False  # this attempt's WebSocket opened (else: could not connect)
        self._subs = Subscriptions(settings.name, settings.stream, self.family,
                                   settings.subscriptions, settings.ack_timeout,
                                   settings.resubscribe_initial, settings.resubscribe_max)
        labels = (settings.stream, settings.name)
        self._m_up = metrics.connection_up.labels(*labels)
        self._m_rtt = metrics.heartbeat_rtt_seconds.labels(*labels)
        self._m_read_lag = metrics.read_lag_seconds.labels(*labels)
        self._m_read_lag.set(0)
        self._m_up.set(0)
        metrics.connects_total.labels(*labels)
        metrics.reconnect_attempts_total.labels(*labels)
        metrics.pong_timeouts_total.labels(*labels)
        metrics.connect_budget_waits_total.labels(*labels)
        for reason in metrics.DISCONNECT_REASONS:
            metrics.disconnects_total.labels(*labels, reason)
        self._frame_metrics: dict[str, tuple[Any, Any, Any]] = {}  # keyed by bounded label
        # What this connection asked for: labels and data outside it are "(unknown)"/unrouted.
        self._pairs = frozenset(p for sub in settings.subscriptions
                                for p in self.family.pairs(sub))
        self._topic_ids = frozenset(sub.topic_id for sub in settings.subscriptions)
        for topic_id in (*self._topic_ids, metrics.UNKNOWN):
            metrics.unrouted_events_total.labels(settings.stream, topic_id)

    # -- public state ------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        return self._up

    @property
    def all_subscribed(self) -> bool:
        """Every configured (topic, symbol) acknowledged (legacy private: authenticated)."""
        if self.family.auth_subscribes:
            return self._up
        return self._subs.all_active()

    def subscription_states(self) -> dict[Pair, str]:
        """(topic_id, symbol) → ``pending`` | ``active`` | ``failed``."""
        return self._subs.states()

    def owns(self, topic_id: str, symbol: str) -> bool:
        """Whether this connection carries the subscription (topic_id, symbol)."""
        return (topic_id, symbol) in self._subs.pairs

    def resubscribe(self, topic_id: str, symbol: str) -> None:
        """Restart one topic's stream (unsubscribe, then subscribe: a fresh
        snapshot follows). Thread-safe; done on the connection's next tick."""
        self._subs.resubscribe((topic_id, symbol))

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

    def _normal(self) -> Iterator[float]:
        return backoff(self.settings.backoff_initial, self.settings.backoff_max)

    def _run(self) -> None:
        s = self.settings
        delays = self._normal()
        first = True
        while not self._stop.is_set():
            if not first:
                metrics.reconnect_attempts_total.labels(s.stream, s.name).inc()
            first = False
            reason = "network_error"
            self._session_ok = False
            self._opened = False
            try:
                self._session()
                reason = "shutdown"
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
                self._close(reason)
            if self._stop.is_set():
                break
            if self._session_ok:  # a healthy session ends any failure schedule
                delays = self._normal()
            delay = next(delays)
            if self._opened:
                log.warning("%s: disconnected from %s (%s); reconnecting in %.1f s",
                            self.name, s.url, self.last_error or reason, delay)
            else:
                log.warning("%s: cannot connect to %s (%s); retrying in %.1f s", self.name,
                            s.url, self.last_error or reason, delay)
            metrics.reconnect_backoff_seconds.labels(s.stream, s.name).set(delay)
            self._stop.wait(delay)
        metrics.reconnect_backoff_seconds.labels(s.stream, s.name).set(0)

    def _wait_for_budget(self) -> None:
        """Bybit caps new connections per host; wait (stop-aware) for room."""
        s = self.settings
        while not self._stop.is_set():
            wait = self._budget.reserve(self._host)
            if wait <= 0:
                return
            metrics.connect_budget_waits_total.labels(s.stream, s.name).inc()
            log.warning("%s: connection budget for %s used up; waiting %.1f s", s.name,
                        self._host, wait)
            self._stop.wait(min(wait, 5.0))
        raise _Disconnect("shutdown")

    def _session(self) -> None:
        """One connection's life. Returns when stopped; raises on failure."""
        s = self.settings
        self._wait_for_budget()
        # skip_utf8_validation: websocket-client validates text frames in pure Python
        # (~120 us a frame, most of the client's CPU when profiled); the decoder's
        # json.loads validates UTF-8 anyway and dead-letters what is not.
        ws = websocket.create_connection(s.url, timeout=s.connect_timeout,
                                         enable_multithread=True, skip_utf8_validation=True)
        self._ws = ws
        self._opened = True
        ws.settimeout(s.read_timeout)
        metrics.connects_total.labels(s.stream, s.name).inc()
        log.info("%s: connected to %s", s.name, s.url)
        if self.family.needs_auth:
            self._authenticate(ws)
        self._set_up(True)
        up_since = time.monotonic()
        self._send_all(ws, self._subs.start())
        next_ping = time.monotonic()
        ping_sent: float | None = None  # monotonic time of the oldest unanswered ping
        heard = time.monotonic()  # when the socket last gave us a frame (we were done with it)
        while not self._stop.is_set():
            now = time.monotonic()
            if ping_sent is not None and now - max(ping_sent, heard) > s.pong_timeout:
                metrics.pong_timeouts_total.labels(s.stream, s.name).inc()
                raise _Disconnect("pong_timeout", f"no pong and no frame within "
                                                  f"{s.pong_timeout:.1f} s")
            if now >= next_ping:
                ws.send(self.family.ping(time.time_ns() // 1_000_000))
                if ping_sent is None:
                    ping_sent = now
                next_ping = now + s.ping_interval
            if not self._session_ok and (self.all_subscribed
                                         or now - up_since >= s.healthy_after):
                self._session_ok = True
            self._send_all(ws, self._subs.tick())
            self._do_resubscribes(ws)
            try:
                opcode, data = wire.recv_data(ws, s.max_frame_bytes)
            except websocket.WebSocketTimeoutException:
                continue
            stamp = Stamp(time.time_ns() // 1_000_000, time.monotonic_ns())
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise websocket.WebSocketConnectionClosedException("close frame received")
            if isinstance(data, frames.Oversize):  # over bybit.max_frame_bytes: not kept
                event: Any = frames.decode(data, self._stream, stamp)
            else:
                event = self.family.decode(data, stamp, opcode == websocket.ABNF.OPCODE_BINARY)
            if isinstance(event, Pong):
                # Any pong answers our oldest ping: Bybit's carries its own clock, not
                # an echo of ours. RTT is measured from our send.
                if ping_sent is not None:
                    self._m_rtt.observe(time.monotonic() - ping_sent)
                    ping_sent = None
            else:
                self._handle(ws, event)
            # Stamped after handling: time spent on our side (a slow sink) is not silence.
            heard = time.monotonic()

    def _authenticate(self, ws: websocket.WebSocket) -> None:
        s = self.settings
        if not s.api_key or not s.api_secret:
            raise _Disconnect("auth_failed", "no API credentials configured")
        ws.send(self.family.auth(s.api_key, s.api_secret))  # a fresh expires every time
        deadline = time.monotonic() + s.auth_timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                opcode, data = wire.recv_data(ws, s.max_frame_bytes)
            except websocket.WebSocketTimeoutException:
                continue
            except websocket.WebSocketConnectionClosedException:
                metrics.auth_failures_total.labels(s.name, "closed_after_auth").inc()
                raise _Disconnect("auth_failed", "server closed the connection after auth") \
                    from None
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                metrics.auth_failures_total.labels(s.name, "closed_after_auth").inc()
                raise _Disconnect("auth_failed", "server closed the connection after auth")
            event = self.family.decode(data, Stamp(time.time_ns() // 1_000_000,
                                                   time.monotonic_ns()),
                                       opcode == websocket.ABNF.OPCODE_BINARY)
            if isinstance(event, AuthResult):
                if event.success:
                    log.info("%s: authenticated", s.name)
                    return
                metrics.auth_failures_total.labels(s.name, "rejected").inc()
                log.error("%s: authentication rejected by the server (%s); check the API key "
                          "and secret; retrying slowly", s.name, event.detail)
                raise _Disconnect("auth_failed", f"auth rejected: {event.detail}")
            if not isinstance(event, Pong):
                self._handle(ws, event)
        if self._stop.is_set():
            raise _Disconnect("shutdown")
        metrics.auth_failures_total.labels(s.name, "timeout").inc()
        raise _Disconnect("auth_timeout", f"no auth answer within {s.auth_timeout:.1f} s")

    # -- subscriptions ----------------------------------------------------------

    def _send_all(self, ws: websocket.WebSocket, sends: list[tuple[Request, int]]) -> None:
        for request, attempt in sends:
            if self._on_subscribe is not None:
                self._on_subscribe(self.settings.stream, request.pairs)
            ws.send(request.text)
            self._subs.sent(request, attempt)

    def _do_resubscribes(self, ws: websocket.WebSocket) -> None:
        texts, sends = self._subs.take_resubscribes()
        for text in texts:
            ws.send(text)
        self._send_all(ws, sends)

    # -- frames ------------------------------------------------------------------

    def _handle(self, ws: websocket.WebSocket, event: Any) -> None:
        s = self.settings
        info = self.family.data(event)
        if info is not None:
            self._count(event, info)
            if not self.family.auth_subscribes and not self._pairs.issuperset(info.pairs):
                # Data for a topic or symbol never subscribed: counted, never written.
                for topic_id, _symbol in info.pairs:
                    metrics.unrouted_events_total.labels(s.stream, self._label(topic_id)).inc()
                return
        elif isinstance(event, ServerPing):
            ws.send(self.family.pong(event.ts))
            metrics.server_pings_total.labels(s.stream, s.name).inc()
            return
        elif (ack := self.family.ack(event)) is not None:
            self._send_all(ws, self._subs.on_ack(ack))
            return
        elif isinstance(event, Undecodable):
            metrics.undecodable_frames_total.labels(s.stream, event.reason).inc()
            log.warning("%s: undecodable frame (%s): %s", s.name, event.reason, event.detail)
        else:  # AuthResult, Pong: nothing for the pipeline
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("%s: event handler failed", s.name)

    def _label(self, topic_id: str) -> str:
        """A configured topic id, else ``(unknown)``: labels stay bounded by the config."""
        return topic_id if topic_id in self._topic_ids else metrics.UNKNOWN

    def _count(self, event: Any, info: DataInfo) -> None:
        if info.server_time_ms is not None:
            self._m_read_lag.set(max(0.0, (event.stamp.wall_ms - info.server_time_ms) / 1000))
        for topic_id, symbol in info.pairs:
            label = self._label(topic_id)
            children = self._frame_metrics.get(label)
            if children is None:
                children = (metrics.frames_received_total.labels(self._stream, label),
                            metrics.received_bytes_total.labels(self._stream, label),
                            metrics.send_lag_seconds.labels(self._stream, label))
                self._frame_metrics[label] = children
            children[0].inc()
            children[1].inc(event.size)
            if info.send_time_ms is not None:
                children[2].observe(max(0.0, (event.stamp.wall_ms - info.send_time_ms) / 1000))
            self._subs.on_data(topic_id, symbol)
            metrics.last_message_age.touch(self._stream, topic_id, symbol)

    # -- teardown ----------------------------------------------------------------

    def _set_up(self, up: bool) -> None:
        self._up = up
        self._m_up.set(1 if up else 0)

    def _close(self, reason: str) -> None:
        was_up = self._ws is not None
        self._set_up(False)
        self._m_read_lag.set(0)  # nothing is read behind a closed socket
        self._subs.close()
        if self._ws is not None:
            try:
                self._ws.close(timeout=1)
            except (websocket.WebSocketException, OSError):
                pass
            self._ws = None
        if was_up:
            metrics.disconnects_total.labels(self.settings.stream, self.name, reason).inc()
