"""A compiled Avro writer for flat records: the same bytes as fastavro, in less CPU.

Avro binary is a record's fields one after the other, each a short fixed
recipe (a zig-zag varint, a length-prefixed UTF-8 string, a union index and
its branch, map blocks). For the shapes every Bybit record is made of, this
module turns a schema into Python source, one straight-line function per
schema with no per-field dispatch, and compiles it once. Each call reads the
fields, encodes the strings and joins the parts: no ``BytesIO``, no schema
walk, no per-call argument checks (fastavro's ``schemaless_writer`` spends
more than half its time there on a ten-field record).

Records of one frame share their frame's values (the same objects: the
mappers copy them from one dict), so fields named ``repeated`` keep the
bytes of the last value written, keyed by that object's identity: the
second to tenth trade of a frame encode only their own fields. Only
immutable values are cached (never maps), the cached object is held so its
identity cannot be reused, and a (value, bytes) pair is one tuple, read
once, so threads sharing a writer never pair one value with another's bytes.

Contract: ``compile_writer(schema)`` returns ``None`` for a schema with a
shape it does not compile (the caller keeps fastavro). A compiled writer
returns the record's bytes, or ``None`` when a value is anything but the
plain case it was written for (a missing field, a ``datetime``, a ``bool``
in a nullable ``long``, a string too long for the prefix table, a number out
of range, a non-``dict`` map): the caller then writes that record with
fastavro, which applies its own rules (defaults, conversions, errors). So
the bytes are fastavro's for every record, by construction for the odd ones
and by the property tests in ``tests/unit/test_avro_compiled.py`` for the
rest.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

Writer = Callable[[dict[str, Any]], bytes | None]
ArrayEncoder = Callable[[list[Any]], bytes]


def _varint(n: int) -> bytes:
    """Base-128 varint of a non-negative ``n`` (already zig-zagged)."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Length prefixes of strings up to _PREFIXES bytes long: one tuple index each.
_PREFIXES = 4096
_PREFIX = tuple(_varint(n << 1) for n in range(_PREFIXES))
# The same prefixed by a union's branch index 1 (b"\x02") or 0 (b"\x00"): a nullable
# string that holds a value is then two parts (tag and length, the text), not three.
_PREFIX_BRANCH = {b"\x02": tuple(b"\x02" + p for p in _PREFIX),
                  b"\x00": tuple(b"\x00" + p for p in _PREFIX)}

# A long is written as its low 14 bits (two bytes, both with the continuation
# bit) followed by the varint of the rest. Millisecond timestamps share their
# high part for 8 s, so that part comes from a small cache: each long costs
# two lookups and one concatenation instead of a six-step Python loop.
_SMALL = tuple(_varint(n) for n in range(1 << 14))
_LOW = tuple(bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80)) for n in range(1 << 14))
_HIGH_CACHE: dict[int, bytes] = {}
_HIGH_CACHE_MAX = 4096
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1


class _Unsupported(Exception):
    """A value outside the compiled fast path: the caller uses fastavro."""


def _long(v: int) -> bytes:
    """Avro ``long`` (zig-zag varint) of an int in the 64-bit range.

    No range check on the fast path: outside the range the zig-zag value
    is at least 2**64, so its high part is refused (and never cached) below.
    """
    n = (v << 1) ^ (v >> 63)
    if n < 16384:
        return _SMALL[n]
    high = n >> 14
    tail = _HIGH_CACHE.get(high)
    if tail is None:
        if high >> 50:  # n >= 2**64: not a 64-bit long
            raise _Unsupported
        if len(_HIGH_CACHE) >= _HIGH_CACHE_MAX:
            _HIGH_CACHE.clear()
        tail = _HIGH_CACHE[high] = _varint(high)
    return _LOW[n & 0x3FFF] + tail


def _string_map(m: Any) -> bytes:
    """Avro ``map<string>`` as fastavro writes it: one block, then 0."""
    if type(m) is not dict:
        raise _Unsupported
    if not m:
        return b"\x00"
    parts = [_long(len(m))]
    for k, v in m.items():
        kb, vb = k.encode(), v.encode()
        parts += (_PREFIX[len(kb)], kb, _PREFIX[len(vb)], vb)
    parts.append(b"\x00")
    return b"".join(parts)


