"""The capped reader against a real WebSocket server: frames within the cap
arrive as websocket-client would hand them over; a message over the cap, whole
or fragmented, is read through and comes back as its size and first bytes;
read timeouts in the middle of anything resume where they stopped."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websocket
from websockets.sync.server import ServerConnection, serve

from connector.bybit.legacy.frames import HEAD_BYTES, Oversize
from connector.bybit.wire import FrameReader

CAP = 64 * 1024
Script = Callable[[ServerConnection], None]


@pytest.fixture
def connect() -> Iterator[Callable[[Script], FrameReader]]:
    servers: list[Any] = []

    def start(script: Script) -> FrameReader:
        server = serve(script, "127.0.0.1", 0, max_size=None, compression=None,
                       ping_interval=None)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}", timeout=5,
                                         skip_utf8_validation=True)
        servers.append(ws)
        return FrameReader(ws, CAP)

    yield start
    for item in reversed(servers):
        item.close() if isinstance(item, websocket.WebSocket) else item.shutdown()


def recv(reader: FrameReader, timeout: float = 10.0) -> tuple[int, Any]:
    """Like the connection's loop: short read timeouts, retried until data."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return reader.recv()
        except websocket.WebSocketTimeoutException:
            continue
    raise AssertionError("nothing received")


def slow(reader: FrameReader) -> FrameReader:
    reader._ws.settimeout(0.01)
    return reader


def test_frames_within_the_cap_pass_unchanged(connect: Callable[[Script], FrameReader]) -> None:
    def script(ws: ServerConnection) -> None:
        ws.send("hello")
        ws.send(b"\x1f\x8bbinary")
        ws.send(["frag", "mented"])  # fragments within the cap: joined
        ws.ping(b"p")
        ws.send("x" * CAP)  # exactly the cap
        time.sleep(1)

    reader = connect(script)
    assert recv(reader) == (websocket.ABNF.OPCODE_TEXT, b"hello")
    assert recv(reader) == (websocket.ABNF.OPCODE_BINARY, b"\x1f\x8bbinary")
    assert recv(reader) == (websocket.ABNF.OPCODE_TEXT, b"fragmented")
    assert recv(reader) == (websocket.ABNF.OPCODE_TEXT, b"x" * CAP)


@pytest.mark.parametrize("fragments", [1, 3, 40])
def test_a_message_over_the_cap_is_read_through(connect: Callable[[Script], FrameReader],
                                                fragments: int) -> None:
    big = "H" * 10 + "x" * (CAP * 20)

    def script(ws: ServerConnection) -> None:
        step = -(-len(big) // fragments)
        parts = [big[i:i + step] for i in range(0, len(big), step)]
        ws.send(parts if fragments > 1 else big)
        ws.send("after")
        time.sleep(1)

    reader = slow(connect(script))
    opcode, data = recv(reader, timeout=30)
    assert opcode == websocket.ABNF.OPCODE_TEXT
    assert isinstance(data, Oversize)
    assert data.size == len(big) and data.limit == CAP
    assert data.head == big.encode()[:HEAD_BYTES]
    assert recv(reader) == (websocket.ABNF.OPCODE_TEXT, b"after")


def test_pings_between_fragments_of_a_big_message_are_answered(
        connect: Callable[[Script], FrameReader]) -> None:
    pongs: list[bytes] = []

    def script(ws: ServerConnection) -> None:
        def parts() -> Iterator[str]:
            for i in range(4):
                yield "y" * CAP
                if i == 1:
                    pongs.append(b"waiting")
                    ws.ping(b"mid")
        ws.send(parts())
        ws.send("after")
        time.sleep(1)

    reader = connect(script)
    _, data = recv(reader)
    assert isinstance(data, Oversize) and data.size == 4 * CAP
    assert recv(reader) == (websocket.ABNF.OPCODE_TEXT, b"after")
    assert pongs == [b"waiting"]


def test_an_oversized_control_frame_is_a_protocol_error(
        connect: Callable[[Script], FrameReader]) -> None:
    def script(ws: ServerConnection) -> None:
        # A ping frame announcing 100 MB, written raw: the reader must not try to read it.
        ws.socket.sendall(bytes([0x89, 127]) + (100 * 1024 * 1024).to_bytes(8, "big"))
        time.sleep(1)

    reader = connect(script)
    with pytest.raises(websocket.WebSocketProtocolException, match="control frame"):
        recv(reader)
