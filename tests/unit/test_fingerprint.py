"""The ``avro.schema.fingerprint`` header is Java Avro's CRC-64-AVRO
fingerprint of the Parsing Canonical Form, as 8 little-endian bytes in hex.

The expected values were computed by Java Avro 1.12.0
(``SchemaNormalization.parsingFingerprint64`` and
``parsingFingerprint("CRC-64-AVRO", ...)``) for the 0.1.0 schemas;
``tests/integration/test_fingerprint_java.py`` recomputes them with Java
for every packaged schema.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connector.serde.serializers import FINGERPRINT_HEADER, PlainAvroSerializer

OLD = Path(__file__).resolve().parents[1] / "samples" / "avro-0.1.0"

# kind -> Java's parsingFingerprint64 as an unsigned 64-bit value
JAVA_LONG = {
    "v1_trade": 0x7E51C38A7FCB6961,
    "v1_depth": 0xC231895C43ACF936,
    "v2_kline": 0x0D472957A315DFFF,
    "private_ticket_info": 0x23EEBF5CC3ABAB57,
}


@pytest.mark.parametrize("kind", sorted(JAVA_LONG))
def test_header_is_javas_fingerprint_little_endian_hex(kind: str) -> None:
    serializer = PlainAvroSerializer(json.loads((OLD / f"{kind}.avsc").read_text()))
    header = dict(serializer.headers)[FINGERPRINT_HEADER]
    assert len(header) == 16 and header == header.lower()
    assert header == JAVA_LONG[kind].to_bytes(8, "little").hex().encode()


def test_docs_and_logical_types_do_not_change_it() -> None:
    schema = json.loads((OLD / "v1_trade.avsc").read_text())
    bare = json.loads(json.dumps(schema))
    for field in bare["fields"]:
        for attr in ("doc", "aliases", "bybit"):
            field.pop(attr, None)
        if isinstance(field["type"], dict):
            field["type"] = field["type"]["type"]
    assert PlainAvroSerializer(bare).fingerprint == PlainAvroSerializer(schema).fingerprint