_BOOL = {True: b"\x01", False: b"\x00"}  # 0 and 1 hash alike: fastavro writes them the same
# A nullable boolean's branch index and value in one lookup, per branch index.
_BOOL_BRANCH = {tag: {True: tag + b"\x01", False: tag + b"\x00"} for tag in (b"\x00", b"\x02")}
_PACK_DOUBLE = struct.Struct("<d").pack
_PACK_FLOAT = struct.Struct("<f").pack

# Non-null primitives: (python type a union branch accepts, expression → code lines).
_PRIMITIVES = ("string", "long", "int", "boolean", "double", "float", "bytes")
_UNION_TYPE = {"string": "str", "long": "int", "int": "int", "boolean": "bool",
               "double": "float", "float": "float", "bytes": "bytes", "map": "dict"}


def _branch(avro_type: Any) -> str | None:
    """The compiled name of a non-null type: a primitive, or "map" for map<string>."""
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "map" and avro_type.get("values") == "string":
            return "map"
        if avro_type.get("type") in _PRIMITIVES and set(avro_type) <= {"type", "logicalType"}:
            # timestamp-millis and friends: the same bytes when the value is an int.
            return str(avro_type["type"])
        return None
    if avro_type in _PRIMITIVES:
        return str(avro_type)
    return None


def _emit(kind: str, var: str, out: list[str], lines: list[str], indent: str) -> None:
    """Code writing ``var`` of compiled type ``kind``; appends part expressions to ``out``."""
    b = f"{var}b"
    if kind == "string":
        lines.append(f"{indent}{b} = {var}.encode()")
        out += [f"P[len({b})]", b]
    elif kind == "bytes":
        lines.append(f"{indent}if type({var}) is not bytes: raise U")
        out += [f"P[len({var})]", var]
    elif kind == "long":
        out.append(f"L({var})")
    elif kind == "int":
        lines.append(f"{indent}if not {_INT_MIN} <= {var} <= {_INT_MAX}: raise U")
        out.append(f"L({var})")
    elif kind == "boolean":
        out.append(f"B[{var}]")
    elif kind == "double":
        lines.append(f"{indent}if type({var}) is not float: raise U")
        out.append(f"D({var})")
    elif kind == "float":
        lines.append(f"{indent}if type({var}) is not float: raise U")
        out.append(f"F({var})")
    elif kind == "map":
        out.append(f"M({var})")
    else:  # pragma: no cover - _branch admits nothing else
        raise AssertionError(kind)


_UNSEEN = object()  # the initial identity in a repeated-value cache: no record holds it


def compile_writer(schema: dict[str, Any], arrays: dict[str, ArrayEncoder] | None = None,
                   repeated: frozenset[str] = frozenset()) -> Writer | None:
    """A writer for ``schema`` (a record), or None if a field has a shape not compiled.

    Compiled: the primitives, unions of ``null`` and one of them (either
    order), ``map<string>``, and the array fields named in ``arrays`` (an
    encoder each, e.g. the book-levels writer in ``serde``). Fields named in
    ``repeated`` (values usually shared by consecutive records) reuse the
    previous record's bytes when they hold the very same object.
    """
    if schema.get("type") != "record":
        return None
    arrays = arrays or {}
    lines: list[str] = []
    parts: list[str] = []
    env: dict[str, Any] = {"P": _PREFIX, "P2": _PREFIX_BRANCH[b"\x02"],
                           "P0": _PREFIX_BRANCH[b"\x00"], "B2": _BOOL_BRANCH[b"\x02"],
                           "B0": _BOOL_BRANCH[b"\x00"], "L": _long, "B": _BOOL, "D": _PACK_DOUBLE,
                           "F": _PACK_FLOAT, "M": _string_map, "U": _Unsupported}
    for i, field in enumerate(schema["fields"]):
        name, avro_type, var = field["name"], field["type"], f"v{i}"
        lines.append(f"    {var} = r[{name!r}]")
        if name in arrays:
            env[f"A{i}"] = arrays[name]
            parts.append(f"A{i}({var})")
            continue
        if name in repeated and _cacheable(avro_type):
            field_lines: list[str] = []
            field_parts: list[str] = []
            if not _field(avro_type, var, field_lines, field_parts):
                return None
            env[f"K{i}"] = [(_UNSEEN, b"")]
            lines.append(f"    {var}c = K{i}[0]")
            lines.append(f"    if {var}c[0] is {var}:")
            lines.append(f"        {var}e = {var}c[1]")
            lines.append("    else:")
            lines.extend("    " + line for line in field_lines)
            lines.append(f"        {var}e = b''.join(({', '.join(field_parts)},))")
            lines.append(f"        K{i}[0] = ({var}, {var}e)")
            parts.append(f"{var}e")
            continue
        if not _field(avro_type, var, lines, parts):
            return None
    source = ("def write(r):\n    try:\n" + "\n".join("    " + line for line in lines)
              + f"\n        return b''.join(({', '.join(parts)},))\n"
              + "    except (U, KeyError, IndexError, AttributeError, TypeError, ValueError):\n"
              + "        return None\n")
    exec(compile(source, f"<avro writer {schema.get('name')}>", "exec"), env)
    writer: Writer = env["write"]
    writer.source = source  # type: ignore[attr-defined]
    return writer


