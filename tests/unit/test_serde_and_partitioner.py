"""The fast paths the benchmark led to must not change a single byte or partition.

* ``PlainAvroSerializer`` writes with a copy of the schema that lacks the
  ``timestamp-millis`` annotations, and writes book levels by its own path;
  the bytes must equal fastavro's with the published schema, and read back
  with it.
* ``KeyHashPartitioner`` memoises murmur2; it must pick what kafka-python's
  ``DefaultPartitioner`` (Java-compatible) picks, also after a topic grows.
"""

from __future__ import annotations

import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner

from connector.bybit.events import MarketData, PrivateData, Stamp
from connector.bybit.legacy.frames import decode
from connector.errors import SerializationError
from connector.records import MAPPERS, PRIVATE_KINDS, load_schema
from connector.serde.serializers import ConfluentSerializer, PlainAvroSerializer
from connector.sink.kafka_sink import KeyHashPartitioner

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
STAMP = Stamp(1626249138999, 0)


def _records() -> list[tuple[str, dict[str, Any]]]:
    """(kind, record) for every sample that maps to records."""
    out = []
    for path in sorted(SAMPLES.glob("*.json")):
        stream = path.name.split("_", 1)[0]
        if stream not in ("v1", "v2", "private"):
            continue
        event = decode(path.read_text(), stream, STAMP)  # type: ignore[arg-type]
        if isinstance(event, MarketData):
            from connector.bybit.topics import lookup

            spec = lookup(stream, event.topic)
            if spec is not None:
                out += [(spec.kind, r) for r in MAPPERS[spec.kind](event)]
        elif isinstance(event, PrivateData):
            for item in event.events:
                kind = PRIVATE_KINDS.get(item["e"])
                if kind is not None:
                    out.append((kind, MAPPERS[kind](item, event)))
    return out


RECORDS = _records()


def test_samples_cover_timestamp_fields() -> None:
    assert len({kind for kind, _ in RECORDS}) >= 10
    assert any("timestamp-millis" in json.dumps(load_schema(k)) for k, _ in RECORDS)


@pytest.mark.parametrize(("kind", "record"), RECORDS, ids=[k for k, _ in RECORDS])
def test_plain_avro_bytes_equal_fastavro_with_the_published_schema(
        kind: str, record: dict[str, Any]) -> None:
    schema = load_schema(kind)
    reference = io.BytesIO()
    fastavro.schemaless_writer(reference, fastavro.parse_schema(schema), record)
    value = PlainAvroSerializer(schema)(record)
    assert value == reference.getvalue()
    back = fastavro.schemaless_reader(io.BytesIO(value), fastavro.parse_schema(schema), None)
    assert {k: _epoch_ms(v) for k, v in back.items()} == record


def _epoch_ms(value: Any) -> Any:
    """fastavro reads timestamp-millis back as an aware datetime."""
    if isinstance(value, datetime):
        return round(value.timestamp() * 1000)
    return value


def test_confluent_framing_wraps_the_same_body() -> None:
    kind, record = RECORDS[0]
    schema = load_schema(kind)
    assert ConfluentSerializer(schema, 258)(record) == (
        b"\x00\x00\x00\x01\x02" + PlainAvroSerializer(schema)(record))


