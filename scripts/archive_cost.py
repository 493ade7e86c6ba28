"""What the raw frame archive costs: CPU per frame and bytes per frame after compression.

Runs the archive's own code (``connector.archive.writer.Archive.write``: record,
key, Avro encoding) on v5 spot frames shaped like Bybit's (compact JSON, an
orderbook.50 delta with a few changed levels, a tickers push, a publicTrade
push of 1-3 trades, random prices), with a sink that only counts, so the
figure is what the archive adds before the producer; each archive record is
then one more ``send`` (see the Performance section for its cost per client).

Bytes: the archive records are cut into producer batches of ``--batch``
records (one partition; with ``linger_ms`` 10, 15 records is ~1,500 frames/s)
and each batch is compressed with lz4 (the producer default, Kafka's lz4
frame format) and gzip. Per frame: value + key + header bytes before
compression, the compressed batch divided by its records after.

    .venv/bin/python scripts/archive_cost.py --frames 30000 --batch 15,200
"""

from __future__ import annotations

import argparse
import json
import random
import time
import zlib
from collections.abc import Sequence
from typing import Any

import lz4.frame

from connector.archive.writer import Archive
from connector.bybit.events import Stamp
from connector.bybit.v5 import frames as v5_frames
from connector.config.load import loads
from connector.service import serializer_factory

SYMBOLS = [f"SYM{i}USDT" for i in range(18)] + ["BTCUSDT", "ETHUSDT"]
CONFIG = """
archive: {enabled: true}
subscriptions:
  - {stream: v5, topic: orderbook, depth: 50, symbols: [%s]}
  - {stream: v5, topic: tickers, symbols: [%s]}
  - {stream: v5, topic: publicTrade, symbols: [%s]}
""" % ((", ".join(SYMBOLS),) * 3)


class CountingSink:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes, bytes]] = []  # value, key, headers

    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: list[tuple[str, bytes]], received_mono_ns: int,
             ref: object = None) -> bool:
        self.records.append((value, key or b"",
                             b"".join(k.encode() + v for k, v in headers)))
        return True

    def dead_letter(self, value: bytes, reason: str, source: str, detail: str,
                    extra_headers: Sequence[tuple[str, bytes]] = ()) -> None:
        raise AssertionError(detail)


def _px(rng: random.Random) -> str:
    return f"{rng.uniform(100, 120_000):.2f}"


def _qty(rng: random.Random) -> str:
    return f"{rng.uniform(0, 5):.6f}"


def frame(n: int, rng: random.Random) -> bytes:
    symbol = SYMBOLS[n % len(SYMBOLS)]
    ts = 1_760_000_000_000 + n * 7
    kind = n % 10
    body: dict[str, Any]
    if kind < 6:  # orderbook.50 pushes most often (20 ms)
        body = {"topic": f"orderbook.50.{symbol}", "ts": ts, "type": "delta",
                "data": {"s": symbol,
                         "b": [[_px(rng), _qty(rng)] for _ in range(rng.randint(1, 6))],
                         "a": [[_px(rng), _qty(rng)] for _ in range(rng.randint(1, 6))],
                         "u": 28_750_000 + n, "seq": 81_234_000_000 + n}, "cts": ts - 3}
    elif kind < 9:  # tickers (50 ms)
        body = {"topic": f"tickers.{symbol}", "ts": ts, "type": "snapshot", "cs": 81_234 + n,
                "data": {"symbol": symbol, "lastPrice": _px(rng), "highPrice24h": _px(rng),
                         "lowPrice24h": _px(rng), "prevPrice24h": _px(rng),
                         "volume24h": _qty(rng), "turnover24h": _px(rng),
                         "price24hPcnt": "0.0123", "usdIndexPrice": _px(rng)}}
    else:
        body = {"topic": f"publicTrade.{symbol}", "ts": ts, "type": "snapshot",
                "data": [{"T": ts, "s": symbol, "S": rng.choice(["Buy", "Sell"]),
                          "v": _qty(rng), "p": _px(rng), "i": f"2290000000{n:09d}{i}",
                          "BT": False, "RPI": False, "seq": 81_234_000_000 + n}
                         for i in range(rng.randint(1, 3))]}
    return json.dumps(body, separators=(",", ":")).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", default="15,200", help="records per producer batch")
    args = parser.parse_args()
    config = loads(CONFIG, env={})
    rng = random.Random(7)
    raws = [frame(n, rng) for n in range(args.frames)]
    events = [v5_frames.decode(raw, "v5", Stamp(1_760_000_000_000 + n, n))
              for n, raw in enumerate(raws)]
    best = float("inf")
    sink = CountingSink()
    for _ in range(args.rounds):
        sink = CountingSink()
        archive = Archive(config, serializer_factory(config), sink)
        started = time.process_time()
        for event in events:
            archive.write(event)
        best = min(best, time.process_time() - started)
    assert len(sink.records) == len(events)
    frame_bytes = sum(map(len, raws)) / len(raws)
    record_bytes = sum(len(v) + len(k) + len(h) for v, k, h in sink.records) / len(sink.records)
    print(f"frames: {len(raws)}, mean frame {frame_bytes:.0f} bytes")
    print(f"CPU: {best / len(events) * 1e6:.1f} µs per frame (archive record + Avro, "
          f"best of {args.rounds})")
    print(f"archive record before compression: {record_bytes:.0f} bytes per frame "
          "(value + key + headers)")
    for size in (int(b) for b in args.batch.split(",")):
        values = [k + h + v for v, k, h in sink.records]
        lz4_total = gzip_total = 0
        for i in range(0, len(values), size):
            batch = b"".join(values[i:i + size])
            lz4_total += len(lz4.frame.compress(batch))
            gzip_total += len(zlib.compress(batch, 6))
        per = len(values)
        print(f"batches of {size}: lz4 {lz4_total / per:.0f} bytes per frame, "
              f"gzip {gzip_total / per:.0f} (key + headers + value; Kafka's own framing adds ~15)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
