"""Compile a per-kind mapper from its ``.avsc``: Bybit item → Avro-ready dict.

Each Bybit-sourced field in ``avro/<kind>.avsc`` names its Bybit key in a
``"bybit"`` attribute; its Avro type decides the conversion (the schema is the
single place a field is described). Conversions are lossless:

* ``string``: the very ``str`` Bybit sent (decimal strings stay exact);
  a JSON number where a string is expected becomes its JSON text.
* ``long`` / ``timestamp-millis``: an int, or a numeric string (Bybit sends
  ``t`` both ways).
* ``boolean``: true/false, or the strings "true"/"True"/"false"/"False".
* nullable fields: absent or null → null; ``""`` stays ``""``.
* book sides: ``[[price, qty], ...]`` → ``[{price, quantity}, ...]``;
  balances ``[{a, f, l}]`` → ``[{asset, free, locked}]``.

``strict`` plans (Bybit v5, whose JSON types are documented) accept only the
JSON type Bybit sends: a string for ``string``, an integer for ``long``/``int``
(or, where the field says ``"bybit_type": "string"``, a numeric string such as
``createdTime``), true/false for ``boolean``; ``"bybit_type": "json"`` keeps any
JSON value as its JSON text; ``map<string>`` takes an object of strings; book
levels may be ``[price, size]`` or ``[price, size, size]``; an array of records
whose fields have ``"bybit"`` attributes is mapped element by element (each
element with its own ``extra``).

Keys Bybit sends that the schema does not know go to ``extra`` as JSON text.
A nullable field Bybit leaves out (or sends as null) becomes null; where the
field says ``"bybit_expected": true`` (Bybit documents it as always sent) the
absence is also reported to the plan's ``on_missing`` hook with the field's
path (``coins.usd_value``), so a respelled or dropped field shows on a
dashboard while the record still lands. A missing required field, a value
of the wrong type or a value nested too deeply to write back as JSON
(``RecursionError``) raises ``MappingError`` (never a half-filled record,
never an exception the pipeline does not route).
``map_item`` maps one item by a plan; ``row_mapper`` compiles the same for the
hot path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import chain
from typing import Any

from connector.errors import ConnectorError

Convert = Callable[[Any], Any]
# Told the path of an expected field an item left out (see the module doc).
OnMissing = Callable[[str], None]


class MappingError(ConnectorError):
    """A Bybit item does not fit its schema; the frame goes to the dead-letter topic."""

    def __init__(self, kind: str, field: str, reason: str) -> None:
        self.kind, self.field, self.reason = kind, field, reason
        super().__init__(f"{kind}.{field}: {reason}")


class _Bad(ValueError):
    """Internal: a conversion failed; turned into MappingError with context."""


def _show(value: Any) -> str:
    """A short preview of a bad value for an error message (never recurses deeply)."""
    if isinstance(value, dict | list):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'} of {len(value)}"
    return json.dumps(value)[:40]


def to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        raise _Bad(f"expected a string, got {_show(value)}")
    return json.dumps(value)


def to_long(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise _Bad(f"expected an integer, got {_show(value)}")


def to_int(value: Any) -> int:
    return to_long(value)


_TRUE = {True: True, "true": True, "True": True, False: False, "false": False, "False": False}


def to_bool(value: Any) -> bool:
    try:
        return _TRUE[value]
    except (KeyError, TypeError):
        raise _Bad(f"expected a boolean, got {_show(value)}") from None


_LISTS = frozenset({list})


def to_levels(value: Any) -> list[dict[str, str]]:
    # Each level must itself be a list: a 2-character string or a 2-key object
    # would otherwise unpack as a "pair". (A C-level pass: cheap on 200 levels.)
    if not isinstance(value, list) or not _LISTS.issuperset(map(type, value)):
        raise _Bad("expected a list of [price, quantity] pairs")
    try:
        out = [{"price": p, "quantity": q} for p, q in value]
    except (TypeError, ValueError):
        raise _Bad("expected a list of [price, quantity] pairs") from None
    for level in out:
        if type(level["price"]) is not str or type(level["quantity"]) is not str:
            raise _Bad("book levels must be decimal strings")
    return out


def to_balances(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise _Bad("expected a list of balances")
    try:
        return [{"asset": to_str(b["a"]), "free": to_str(b["f"]), "locked": to_str(b["l"])}
                for b in value]
    except (KeyError, TypeError):
        raise _Bad("each balance needs a, f and l") from None


# -- strict conversions (v5) -------------------------------------------------------------


def exact_str(value: Any) -> str:
    if type(value) is str:
        return value
    raise _Bad(f"expected a string, got {_show(value)}")


def exact_long(value: Any) -> int:
    if type(value) is int:  # not bool, whose type is bool
        return value
    raise _Bad(f"expected an integer, got {_show(value)}")


def exact_int(value: Any) -> int:
    if type(value) is int and -(2**31) <= value < 2**31:
        return value
    raise _Bad(f"expected a 32-bit integer, got {_show(value)}")


def long_text(value: Any) -> int:
    """A numeric string (``"1760000005122"``) as an int; only the canonical
    spelling, so ``str(result)`` gives Bybit's text back."""
    if type(value) is str:
        try:
            number = int(value)
        except ValueError:
            pass
        else:
            if str(number) == value:
                return number
    raise _Bad(f"expected an integer as a string, got {_show(value)}")


