"""Property: no input makes the frame decoder raise out of the connection loop."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.bybit.events import Stamp, Undecodable
from connector.bybit.legacy.frames import decode

STAMP = Stamp(1, 1)
SAMPLES = [json.loads(p.read_text())
           for p in sorted((Path(__file__).resolve().parents[1] / "samples").glob("*.json"))]
STREAMS = st.sampled_from(["v1", "v2", "private"])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.sampled_from(["topic", "data", "symbol", "params", "f", "sendTime",
                                       "code", "msg", "desc", "e", "ping", "pong", "auth",
                                       "event", "t", "s"]) | st.text(max_size=5),
                      children, max_size=6),
    max_leaves=30,
)


@given(st.binary(max_size=2000), STREAMS, st.booleans())
@settings(max_examples=400, deadline=None)
def test_random_bytes_never_raise(data: bytes, stream: str, binary: bool) -> None:
    decode(data, stream, STAMP, binary=binary)  # type: ignore[arg-type]


@given(json_values, STREAMS)
@settings(max_examples=400, deadline=None)
def test_random_json_never_raises(value: Any, stream: str) -> None:
    text = json.dumps(value)
    decode(text, stream, STAMP)  # type: ignore[arg-type]
    decode(gzip.compress(text.encode()), stream, STAMP, binary=True)  # type: ignore[arg-type]


@given(st.sampled_from(SAMPLES), st.data(), STREAMS)
@settings(max_examples=400, deadline=None)
def test_mutated_samples_never_raise(sample: Any, data: st.DataObject, stream: str) -> None:
    mutated = json.loads(json.dumps(sample))
    if isinstance(mutated, dict) and mutated:
        key = data.draw(st.sampled_from(sorted(mutated)))
        mutated[key] = data.draw(json_values)
    text = json.dumps(mutated)
    cut = data.draw(st.integers(0, len(text)))
    for frame in (text, text[:cut]):
        event = decode(frame, stream, STAMP)  # type: ignore[arg-type]
        if isinstance(event, Undecodable):
            assert event.raw == frame.encode()
