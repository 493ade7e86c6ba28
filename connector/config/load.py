"""Reading the config: YAML, ``${ENV_VAR}`` interpolation and secret files.

``load``/``loads`` are the entry points: they parse the YAML, build the
dataclasses of ``connector.config.model`` field by field (rejecting unknown
keys, wrong types and out-of-range numbers with the YAML path at fault), then
run ``connector.config.checks``. Secrets are never required inline: any string
may be ``${ENV_VAR}`` (or ``${ENV_VAR:-default}``), and every secret has a
``<name>_file`` twin that reads it from a mounted file.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from connector.config.checks import check, type_name
from connector.config.limits import (
    MAX_CONFIG_BYTES,
    MAX_SECRET_FILE_BYTES,
    check_expanded_size,
    check_range,
    read_limited,
)
from connector.config.model import Config, Secret, yaml_key
from connector.errors import ConfigError

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load(path: str | Path, env: typing.Mapping[str, str] | None = None) -> Config:
    """Read, interpolate, validate. Raises ``ConfigError`` naming the YAML path."""
    path = Path(path)
    data = read_limited(path, MAX_CONFIG_BYTES, "", "config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"config file {str(path)!r} is not UTF-8 text: {exc}") from exc
    return loads(text, env=env, base_dir=path.parent)


def loads(text: str, env: typing.Mapping[str, str] | None = None,
          base_dir: Path | None = None) -> Config:
    """Parse a YAML string into a validated ``Config``."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError("", f"the config is larger than {MAX_CONFIG_BYTES // 1024 // 1024} MiB")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError("", f"not valid YAML at {where}: {problem}") from exc
    except RecursionError:
        raise ConfigError("", "the YAML is nested too deeply") from None
    if raw is None:
        raw = {}
    check_expanded_size(raw)
    ctx = _Ctx(env=os.environ if env is None else env, base_dir=base_dir or Path.cwd())
    config = _build(Config, raw, "", ctx)
    assert isinstance(config, Config)
    check(config)
    return config


@dataclass
class _Ctx:
    env: typing.Mapping[str, str]
    base_dir: Path


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _interpolate(value: str, path: str, ctx: _Ctx) -> str:
    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in ctx.env:
            return ctx.env[name]
        if default is not None:
            return default
        raise ConfigError(path, f"environment variable {name} is not set",
                          f"export {name}=... or use ${{{name}:-default}}")
    return _ENV_RE.sub(sub, value)


def _build(cls: type, raw: Any, path: str, ctx: _Ctx) -> Any:
    """Build dataclass ``cls`` from ``raw``, rejecting unknown keys."""
    if not isinstance(raw, dict):
        raise ConfigError(path or "(top level)", f"expected a mapping, got {type_name(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {yaml_key(f): f for f in dataclasses.fields(cls)}
    secrets = {n for n, f in fields.items() if f.metadata.get("secret")}
    allowed = set(fields) | {f"{n}_file" for n in secrets}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        key_path = _join(path, str(key))
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f"did you mean '{close[0]}'?" if close else (
                "known keys: " + ", ".join(sorted(fields)))
            raise ConfigError(key_path, "unknown key", hint)
        if key.endswith("_file") and key[:-5] in secrets:
            name = key[:-5]
            if name in raw:
                raise ConfigError(key_path, f"give either {name} or {key}, not both")
            kwargs[name] = Secret(_read_secret_file(value, key_path, ctx))
            continue
        kwargs[fields[key].name] = _convert(hints[fields[key].name], value, key_path, ctx)
        check_range(kwargs[fields[key].name], fields[key].metadata, key_path)
    for name, f in fields.items():
        if (f.name not in kwargs and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING):
            raise ConfigError(_join(path, name), "is required")
    return cls(**kwargs)


def _read_secret_file(value: Any, path: str, ctx: _Ctx) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"expected a file path, got {type_name(value)}")
    file = Path(_interpolate(value, path, ctx))
    if not file.is_absolute():
        file = ctx.base_dir / file
    data = read_limited(file, MAX_SECRET_FILE_BYTES, path, "secret file")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(path, f"secret file {str(file)!r} is not UTF-8 text") from None


def _convert(tp: Any, value: Any, path: str, ctx: _Ctx) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            if type(None) in get_args(tp):
                return None
            raise ConfigError(path, "must not be empty")
        first: ConfigError | None = None
        for option in options:  # the first type that accepts the value wins
            try:
                return _convert(option, value, path, ctx)
            except ConfigError as exc:
                first = first or exc
        assert first is not None
        raise first
    if isinstance(value, str) and "${" in value:
        value = _interpolate(value, path, ctx)
        value = _coerce_interpolated(tp, value)
    if tp is Secret:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {type_name(value)}")
        return Secret(value)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(path, f"{value!r} is not one of {', '.join(map(str, choices))}",
                              _UNSUPPORTED.get(value) if isinstance(value, str) else None)
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, ctx)  # type: ignore[arg-type]
    if origin is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {type_name(value)}")
        return [_convert(item_tp, v, f"{path}[{i}]", ctx) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {type_name(value)}")
        return {str(k): _interpolate_tree(v, _join(path, str(k)), ctx) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(path, f"must be a finite number, got {value!r}")
        if value <= 0:
            raise ConfigError(path, f"must be positive, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {type_name(value)}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # a bug, not bad input


# Values a choice deliberately leaves out, and why (shown with the error).
_UNSUPPORTED = {
    "OAUTHBEARER": "OAUTHBEARER needs a token provider, which the connector does not have; "
                   "use PLAIN or SCRAM",
}


def _coerce_interpolated(tp: Any, value: str) -> Any:
    """``${PORT}`` in a number or boolean field: parse the substituted text."""
    try:
        if tp is int:
            return int(value)
        if tp is float:
            return float(value)
    except ValueError:
        return value
    if tp is bool and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _interpolate_tree(value: Any, path: str, ctx: _Ctx) -> Any:
    if isinstance(value, str):
        return _interpolate(value, path, ctx)
    return value
