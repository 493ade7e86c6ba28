"""Command line: ``bybit-kafka-connector`` / ``python -m connector``.

Exit codes: 0 ok, 2 usage or configuration error, 1 runtime failure.
Only this module configures logging; it wires config → pipeline and holds no
business logic.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from connector import __version__
from connector.config.load import load
from connector.config.model import Config
from connector.errors import ConfigError, ConnectorError

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kafka-python is chatty at INFO (every metadata refresh).
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bybit-kafka-connector",
        description="Stream Bybit spot WebSocket market and account data into Kafka as Avro.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default: INFO")
    parser.add_argument("--log-format", default="text", choices=["text", "json"],
                        help="default: text")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="stream the configured topics into Kafka",
                         description="Connect to Bybit and stream every configured "
                                     "subscription into Kafka until SIGTERM/SIGINT.")
    run.add_argument("--config", "-c", required=True, help="YAML config file")

    validate = sub.add_parser("validate", help="check a config and print the resolved plan",
                              description="Parse and validate the config; print the "
                                          "connections, subscriptions and Kafka topics.")
    validate.add_argument("--config", "-c", required=True, help="YAML config file")
    validate.add_argument("--json", action="store_true", help="print the plan as JSON")

    # `exchange` has its own parser (connector.exchange.__main__): its arguments,
    # --help included, pass through untouched (see main).
    sub.add_parser("exchange", help="run a local Bybit-compatible exchange (demo, tests)",
                   add_help=False,
                   description="A local WebSocket server speaking Bybit's spot protocol.")
    consume = sub.add_parser(
        "consume", help="print what the connector wrote to a topic, as JSON lines",
        description="Decode a Kafka topic the connector writes (plain Avro by the fingerprint "
                    "header, Confluent framing via the registry, dead letters as headers + "
                    "raw bytes) and print one JSON object per message.")
    consume.add_argument("--topic", "-t", required=True, help="Kafka topic to read")
    consume.add_argument("--bootstrap-servers", help="comma-separated brokers (default: the "
                                                     "config's, else localhost:9092)")
    consume.add_argument("--config", "-c", help="connector config: Kafka security, registry")
    consume.add_argument("--from-beginning", action="store_true",
                         help="start at the oldest message (default: only new ones)")
    consume.add_argument("--max-messages", type=int, help="stop after N messages")
    consume.add_argument("--timeout", type=float,
                         help="stop after S seconds without a message (default: never; "
                              "5 with --max-messages)")

    replay = sub.add_parser(
        "replay", help="re-derive the typed topics from the raw archive or the dead letters",
        description="Read a raw frame archive topic or the dead-letter topic, run today's "
                    "decoders and mappers and write the typed topics with the same keys, "
                    "headers and schemas, skipping every record the topic already holds.")
    replay.add_argument("--config", "-c", required=True, help="YAML config file")
    replay.add_argument("--source", "-s", required=True,
                        help="topic to read: an archive topic (bybit.raw.v5) or the config's "
                             "dead-letter topic")
    replay.add_argument("--start-offset", type=int, help="first offset, every partition")
    replay.add_argument("--end-offset", type=int, help="offset to stop before, every partition")
    replay.add_argument("--start-time", help="first record time (epoch ms or ISO 8601)")
    replay.add_argument("--end-time", help="record time to stop before (epoch ms or ISO 8601)")
    replay.add_argument("--symbol", action="append", default=[], help="only this symbol "
                                                                      "(repeatable)")
    replay.add_argument("--topic", action="append", default=[],
                        help="only this Bybit topic id, e.g. publicTrade, orderbook.50 "
                             "(repeatable)")
    replay.add_argument("--dry-run", action="store_true",
                        help="print what would be written, write nothing")
    replay.add_argument("--tail", type=int, default=500_000,
                        help="records per partition of each typed topic read to know what "
                             "it already holds (default 500000)")

    sub.add_parser("schema", help="print the JSON Schema of the config file",
                   description="Print the JSON Schema that config files are validated against.")
    return parser


def plan(config: Config) -> dict[str, object]:
    """What ``run`` would do: connections per stream, subscriptions, Kafka topics."""
    subs = []
    pairs: dict[str, int] = {}
    for s in config.subscriptions:
        n = max(1, len(s.symbols))
        pairs[s.stream] = pairs.get(s.stream, 0) + n
        subs.append({
            "stream": s.stream, "bybit_topic": s.topic_id, "symbols": s.symbols,
            "binary": s.binary, "kafka_topic": config.kafka_topic(s), "schema": s.spec.kind,
        })
    from connector.service import plan_groups, stream_url, subscriptions_by_stream

    cap = config.bybit.max_subscriptions_per_connection
    by_stream = subscriptions_by_stream(config)
    connections = {stream: len(plan_groups(stream, subs, cap))
                   for stream, subs in by_stream.items()}
    # `network` matters only for streams without a URL of their own.
    by_network = [s for s in by_stream if not config.bybit.urls.for_stream(s)]
    return {
        "network": config.bybit.network if by_network else None,
        "urls": {stream: stream_url(config, stream) for stream in by_stream},
        "connections": connections,
        "subscriptions": subs,
        "kafka": {"bootstrap_servers": config.kafka.bootstrap_servers,
                  "dead_letter_topic": config.kafka.dead_letter_topic},
        "serialization": config.serialization.format,
    }


def _print_plan(config: Config, as_json: bool) -> None:
    p = plan(config)
    if as_json:
        print(json.dumps(p, indent=2))
        return
    conns = ", ".join(f"{stream}: {n}" for stream, n in p["connections"].items())  # type: ignore[attr-defined]
    print(f"config OK — connections {conns}, serialization {p['serialization']}")
    for stream, url in p["urls"].items():  # type: ignore[attr-defined]
        source = "bybit.urls" if config.bybit.urls.for_stream(stream) else \
            f"network {p['network']}"
        print(f"bybit {stream} -> {url} ({source})")
    print(f"kafka -> {','.join(config.kafka.bootstrap_servers)}")
    rows = [("stream", "bybit topic", "symbols", "kafka topic", "schema")]
    for s in p["subscriptions"]:  # type: ignore[attr-defined]
        symbols = ",".join(s["symbols"]) or "(account)"
        if len(symbols) > 40:
            symbols = f"{len(s['symbols'])} symbols"
        rows.append((s["stream"], s["bybit_topic"], symbols, s["kafka_topic"], s["schema"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(f"dead letters -> {config.kafka.dead_letter_topic}")


def _time_ms(text: str | None) -> int | None:
    """Epoch milliseconds or an ISO 8601 time (UTC unless it says otherwise)."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _replay(config: Config, args: argparse.Namespace) -> int:
    from connector.archive.replay import Selection, run_replay

    try:
        selection = Selection(args.source, args.start_offset, args.end_offset,
                              _time_ms(args.start_time), _time_ms(args.end_time),
                              frozenset(args.symbol), frozenset(args.topic))
    except ValueError as exc:
        print(f"error: --start-time/--end-time: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        run_replay(config, selection, args.dry_run, sys.stdout, args.tail)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConnectorError as exc:
        logging.getLogger(__name__).error("replay failed: %s", exc)
        return EXIT_RUNTIME
    return EXIT_OK


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The parsed arguments and those left for ``exchange``'s own parser.

    Exits with 2 and a usage line on a bad command line (as argparse does).
    Options of the program itself (``--log-level``, ``--log-format``) come
    before the command.
    """
    parser = build_parser()
    args, rest = parser.parse_known_args(list(argv))
    if args.command != "exchange" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args, rest


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (`validate --json | head`): no traceback. Python's
        # own flush at exit would fail again, so stdout goes to /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_RUNTIME


def _main(argv: Sequence[str] | None) -> int:
    args, rest = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(args.log_level, args.log_format)
    if args.command == "exchange":
        # Imports nothing of the server (nor websockets) until its arguments are parsed,
        # so --help works from a plain install.
        from connector.exchange.__main__ import main as exchange_main

        return exchange_main(rest, prog="bybit-kafka-connector exchange")
    if args.command == "schema":
        from connector.config.schema import render

        print(render(), end="")
        return EXIT_OK
    if args.command == "consume":
        from connector.dev.consume import run_consume

        servers = args.bootstrap_servers.split(",") if args.bootstrap_servers else None
        try:
            return run_consume(args.topic, servers, args.config, args.from_beginning,
                               args.max_messages, args.timeout, sys.stdout)
        except ConfigError as exc:
            print(f"error: {args.config}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"error: {args.config}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "validate":
        _print_plan(config, args.json)
        return EXIT_OK
    if args.command == "replay":
        return _replay(config, args)
    from connector.service import run

    try:
        return run(config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConnectorError as exc:
        logging.getLogger(__name__).error("fatal: %s", exc)
        return EXIT_RUNTIME
