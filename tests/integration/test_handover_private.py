"""A private shard handed over (SIGTERM of its owner) loses and repeats nothing.

Two replicas share a v5 private stream (orders, executions, wallet) through the
consumer group; the local exchange's account steps every 50 ms and records
every frame it sends. An independent authenticated client listens throughout
(the account steps while anyone listens: without it a gap between two owners
would produce no events to lose). The owner of the private shard is stopped with SIGTERM:
it streams on for the overlap while the other replica authenticates and
subscribes, holding what it receives until it has read the Kafka tail. Kafka
must then hold every execution (by exec id) and every order update (by order
id, updated time, status and reject reason) the exchange sent, each once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import websocket

from connector.bybit.v5.protocol import auth_expires, build_auth
from connector.dev.consume import AvroDecoder, read_all
from connector.dev.kafka_broker import KafkaBroker
from connector.exchange import ExchangeServer
from connector.scaleout import coordinator, shards
from tests.integration.test_scaleout import Replica, start_replica, wait_for

pytestmark = pytest.mark.integration
SHARDS = 4
PRIVATE_SHARD = shards.shard_of("v5-private", "", "", SHARDS)


@pytest.fixture
def exchange() -> Iterator[ExchangeServer]:
    with ExchangeServer(port=0, private_interval=0.05, record_frames=200_000) as server:
        yield server


def listen(exchange: ExchangeServer) -> websocket.WebSocket:
    """An authenticated client on the private topics, read and discarded until
    closed (the exchange records what it sends)."""
    ws = websocket.create_connection(exchange.url + "/v5/private", timeout=5)
    ws.send(build_auth("demo-key", "demo-secret", auth_expires(), "auth"))
    assert json.loads(ws.recv()).get("success")
    ws.send(json.dumps({"op": "subscribe", "args": ["order.spot", "execution.spot"]}))

    def drain() -> None:
        try:
            while ws.recv():
                pass
        except (websocket.WebSocketException, OSError):
            return

    threading.Thread(target=drain, daemon=True).start()
    return ws


def owner(replicas: list[Replica]) -> Replica | None:
    found = [r for r in replicas if PRIVATE_SHARD in r.shards()
             and (r.status() or {}).get("ready")]
    return found[0] if len(found) == 1 else None


def sent_private(exchange: ExchangeServer, from_ms: int,
                 until_ms: int) -> tuple[set[str], set[str]]:
    """Exec ids and order identities the exchange sent on any connection, stamped
    within [from_ms, until_ms]."""
    execs: set[str] = set()
    orders: set[str] = set()
    for _conn, stream, text in list(exchange.v5.sent):
        if stream != "v5-private":
            continue
        frame = json.loads(text)
        topic = str(frame.get("topic", ""))
        for row in frame.get("data", []):
            if topic.startswith("execution") and not topic.startswith("execution.fast"):
                if from_ms <= int(row["execTime"]) <= until_ms:
                    execs.add(row["execId"])
            elif topic.startswith("order") and from_ms <= int(row["updatedTime"]) <= until_ms:
                orders.add(f"{row['orderId']}|{row['updatedTime']}|{row['orderStatus']}|"
                           f"{row['rejectReason']}")
    return execs, orders


def test_private_shard_handover_loses_and_repeats_nothing(
        kafka_broker: KafkaBroker, exchange: ExchangeServer, tmp_path: Path) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    prefix = f"priv.{uuid.uuid4().hex[:6]}"
    group = f"priv-{uuid.uuid4().hex[:6]}"

    def config(port: int) -> Path:
        path = tmp_path / f"config-{port}.yaml"
        path.write_text(f"""
bybit:
  urls: {{v5: "{exchange.url}/v5/public/spot", v5-private: "{exchange.url}/v5/private"}}
  credentials: {{api_key: demo-key, api_secret: demo-secret}}
kafka:
  bootstrap_servers: ["{bootstrap}"]
  topic_template: "{prefix}.{{stream}}.{{topic}}"
  dead_letter_topic: {prefix}.dead-letter
metrics: {{host: 127.0.0.1, port: {port}}}
coordination: {{group: {group}, shards: {SHARDS}}}
subscriptions:
  - {{stream: v5, topic: publicTrade, symbols: [P00USDT, P01USDT, P02USDT, P03USDT]}}
  - {{stream: v5-private, topic: order.spot}}
  - {{stream: v5-private, topic: execution.spot}}
  - {{stream: v5-private, topic: wallet}}
""")
        return path

    truth = listen(exchange)
    replicas = [start_replica(tmp_path, f"p{i}", config) for i in range(2)]
    try:
        wait_for("the private shard streaming", lambda: owner(replicas) is not None, 90,
                 replicas)
        wait_for("both replicas ready", lambda: all((r.status() or {}).get("ready")
                                                    for r in replicas), 60, replicas)
        time.sleep(2)
        from_ms = int(time.time() * 1000)
        first = owner(replicas)
        assert first is not None
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(30) == 0
        rest = [r for r in replicas if r is not first]
        wait_for("the other replica to take the private shard over",
                 lambda: owner(rest) is rest[0], 60, replicas)
        # Past the new owner's seed, which releases what it held.
        time.sleep(coordinator.SEED_AFTER_SECONDS + 5)
        until_ms = int(time.time() * 1000) - 2000
    finally:
        truth.close()
        for r in replicas:
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)
        for r in replicas:
            try:
                r.proc.wait(60)
            except subprocess.TimeoutExpired:
                r.proc.kill()

    sent_execs, sent_orders = sent_private(exchange, from_ms, until_ms)
    decoder = AvroDecoder()
    exec_topic, order_topic = (f"{prefix}.v5-private.execution.spot",
                               f"{prefix}.v5-private.order.spot")
    got = read_all(bootstrap, [exec_topic, order_topic], timeout=60)
    execs = Counter(decoder.decode("v5_execution", m)["exec_id"] for m in got[exec_topic])
    orders: Counter[str] = Counter()
    for m in got[order_topic]:
        rec = decoder.decode("v5_order", m)
        updated = rec["updated_time"]
        millis = updated if isinstance(updated, int) else int(updated.timestamp() * 1000)
        orders[f"{rec['order_id']}|{millis}|{rec['order_status']}|{rec['reject_reason']}"] += 1
    assert len(sent_execs) > 50 and len(sent_orders) > 50, (len(sent_execs), len(sent_orders))
    lost_execs, lost_orders = sent_execs - set(execs), sent_orders - set(orders)
    twice = [e for e, n in execs.items() if n > 1] + [o for o, n in orders.items() if n > 1]
    print(f"\nprivate hand-over: {len(sent_execs)} executions, {len(sent_orders)} order "
          f"updates sent; lost {len(lost_execs)} + {len(lost_orders)}, twice {len(twice)}")
    assert not lost_execs and not lost_orders, (sorted(lost_execs)[:5], sorted(lost_orders)[:5])
    assert not twice, twice[:5]
