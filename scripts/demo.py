"""End-to-end demo: local Kafka + local exchange + the connector, then a report.

Starts a single-node Kafka broker (from Maven Central, cached in .cache/) and
the local Bybit-compatible exchange on 127.0.0.1, runs the connector as its
own process with scripts/demo-config.yaml (Bybit v5 and the legacy streams
side by side) for a while, stops it with SIGTERM (it flushes), then prints a
per-topic table (Kafka topic, records, bytes; v5 first, then legacy) and one
decoded record per topic. Stops everything it started. Exits 1 if any
configured topic got no records.

Usage: python scripts/demo.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connector.config.load import load  # noqa: E402
from connector.dev.consume import AvroDecoder, read_all  # noqa: E402
from connector.dev.kafka_broker import KafkaBroker  # noqa: E402

CONFIG = ROOT / "scripts" / "demo-config.yaml"
# Table groups: (header, streams), in display order.
FAMILIES = (("Bybit v5 spot (v5, v5-private)", ("v5", "v5-private")),
            ("legacy spot (v1, v2, private)", ("v1", "v2", "private")))
KLINE_SCALE = "0.01"  # a v5 1-minute candle lasts 0.6 s, so closed candles show up


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def scrape(port: int) -> dict[str, float]:
    """A few headline metrics from the connector's /metrics."""
    wanted = ("bybit_connector_records_produced_total", "bybit_connector_dropped_records_total",
              "bybit_connector_dead_letter_records_total",
              "bybit_connector_duplicates_suppressed_total",
              "bybit_connector_undecodable_frames_total")
    out: dict[str, float] = dict.fromkeys(wanted, 0.0)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in out:
                out[name] += float(line.rsplit(" ", 1)[1])
    return out


def short(value: Any) -> Any:
    """Shorten long book sides for display."""
    if isinstance(value, list) and len(value) > 3:
        return [*value[:3], f"... {len(value) - 3} more"]
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to stream")
    args = parser.parse_args()

    print("starting Kafka (first run downloads it from Maven Central)...", flush=True)
    with KafkaBroker() as broker:
        print(f"Kafka ready at {broker.bootstrap_servers}")
        exchange_port, metrics_port = free_port(), free_port()
        env = dict(os.environ, EXCHANGE_URL=f"ws://127.0.0.1:{exchange_port}",
                   KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
                   METRICS_PORT=str(metrics_port),
                   BYBIT_API_KEY="demo-key", BYBIT_API_SECRET="demo-secret")
        exchange = subprocess.Popen(
            [sys.executable, "-m", "connector", "exchange", "--port", str(exchange_port),
             "--api-key", "demo-key", "--api-secret-env", "BYBIT_API_SECRET",
             "--kline-scale", KLINE_SCALE],
            env=env, cwd=ROOT)
        connector = None
        try:
            wait_for_port(exchange_port)
            print(f"local exchange at ws://127.0.0.1:{exchange_port}")
            connector = subprocess.Popen(
                [sys.executable, "-m", "connector", "run", "--config", str(CONFIG)],
                env=env, cwd=ROOT)
            print(f"connector running for {args.seconds:.0f} s "
                  f"(metrics: http://127.0.0.1:{metrics_port}/metrics)...", flush=True)
            time.sleep(args.seconds)
            stats = scrape(metrics_port)
            connector.send_signal(signal.SIGTERM)
            code = connector.wait(timeout=60)
            print(f"connector stopped with exit code {code}")
        finally:
            if connector is not None and connector.poll() is None:
                connector.kill()
            exchange.send_signal(signal.SIGTERM)
            try:
                exchange.wait(timeout=10)
            except subprocess.TimeoutExpired:
                exchange.kill()

        os.environ.update(BYBIT_API_KEY="demo-key", BYBIT_API_SECRET="demo-secret",
                          KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers)
        config = load(CONFIG)
        kinds = {config.kafka_topic(s): s.spec.kind for s in config.subscriptions}
        streams = {config.kafka_topic(s): s.stream for s in config.subscriptions}
        rank = {stream: i for _, members in FAMILIES for i, stream in enumerate(members)}
        groups = [(header, sorted((t for t in kinds if streams[t] in members),
                                  key=lambda t: (rank[streams[t]], t)))
                  for header, members in FAMILIES]
        topics = [t for _, group in groups for t in group]
        messages = read_all(broker.bootstrap_servers, [*topics, config.kafka.dead_letter_topic],
                            timeout=60)
        decoder = AvroDecoder()
        width = max(44, *(len(t) for t in topics))
        print()
        print(f"{'kafka topic':<{width}} {'records':>8} {'bytes':>10}")
        missing = []
        for header, group in groups:
            if not group:
                continue
            print(f"-- {header}")
            for topic in group:
                msgs = messages[topic]
                print(f"{topic:<{width}} {len(msgs):>8} {sum(len(m.value) for m in msgs):>10}")
                if not msgs:
                    missing.append(topic)
        dlq = messages[config.kafka.dead_letter_topic]
        print("-- dead letters")
        print(f"{config.kafka.dead_letter_topic:<{width}} {len(dlq):>8} "
              f"{sum(len(m.value) for m in dlq):>10}")
        print()
        print("connector metrics at shutdown: " + ", ".join(
            f"{k.removeprefix('bybit_connector_')}={v:g}" for k, v in stats.items()))
        print()
        for topic in topics:
            if messages[topic]:
                record = decoder.decode(kinds[topic], messages[topic][-1])
                shown = {k: short(v) for k, v in record.items()}
                print(f"--- {topic} ({kinds[topic]})")
                print(json.dumps(shown, default=str, indent=None))
        if missing:
            print(f"\nno records in: {', '.join(missing)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
