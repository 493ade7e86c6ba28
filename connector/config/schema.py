"""JSON Schema of the config file, generated from the dataclasses in ``config``.

``connector/config/config.schema.json`` is this output, committed so editors can
autocomplete ``config.yaml``; a test keeps the two in sync. Regenerate with
``python -m connector.config.schema > connector/config/config.schema.json``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal, get_args, get_origin

from connector.bybit import topics
from connector.config.kafka_keys import PRODUCER_KEYS
from connector.config.model import Config, Secret, yaml_key

# Numbers and booleans may also come from the environment: `port: ${METRICS_PORT:-9102}`.
_ENV_REF = {"type": "string", "pattern": "^\\$\\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\\}$"}


def _type_schema(tp: Any) -> dict[str, Any]:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        return {"anyOf": [*(_type_schema(o) for o in options), {"type": "null"}]}
    if tp is Secret or tp is str:
        return {"type": "string"}
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    if dataclasses.is_dataclass(tp):
        return _object_schema(tp)  # type: ignore[arg-type]
    if origin is list:
        return {"type": "array", "items": _type_schema(get_args(tp)[0])}
    if origin is dict:
        return {"type": "object"}
    if tp is bool:
        return {"anyOf": [{"type": "boolean"}, _ENV_REF]}
    if tp is int:
        return {"anyOf": [{"type": "integer"}, _ENV_REF]}
    if tp is float:
        return {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, _ENV_REF]}
    raise TypeError(f"no JSON Schema for {tp!r}")


def _object_schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        key = yaml_key(f)
        schema = _type_schema(hints[f.name])
        bounds = {k: f.metadata[k] for k in ("minimum", "maximum") if k in f.metadata}
        if bounds:  # on the number alternative (the other is a ${ENV} reference)
            schema["anyOf"][0].update(bounds)
        schema["description"] = f.metadata.get("doc", "")
        if f.default is not dataclasses.MISSING and f.default is not None:
            schema["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            if not dataclasses.is_dataclass(value) and value:
                schema["default"] = value
        if "example" in f.metadata:
            schema["examples"] = [f.metadata["example"]]
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(key)
        props[key] = schema
        if f.metadata.get("secret"):
            props[f"{f.name}_file"] = {
                "type": "string",
                "description": f"Path of a file holding {f.name} (instead of {f.name}).",
            }
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
        out["description"] = cls.__doc__.strip()
    if required:
        out["required"] = required
    return out


def generate() -> dict[str, Any]:
    schema = _object_schema(Config)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "bybit-kafka-connector configuration"
    sub = schema["properties"]["subscriptions"]["items"]
    all_topics = sorted({t.topic for t in topics.TOPICS} |
                        {f"kline_{i}" for i in topics.KLINE_INTERVALS})
    sub["properties"]["topic"]["enum"] = all_topics
    interval = sub["properties"]["interval"]["anyOf"]
    interval[0]["enum"] = [*topics.V5_KLINE_INTERVALS, *topics.KLINE_INTERVALS]
    interval[1] = {"enum": [int(i) for i in topics.V5_KLINE_INTERVALS if i.isdigit()]}
    sub["properties"]["depth"]["anyOf"][0] = {"enum": list(topics.V5_ORDERBOOK_DEPTHS)}
    sub["properties"]["symbols"]["items"]["pattern"] = "^[A-Z0-9]{2,30}$"
    producer = schema["properties"]["kafka"]["properties"]["producer"]
    producer["propertyNames"] = {"enum": sorted(PRODUCER_KEYS)}
    return schema


def render() -> str:
    return json.dumps(generate(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