def exact_bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    raise _Bad(f"expected true or false, got {_show(value)}")


def json_text(value: Any) -> str:
    """Any JSON value as its JSON text (``""`` becomes the two-character text ``""``)."""
    try:
        return json.dumps(value)
    except RecursionError:
        raise _Bad("nested too deeply to keep as JSON") from None


def string_map(value: Any) -> dict[str, str]:
    if type(value) is not dict or not _STRS.issuperset(map(type, value.values())):
        raise _Bad("expected an object of strings")
    return value


_STRS = frozenset({str})


def to_levels3(value: Any) -> list[dict[str, str]]:
    """``[[price, size, size], ...]`` → ``[{price, quantity, rpi_quantity}, ...]``."""
    if not isinstance(value, list) or not _LISTS.issuperset(map(type, value)):
        raise _Bad("expected a list of [price, quantity, rpi quantity] triples")
    try:
        out = [{"price": p, "quantity": q, "rpi_quantity": r} for p, q, r in value]
    except (TypeError, ValueError):
        raise _Bad("expected a list of [price, quantity, rpi quantity] triples") from None
    if not _STRS.issuperset(map(type, chain.from_iterable(value))):
        raise _Bad("book levels must be decimal strings")
    return out


# Positional level records by their field names (the schema names them; Bybit does not).
_LEVELS: dict[tuple[str, ...], Convert] = {
    ("price", "quantity"): to_levels,
    ("price", "quantity", "rpi_quantity"): to_levels3,
}


