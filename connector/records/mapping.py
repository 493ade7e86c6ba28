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

Keys Bybit sends that the schema does not know go to ``extra`` as JSON text.
A missing required field, a value of the wrong type or a value nested too
deeply to write back as JSON (``RecursionError``) raises ``MappingError``
(never a half-filled record, never an exception the pipeline does not route).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from connector.errors import ConnectorError

Convert = Callable[[Any], Any]


class MappingError(ConnectorError):
    """A Bybit item does not fit its schema; the frame goes to the dead-letter topic."""

    def __init__(self, kind: str, field: str, reason: str) -> None:
        self.kind, self.field, self.reason = kind, field, reason
        super().__init__(f"{kind}.{field}: {reason}")


class _Bad(Exception):
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


def field_plan(schema: dict[str, Any]) -> list[FieldPlan]:
    """The Bybit-sourced fields of a schema, in order."""
    plan = []
    for field in schema["fields"]:
        key = field.get("bybit")
        if key is not None:
            convert, nullable = _converter(field["type"])
            plan.append((field["name"], key, convert, nullable))
    return plan


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