def _cacheable(avro_type: Any) -> bool:
    """Whether a field's values are immutable (so identity implies the same bytes)."""
    branches = avro_type if isinstance(avro_type, list) else [avro_type]
    return all(b == "null" or _branch(b) not in (None, "map") for b in branches)


def _field(avro_type: Any, var: str, lines: list[str], parts: list[str]) -> bool:
    """Code writing one field's value ``var``: False if its shape is not compiled."""
    if isinstance(avro_type, list):
        if len(avro_type) != 2 or "null" not in avro_type:
            return False
        null_index = avro_type.index("null")
        kind = _branch(avro_type[1 - null_index])
        if kind is None:
            return False
        null_tag, value_tag = (b"\x00", b"\x02") if null_index == 0 else (b"\x02", b"\x00")
        if kind == "string":  # the common case first; tag and length in one lookup
            table = "P2" if value_tag == b"\x02" else "P0"
            lines.append(f"    if type({var}) is str:")
            lines.append(f"        {var}b = {var}.encode(); {var}t = {table}[len({var}b)]")
            lines.append(f"    elif {var} is None:")
            lines.append(f"        {var}t = {null_tag!r}; {var}b = b''")
            lines.append("    else:")
            lines.append("        raise U")
            parts += [f"{var}t", f"{var}b"]
            return True
        if kind == "boolean":
            table = "B2" if value_tag == b"\x02" else "B0"
            lines.append(f"    if type({var}) is bool:")
            lines.append(f"        {var}t = {table}[{var}]")
            lines.append(f"    elif {var} is None:")
            lines.append(f"        {var}t = {null_tag!r}")
            lines.append("    else:")
            lines.append("        raise U")
            parts.append(f"{var}t")
            return True
        # Branch parts go straight into the record's one join (no nested join).
        sub: list[str] = []
        body: list[str] = []
        _emit(kind, var, sub, body, "        ")
        temps = [f"{var}x{k}" for k in range(len(sub))]
        # Test first for what the field usually holds: a value, but null for maps
        # (`extra` and `frame_extra` are null unless Bybit added something).
        value_test = f"type({var}) is {_UNION_TYPE[kind]}"
        value_code = [*body,
                      f"        {var}t = {value_tag!r}; {', '.join(temps)} = {', '.join(sub)}"]
        null_code = [f"        {var}t = {null_tag!r}; {' = '.join(temps)} = b''"]
        branches = [(value_test, value_code), (f"{var} is None", null_code)]
        if kind == "map":
            branches.reverse()
        for keyword, (test, code) in zip(("if", "elif"), branches, strict=True):
            lines.append(f"    {keyword} {test}:")
            lines.extend(code)
        lines.append("    else:")
        lines.append("        raise U")
        parts += [f"{var}t", *temps]
        return True
    kind = _branch(avro_type)
    if kind is None:
        return False
    _emit(kind, var, parts, lines, "    ")
    return True