def _record_array(record: dict[str, Any], named: dict[str, Any], namespace: str,
                  on_missing: OnMissing | None) -> Convert:
    """An array of Bybit objects mapped element by element with the record's own plan."""
    plan = _plan(record["fields"], True, named, namespace, on_missing)
    map_row = row_mapper(record["name"], plan, frozenset(key for _, key, _, _ in plan),
                         expected_fields(record["fields"]), on_missing)

    def convert(value: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise _Bad("expected a list of objects")
        out = []
        for index, element in enumerate(value):
            try:
                out.append(map_row(element, {}))
            except MappingError as exc:
                raise _Bad(f"element {index}: {exc.field}: {exc.reason}") from None
        return out

    return convert


def _strict_converter(field: dict[str, Any], named: dict[str, Any], namespace: str,
                      on_missing: OnMissing | None) -> tuple[Convert, bool]:
    avro_type = field["type"]
    nullable = isinstance(avro_type, list) and "null" in avro_type
    if isinstance(avro_type, list):
        avro_type = next(t for t in avro_type if t != "null")
    if field.get("bybit_type") == "json":
        return json_text, nullable
    if isinstance(avro_type, dict):
        kind = avro_type["type"]
        if kind == "map":
            return string_map, nullable
        if kind == "array":
            items = avro_type["items"]
            record = named[items] if isinstance(items, str) else items
            if isinstance(items, dict):
                named[f"{items.get('namespace', namespace)}.{items['name']}"] = items
            if any("bybit" in f for f in record["fields"]):
                prefix = f"{field['name']}."
                inner = (None if on_missing is None
                         else lambda path: on_missing(prefix + path))
                return _record_array(record, named, namespace, inner), nullable
            names = tuple(f["name"] for f in record["fields"])
            if names not in _LEVELS:
                raise ValueError(f"{field['name']}: no conversion for levels named {names}")
            return _LEVELS[names], nullable
        avro_type = kind
    if field.get("bybit_type") == "string":
        return long_text, nullable
    table: dict[str, Convert] = {"string": exact_str, "long": exact_long, "int": exact_int,
                                 "boolean": exact_bool}
    return table[avro_type], nullable


def _converter(avro_type: Any) -> tuple[Convert, bool]:
    """(conversion, nullable) for a field's Avro type."""
    nullable = False
    if isinstance(avro_type, list):
        nullable = "null" in avro_type
        avro_type = next(t for t in avro_type if t != "null")
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "array":
            items = avro_type["items"]
            name = items.get("name") if isinstance(items, dict) else str(items)
            return (to_balances if name and name.endswith("Balance") else to_levels), nullable
        avro_type = avro_type["type"]
    table: dict[str, Convert] = {"string": to_str, "long": to_long, "int": to_int,
                                 "boolean": to_bool}
    return table[avro_type], nullable


# (field name, Bybit key, conversion, nullable)
FieldPlan = tuple[str, str, Convert, bool]


def field_plan(schema: dict[str, Any], strict: bool = False,
               on_missing: OnMissing | None = None) -> list[FieldPlan]:
    """The Bybit-sourced fields of a schema, in order (``strict``: see the module doc;
    ``on_missing`` is handed to the row mappers of nested record arrays)."""
    return _plan(schema["fields"], strict, {}, schema.get("namespace", ""), on_missing)


def expected_fields(fields: list[dict[str, Any]]) -> frozenset[str]:
    """Names of the fields whose absence is counted (``"bybit_expected": true``)."""
    return frozenset(f["name"] for f in fields if f.get("bybit_expected"))


def _plan(fields: list[dict[str, Any]], strict: bool, named: dict[str, Any],
          namespace: str, on_missing: OnMissing | None = None) -> list[FieldPlan]:
    plan = []
    for field in fields:
        key = field.get("bybit")
        if key is not None:
            convert, nullable = (_strict_converter(field, named, namespace, on_missing)
                                 if strict else _converter(field["type"]))
            plan.append((field["name"], key, convert, nullable))
    return plan


def map_value(kind: str, name: str, where: str, convert: Convert, value: Any) -> Any:
    """``convert(value)``, with a conversion failure raised as ``MappingError``."""
    try:
        return convert(value)
    except _Bad as exc:
        raise MappingError(kind, name, f"{where}: {exc}") from None


# Converters that return a value of this type unchanged: `row_mapper` copies such a
# value without calling them.
_SAME: dict[Convert, type] = {to_str: str, to_long: int, to_int: int, to_bool: bool,
                              exact_str: str, exact_long: int, exact_bool: bool}

RowMapper = Callable[[Any, dict[str, Any]], dict[str, Any]]


def row_mapper(kind: str, plan: list[FieldPlan], known: frozenset[str],
               expected: frozenset[str] = frozenset(),
               on_missing: OnMissing | None = None) -> RowMapper:
    """``map_item`` compiled for the hot path: same results and errors, but a
    value that already has its field's type (most are) is copied without a
    call (profiled: about a quarter of a v5 trade's mapping time).

    A field named in ``expected`` that an item leaves out is reported to
    ``on_missing`` (only on that path: a present value costs nothing more).
    """
    # `nullable`: 0 required, 1 nullable, 2 nullable and counted when missing (one
    # tuple slot fewer to unpack per field than a separate flag).
    typed = [(name, key, _SAME.get(convert), convert,
              (2 if name in expected and on_missing is not None else 1) if nullable else 0)
             for name, key, convert, nullable in plan]
    n_known = len(known)

    def map_row(item: Any, out: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise MappingError(kind, "(item)", f"expected an object, got {type(item).__name__}")
        get = item.get
        for name, key, same, convert, nullable in typed:
            value = get(key)
            if type(value) is same:
                out[name] = value
            elif value is None:
                if not nullable:
                    raise MappingError(kind, name, f"Bybit field {key!r} is missing")
                out[name] = None
                if nullable == 2:
                    on_missing(name)  # type: ignore[misc]
            else:
                out[name] = map_value(kind, name, f"Bybit field {key!r}", convert, value)
        if len(item) > n_known or not known.issuperset(item):
            try:
                out["extra"] = {k: json.dumps(v) for k, v in item.items()
                                if k not in known} or None
            except RecursionError:
                raise MappingError(kind, "extra", "a field Bybit added is nested too deeply "
                                                  "to keep as JSON") from None
        else:
            out["extra"] = None
        return out

    return map_row


def map_item(kind: str, plan: list[FieldPlan], known: frozenset[str], item: Any,
             out: dict[str, Any]) -> dict[str, Any]:
    """Fill ``out`` from one Bybit item following ``plan``; returns ``out``."""
    if not isinstance(item, dict):
        raise MappingError(kind, "(item)", f"expected an object, got {type(item).__name__}")
    for name, key, convert, nullable in plan:
        value = item.get(key)
        if value is None:
            if not nullable:
                raise MappingError(kind, name, f"Bybit field {key!r} is missing")
            out[name] = None
            continue
        try:
            out[name] = convert(value)
        except _Bad as exc:
            raise MappingError(kind, name, f"Bybit field {key!r}: {exc}") from None
    extra = None
    if len(item) > len(known) or not known.issuperset(item):
        try:
            unknown = {k: json.dumps(v) for k, v in item.items() if k not in known}
        except RecursionError:
            raise MappingError(kind, "extra", "a field Bybit added is nested too deeply to "
                                              "keep as JSON") from None
        extra = unknown or None
    out["extra"] = extra
    return out