class _Cluster:
    """The three ``ClusterMetadata`` queries partitioners make, over fixed topics."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self._partitions = {t: set(range(n)) for t, n in partitions.items()}

    def topics(self) -> set[str]:
        return set(self._partitions)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        found = self._partitions.get(topic)
        return None if found is None else set(found)

    available_partitions_for_topic = partitions_for_topic


KEYS = [f"S{i:04d}USDT".encode() for i in range(300)] + [b"", b"a", b"ab", b"abc",
                                                          b"BTCUSDT", "ÉTHUSDT".encode()]


@pytest.mark.parametrize("count", [1, 2, 3, 6, 12])
def test_key_hash_partitioner_matches_the_default(count: int) -> None:
    cluster = _Cluster({"t": count})
    ours, default = KeyHashPartitioner(), DefaultPartitioner()
    for _ in range(2):  # second round is served from the cache
        for key in KEYS:
            assert (ours.partition("t", key, key, None, None, cluster)
                    == default.partition("t", key, key, None, None, cluster))


def test_key_hash_partitioner_follows_a_topic_that_grows() -> None:
    ours, default = KeyHashPartitioner(), DefaultPartitioner()
    small, grown = _Cluster({"t": 2}), _Cluster({"t": 7})
    for key in KEYS:
        ours.partition("t", key, key, None, None, small)
    moved = 0
    for key in KEYS:
        expected = default.partition("t", key, key, None, None, grown)
        moved += expected != default.partition("t", key, key, None, None, small)
        assert ours.partition("t", key, key, None, None, grown) == expected
    assert moved > 0


def test_key_hash_partitioner_cache_is_bounded_and_unkeyed_records_spread() -> None:
    cluster = _Cluster({"t": 4})
    ours = KeyHashPartitioner(max_entries=10)
    for key in KEYS:
        ours.partition("t", key, key, None, None, cluster)
    assert len(ours._cache) <= 10
    assert {ours.partition("t", None, None, None, None, cluster) for _ in range(200)} == {
        0, 1, 2, 3}
    with pytest.raises(ValueError, match="not found"):
        ours.partition("missing", b"k", b"k", None, None, cluster)


# -- book levels: the segmented writer must equal fastavro byte for byte ------------

BOOK_KINDS = ["v1_depth", "v1_diff_depth", "v1_merged_depth", "v2_depth"]
level_text = st.one_of(
    st.from_regex(r"[0-9]{1,12}(\.[0-9]{1,12})?", fullmatch=True),  # Bybit's decimals
    st.text(max_size=80),  # anything else: non-ASCII, long (multi-byte length prefix)
)
levels = st.lists(st.fixed_dictionaries({"price": level_text, "quantity": level_text}),
                  max_size=250)


def _book(kind: str, bids: list[dict[str, str]], asks: list[dict[str, str]]) -> dict[str, Any]:
    record = dict(next(r for k, r in RECORDS if k == kind))
    record["bids"], record["asks"] = bids, asks
    return record


@pytest.mark.parametrize("kind", BOOK_KINDS)
@settings(max_examples=150, deadline=None)
@given(bids=levels, asks=levels)
def test_book_levels_bytes_equal_fastavro(kind: str, bids: list[dict[str, str]],
                                          asks: list[dict[str, str]]) -> None:
    record = _book(kind, bids, asks)
    reference = io.BytesIO()
    fastavro.schemaless_writer(reference, fastavro.parse_schema(load_schema(kind)), record)
    assert PlainAvroSerializer(load_schema(kind))(record) == reference.getvalue()


@pytest.mark.parametrize("bad", [
    [{"price": 1.5, "quantity": "1"}],
    [{"price": "1", "quantity": None}],
    [{"price": "1"}],
    ["1", "2"],
    [{"price": "1", "quantity": ["2"]}],
])
def test_bad_book_levels_raise_serialization_error(bad: list[Any]) -> None:
    serializer = PlainAvroSerializer(load_schema("v1_depth"))
    with pytest.raises(SerializationError, match="v1"):
        serializer(_book("v1_depth", bad, []))


@pytest.mark.parametrize("text", ["", "0", "9" * 63, "9" * 64, "9" * 65, "1" * 300, "é", "€" * 40,
                                  "0.1\x00", "\x7f"])
def test_book_level_string_boundaries(text: str) -> None:
    record = _book("v2_depth", [{"price": text, "quantity": "1"}, {"price": "2", "quantity": text}],
                   [{"price": text, "quantity": text}])
    reference = io.BytesIO()
    fastavro.schemaless_writer(reference, fastavro.parse_schema(load_schema("v2_depth")), record)
    assert PlainAvroSerializer(load_schema("v2_depth"))(record) == reference.getvalue()
