"""Every packaged schema's ``avro.schema.fingerprint`` header equals what Java
Avro computes: ``SchemaNormalization.parsingFingerprint("CRC-64-AVRO", s)``
as hex, i.e. ``parsingFingerprint64(s)`` in little-endian byte order.

Java Avro comes from the Apicurio Registry the registry tests already use
(its ``lib/`` holds ``avro-1.12.0.jar`` and Jackson)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from connector.dev.schema_registry import fetch
from connector.records import load_schema, schema_dir
from connector.serde.serializers import PlainAvroSerializer

pytestmark = pytest.mark.integration

JAVA = """
import org.apache.avro.*;
import java.nio.file.*;
public class Fp {
  public static void main(String[] args) throws Exception {
    for (String p : args) {
      Schema s = new Schema.Parser().parse(new String(Files.readAllBytes(Paths.get(p))));
      StringBuilder hex = new StringBuilder();
      for (byte b : SchemaNormalization.parsingFingerprint("CRC-64-AVRO", s))
        hex.append(String.format("%02x", b));
      System.out.println(p + " " + hex + " "
          + String.format("%016x", SchemaNormalization.parsingFingerprint64(s)));
    }
  }
}
"""


def test_fingerprints_match_java_avro(tmp_path: Path) -> None:
    javac = shutil.which("javac")
    assert javac, "javac (JDK 17) is needed, as for Kafka and the registry"
    lib = fetch() / "lib"
    jars = [*lib.glob("org.apache.avro.avro-*.jar"), *lib.glob("com.fasterxml.jackson.core.*.jar"),
            *lib.glob("org.slf4j.slf4j-api-*.jar")]
    classpath = ":".join(map(str, jars))
    (tmp_path / "Fp.java").write_text(JAVA)
    subprocess.run([javac, "-cp", classpath, "Fp.java"], cwd=tmp_path, check=True, timeout=120)
    paths = sorted(schema_dir().glob("*.avsc"))
    out = subprocess.run(["java", "-cp", f"{classpath}:{tmp_path}", "Fp", *map(str, paths)],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    java = {Path(p).stem: (hex_bytes, long) for p, hex_bytes, long in
            (line.split() for line in out.splitlines())}
    assert set(java) == {p.stem for p in paths}
    for kind, (hex_bytes, long) in java.items():
        ours = PlainAvroSerializer(load_schema(kind)).fingerprint
        assert ours == hex_bytes, kind
        assert bytes.fromhex(ours) == int(long, 16).to_bytes(8, "little"), kind
