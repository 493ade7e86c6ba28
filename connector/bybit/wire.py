"""Reading WebSocket messages with a size cap enforced while reading.

websocket-client's ``recv_data`` reads a whole frame (and joins every
fragment of a message) before anyone can look at its size, so one hostile
100 MB frame costs hundreds of MB of memory. ``recv_data`` here reads each
frame's header first; a data message larger than ``max_bytes`` (counting all
of its fragments) is read through in 64 KiB chunks and discarded, keeping
only its size and first bytes (``frames.Oversize``), which the decoder turns
into an ``Undecodable`` (reason ``frame_too_large``). Control frames behave
as in websocket-client (pings answered, close returned); a control frame
over 125 bytes is a protocol error, as RFC 6455 says.

Resumable: a read timeout (the connection's tick) can interrupt any step;
the next call continues where it stopped, because the state lives in the
per-socket ``FrameReader`` and in websocket-client's own frame buffer.
"""

from __future__ import annotations

import weakref
from typing import Any

import websocket
from websocket import ABNF

from connector.bybit.legacy.frames import HEAD_BYTES, Oversize

CHUNK = 64 * 1024  # a multiple of 4, so a masked payload's chunks stay aligned to the mask
_DATA = (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY, ABNF.OPCODE_CONT)


class FrameReader:
    """One socket's reader; see the module doc. Not thread-safe (one reader thread)."""

    def __init__(self, ws: websocket.WebSocket, max_bytes: int) -> None:
        self._ws = ws
        self.max_bytes = max_bytes
        self._over: Oversize | None = None  # the oversize message being read through
        self._left: int | None = None  # its current frame's bytes still to read

    def recv(self) -> tuple[int, Any]:
        """``(opcode, data)`` like ``WebSocket.recv_data``; ``data`` is an
        ``Oversize`` for a message over the cap. Raises what websocket-client raises."""
        ws, fb = self._ws, self._ws.frame_buffer
        while True:
            if self._left is not None:
                done = self._read_through(fb)
                if done is not None:
                    return done
                continue
            with fb.lock:
                if fb.needs_header():
                    fb.recv_header()
                if fb.needs_length():
                    fb.recv_length()
                if fb.needs_mask():
                    fb.recv_mask()
            header, length = fb.header, fb.length
            assert header is not None and length is not None  # just read
            opcode = header[4]
            if opcode not in _DATA:
                if length > 125:
                    fb.clear()
                    raise websocket.WebSocketProtocolException(
                        f"control frame of {length} bytes (at most 125 allowed)")
            elif self._over is not None or self._pending() + length > self.max_bytes:
                self._start_over(opcode, length)
                continue
            result = self._frame(ws)
            if result is not None:
                return result

    def _pending(self) -> int:
        cont = self._ws.cont_frame.cont_data
        return len(cont[1]) if cont else 0

    def _start_over(self, opcode: int, length: int) -> None:
        cont = self._ws.cont_frame
        if self._over is None:
            kept = cont.cont_data
            if kept and opcode != ABNF.OPCODE_CONT:
                raise websocket.WebSocketProtocolException("Illegal frame")
            if kept:  # earlier fragments of this message were within the cap
                self._over = Oversize(kept[0], len(kept[1]), bytes(kept[1][:HEAD_BYTES]),
                                      self.max_bytes)
            elif opcode == ABNF.OPCODE_CONT:
                raise websocket.WebSocketProtocolException("Illegal frame")
            else:
                self._over = Oversize(opcode, 0, b"", self.max_bytes)
            cont.cont_data = None
        elif opcode != ABNF.OPCODE_CONT:
            raise websocket.WebSocketProtocolException("Illegal frame")
        self._over = self._over.grown(length)
        self._left = length

    def _read_through(self, fb: Any) -> tuple[int, Oversize] | None:
        """Read the current frame's rest in chunks; the message when its last frame ends."""
        assert self._over is not None and self._left is not None
        while self._left:
            n = min(CHUNK, self._left)
            chunk = fb.recv_strict(n)
            if len(self._over.head) < HEAD_BYTES:
                if fb.has_mask():
                    chunk = ABNF.mask(fb.mask_value, chunk)
                self._over = self._over.with_head(chunk)
            self._left -= n
        fin = fb.header[0]
        fb.clear()
        self._left = None
        if not fin:
            self._ws.cont_frame.recving_frames = self._over.opcode
            return None
        over, self._over = self._over, None
        self._ws.cont_frame.recving_frames = None
        return over.opcode, over

    def _frame(self, ws: websocket.WebSocket) -> tuple[int, Any] | None:
        """One frame within the cap, handled as ``WebSocket.recv_data_frame`` does."""
        frame = ws.recv_frame()
        if frame.opcode in _DATA:
            ws.cont_frame.validate(frame)
            ws.cont_frame.add(frame)
            if ws.cont_frame.is_fire(frame):
                opcode, frame = ws.cont_frame.extract(frame)
                return opcode, frame.data
            return None
        if frame.opcode == ABNF.OPCODE_CLOSE:
            ws.send_close()
            return frame.opcode, frame.data
        if frame.opcode == ABNF.OPCODE_PING:
            ws.pong(frame.data)
        return None


_READERS: weakref.WeakKeyDictionary[websocket.WebSocket, FrameReader] = (
    weakref.WeakKeyDictionary())


def recv_data(ws: websocket.WebSocket, max_bytes: int) -> tuple[int, Any]:
    """``ws.recv_data()`` with the cap (one reader per socket, kept with it)."""
    reader = _READERS.get(ws)
    if reader is None:
        reader = _READERS[ws] = FrameReader(ws, max_bytes)
    return reader.recv()
