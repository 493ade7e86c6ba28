"""Bounds on what a config file may make the process hold or do.

A YAML alias repeats what it points to, so a few lines can stand for billions
of values; a ``*_file`` secret may name a huge file or a device that never
ends; a number may be out of any sane range. Each is a ``ConfigError`` naming
the YAML path at load time (``validate``), never a crash at ``run``.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from connector.errors import ConfigError

MAX_CONFIG_BYTES = 1024 * 1024
MAX_NODES = 100_000  # values in the file once aliases are expanded
MAX_SECRET_FILE_BYTES = 64 * 1024
MAX_SECONDS = 86_400.0  # no timeout or interval is sane beyond a day
PORT_MAX = 65535


def read_limited(path: Path, limit: int, yaml_path: str, what: str) -> bytes:
    """At most ``limit`` bytes of ``path``; a larger file (or a device that never
    ends, like /dev/zero) is a ``ConfigError`` instead of unbounded memory."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise ConfigError(yaml_path, f"cannot read {what} {str(path)!r}: "
                                     f"{exc.strerror or exc}") from exc
    if len(data) > limit:
        size = f"{limit // 1024 // 1024} MiB" if limit >= 1 << 20 else f"{limit // 1024} KiB"
        raise ConfigError(yaml_path, f"{what} {str(path)!r} is larger than {size}")
    return data


def check_expanded_size(raw: Any) -> None:
    """Reject a document that stands for more than ``MAX_NODES`` values.

    YAML aliases share one object, so loading is cheap, but everything that
    walks the result (validation, the Kafka client, logging it) pays for every
    repetition: nine lines of nested aliases are a billion values. Walks
    iteratively and stops at the bound, so it is cheap however big the bomb
    (and ends on recursive aliases too).
    """
    count = 0
    stack: list[tuple[Any, str]] = [(raw, "")]
    while stack:
        value, path = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ConfigError(path or "(top level)",
                              f"the config expands to more than {MAX_NODES} values",
                              "YAML anchors and aliases repeat what they point to; "
                              "write the values out or use fewer aliases")
        if isinstance(value, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))


def check_range(value: Any, meta: typing.Mapping[str, Any], path: str) -> None:
    """The ``minimum``/``maximum`` of a field's metadata (see ``doc``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    low, high = meta.get("minimum"), meta.get("maximum")
    if (low is None or value >= low) and (high is None or value <= high):
        return
    def show(bound: float) -> str:
        return str(int(bound)) if float(bound).is_integer() else str(bound)

    if low is not None and high is not None:
        raise ConfigError(path, f"must be between {show(low)} and {show(high)}, got {value}")
    if low is not None:
        raise ConfigError(path, f"must be at least {show(low)}, got {value}")
    assert high is not None
    raise ConfigError(path, f"must be at most {show(high)}, got {value}")
