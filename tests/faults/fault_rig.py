"""The fault suite's rig: a real broker, the local exchange, and the connector
as its own process; counts what the exchange generated and where it went."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from connector.dev.consume import AvroDecoder, read_all
from connector.dev.kafka_broker import KafkaBroker, free_port
from connector.exchange import ExchangeServer

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "DOTUSDT",
           "LTCUSDT", "LINKUSDT", "AVAXUSDT"]


@dataclass
class Outcome:
    """One fault's accounting, by trade id."""

    fault: str
    generated: int
    landed: int
    dead_lettered: int
    counted: int
    duplicated: int
    lost: int
    recovery_seconds: float | None = None
    notes: list[str] = field(default_factory=list)
    out_of_order: int | None = None  # landed records whose trade id is below an earlier
    # one of its key (None: not counted here)

    def row(self) -> str:
        rec = "-" if self.recovery_seconds is None else f"{self.recovery_seconds:.1f} s"
        return (f"| {self.fault} | {self.generated} | {self.landed} | {self.dead_lettered} | "
                f"{self.counted} | {self.duplicated} | "
                f"{'-' if self.out_of_order is None else self.out_of_order} | {rec} |")


class ConnectorProcess:
    """``python -m connector run`` with a generated config, scraped over HTTP."""

    running: ClassVar[set[ConnectorProcess]] = set()  # for the suite's clean-up

    def __init__(self, exchange: ExchangeServer, bootstrap: str, prefix: str, workdir: Path,
                 symbols: list[str] = SYMBOLS, kafka_extra: str = "") -> None:
        self.port = free_port()
        self.prefix = prefix
        self.symbols = list(symbols)
        self.topic = f"{prefix}.v1.trade"
        self.dead_letter_topic = f"{prefix}.dead-letter"
        self.config = workdir / f"{prefix}.yaml"
        self.config.write_text(f"""
bybit:
  urls: {{v1: "{exchange.url}/spot/quote/ws/v1"}}
  ping_interval_seconds: 1
kafka:
  bootstrap_servers: ["{bootstrap}"]
  topic_template: "{prefix}.{{stream}}.{{topic}}"
  dead_letter_topic: {self.dead_letter_topic}
{kafka_extra}
metrics: {{host: 127.0.0.1, port: {self.port}}}
subscriptions:
  - {{stream: v1, topic: trade, symbols: [{", ".join(symbols)}]}}
""")
        self.proc: subprocess.Popen[str] | None = None
        self.stderr = workdir / f"{prefix}.stderr"
        self.logs: list[str] = []
        self.dropped = 0.0  # dropped_records_total of finished processes
        self.landed_ids: set[str] = set()

    def start(self) -> ConnectorProcess:
        self._err = open(self.stderr, "a")  # noqa: SIM115 (owned by the process)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "connector", "run", "--config", str(self.config)],
            stderr=self._err, stdout=subprocess.DEVNULL, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        ConnectorProcess.running.add(self)
        wait_for(lambda: self.metric("bybit_connector_subscriptions_active")
                 >= len(self.symbols) or False, 90, "the connector did not subscribe")
        return self

    def scrape(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def metric(self, prefix: str) -> float:
        """Sum of every sample whose name (with labels) starts with ``prefix``."""
        try:
            return sum(v for k, v in self.scrape().items() if k.startswith(prefix))
        except (OSError, urllib.error.URLError):
            return 0.0

    def ready(self) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def produced(self) -> float:
        return self.metric("bybit_connector_records_produced_total")

    def sigterm(self, timeout: float = 90) -> int:
        """SIGTERM; adds what the process counted as dropped (every reason) to ``dropped``."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        ConnectorProcess.running.discard(self)
        self._err.close()
        text = self.stderr.read_text(errors="replace")
        found = re.findall(r"records accepted=(\d+) lost=(\d+) dropped=(\d+)", text)
        assert found, text[-3000:]
        self.dropped += int(found[-1][2])
        return code

    def kill9(self) -> None:
        assert self.proc is not None
        self.dropped += self.metric("bybit_connector_dropped_records_total")
        self.proc.kill()
        self.proc.wait(30)
        ConnectorProcess.running.discard(self)
        self._err.close()

    def outcome(self, fault: str, exchange: ExchangeServer, bootstrap: str,
                recovery: float | None = None) -> Outcome:
        generated = sent_trade_ids(exchange, self.symbols)
        messages = read_all(bootstrap, [self.topic, self.dead_letter_topic], timeout=120)
        decoder = AvroDecoder()
        in_order = sorted(messages[self.topic], key=lambda m: (m.partition, m.offset))
        landed = [decoder.decode("v1_trade", m)["trade_id"] for m in in_order]
        last: dict[tuple[int, bytes | None], int] = {}
        out_of_order = 0
        for m, trade_id in zip(in_order, landed, strict=True):
            key = (m.partition, m.key)
            if int(trade_id) < last.get(key, -1):
                out_of_order += 1
            last[key] = max(int(trade_id), last.get(key, -1))
        dead = [decoder.decode("v1_trade", m)["trade_id"]
                for m in messages[self.dead_letter_topic]
                if m.headers.get("dlq.source") == self.topic.encode()]
        counted = int(self.dropped)
        self.landed_ids = set(landed)
        kept = set(landed) | set(dead)
        return Outcome(fault, len(generated), len(set(landed)), len(set(dead)), counted,
                       len(landed) - len(set(landed)) + len(set(landed) & set(dead)),
                       len(generated - kept), recovery, out_of_order=out_of_order)


def sent_trade_ids(exchange: ExchangeServer, symbols: list[str] | None = None) -> set[str]:
    """Trade ids the exchange sent (of ``symbols`` only, if given: connectors that share
    the exchange subscribe disjoint symbols, so each one's trades are told apart)."""
    import json

    out: set[str] = set()
    for stream, text in list(exchange.sent):
        frame = json.loads(text)
        if stream == "v1" and frame.get("topic") == "trade" and (
                symbols is None or frame.get("symbol") in symbols):
            out.update(item["v"] for item in frame["data"])
    return out


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if cond():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{what} (within {timeout:.0f} s)")


def broker_outage(broker: KafkaBroker, conn: ConnectorProcess,
                  outage: float) -> tuple[float, float]:
    """kill -9 the broker and restart it on the same ports and data so that it answers
    again about ``outage`` s after the kill (its own start-up time counts as outage).
    Returns (the outage as it happened, seconds from the broker answering again to the
    connector's next acknowledgement)."""
    # Three quarters of the last start: a restart takes about as long, rarely much less.
    start_guess = 0.75 * (broker.start_seconds or 5.0)
    killed = time.monotonic()
    broker.kill()
    time.sleep(max(0.0, outage - start_guess))
    before = conn.produced()
    broker.start()
    answered = time.monotonic() - killed
    return answered, wait_for(lambda: conn.produced() > before, 120,
                              "the connector did not deliver again after the broker came back")
