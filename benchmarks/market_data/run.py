"""Market data end to end, each figure beside its anchor measured in the same run on the same data.

    uv run python benchmarks/market_data/run.py [--ticks 1000000] [--batch 1000] [--requests 200]

Starts the real fleet (user-service, database-service, data-bridge, feature-engineering,
pattern-validator, api-gateway) as processes with the launcher, on DATABASE_URL/NATS_URL when set and
embedded PostgreSQL/NATS otherwise, then measures:

1. ticks/s end to end: a WebSocket client pushes `--ticks` ticks (`--batch` per message) into
   data-bridge's `/ws/ingest`; data-bridge checks, aggregates and publishes them to JetStream in
   batches; database-service's durable consumer stores them in the warehouse (chDB). The clock stops
   when database-service's `warehouse_rows_inserted_total{table="ticks"}` has counted every tick.
   Anchor: the raw nats-py publish rate on the same NATS server, one message per tick (core publish,
   no acknowledgement, nothing stored), and the same ticks as 1,000-tick messages.
2. Feature latency: `--requests` GETs of 10 indicators over 500 SPX daily bars, straight to
   feature-engineering and through the gateway, p50/p99. Anchor: TA-Lib called in this process on the
   same bars.
3. Pattern detection per closed bar: pattern-validator's live detection on a 500-bar window for each
   of the last 2,000 SPX bars, p50/p99. Anchor: TA-Lib's 61 candlestick functions on the same windows.

Prints the figures; asserts nothing. Everything it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import nats
import numpy as np
import orjson
import talib
from websockets.asyncio.client import connect

from aitrading.fleet.launcher import Fleet
from aitrading.market.bars import OhlcvFrame

SERVICES = ["user-service", "database-service", "data-bridge", "feature-engineering", "pattern-validator",
            "api-gateway"]
PORT_OFFSET = 300
ADMIN_EMAIL, ADMIN_PASSWORD = "bench-admin@example.com", "bench-admin-password-1"
INDICATORS = ["sma_20", "ema_50", "rsi_14", "macd_12_26_9", "bbands_20_2_upper", "atr_14", "adx_14",
              "cci_20", "stoch_14_3_3_k", "obv"]
T0 = 1_700_000_000_000
INSERTED = re.compile(r'^warehouse_rows_inserted_total\{table="ticks"\} (\S+)$', re.M)


def p(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000, q))


def line(label: str, values: list[float]) -> str:
    return f"{label:<48} p50 {p(values, 50):7.2f} ms   p99 {p(values, 99):7.2f} ms"


def tick_messages(symbol: str, total: int, batch: int) -> list[bytes]:
    """A price wandering in cents with a two-sided quote, one tick per millisecond."""
    out = []
    for first in range(0, total, batch):
        rows = []
        for i in range(first, min(first + batch, total)):
            cents = 10_000 + (i * 7919) % 200
            rows.append([T0 + i, f"{cents / 100:.2f}", f"0.{1 + i % 9}", f"{(cents - 1) / 100:.2f}",
                         f"{(cents + 1) / 100:.2f}"])
        out.append(orjson.dumps({"symbol": symbol, "venue": "bench", "ticks": rows}))
    return out


async def raw_nats(url: str, total: int, batch: int) -> tuple[float, float]:
    """nats-py publish rate on the same server: one message per tick, then `batch` ticks per message."""
    nc = await nats.connect(url)
    one = orjson.dumps([T0, "100.01", "0.5", "100.00", "100.02"])
    subject = f"bench.raw.{uuid.uuid4().hex[:8]}"
    began = time.perf_counter()
    for _ in range(total):
        await nc.publish(subject, one)
    await nc.flush(timeout=60)
    single = total / (time.perf_counter() - began)
    many = tick_messages("RAW", batch, batch)[0]
    began = time.perf_counter()
    for _ in range(total // batch):
        await nc.publish(subject, many)
    await nc.flush(timeout=60)
    batched = (total // batch) * batch / (time.perf_counter() - began)
    await nc.close()
    return single, batched


async def stored_ticks(http: httpx.AsyncClient, url: str) -> float:
    found = INSERTED.search((await http.get(url + "/metrics")).text)
    return float(found.group(1)) if found else 0.0


async def ingest(fleet: Fleet, token: str, total: int, batch: int, timeout_s: float) -> tuple[float, float]:
    """(seconds until the last tick was sent, seconds until the warehouse had stored every tick)."""
    symbol = f"BENCH{uuid.uuid4().hex[:6].upper()}/USD"
    payload = tick_messages(symbol, total, batch)
    database = fleet.url("database-service")
    ws_url = fleet.url("data-bridge").replace("http://", "ws://") + "/ws/ingest"
    async with httpx.AsyncClient(timeout=10) as http:
        before = await stored_ticks(http, database)
        began = time.perf_counter()
        async with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"},
                           compression=None, max_size=None) as ws:
            for message in payload:
                await ws.send(message)
            sent = time.perf_counter() - began
            deadline = began + timeout_s
            while await stored_ticks(http, database) - before < total:
                if time.perf_counter() > deadline:
                    got = await stored_ticks(http, database) - before
                    raise SystemExit(f"only {got:,.0f} of {total:,} ticks were stored in {timeout_s:.0f} s")
                await asyncio.sleep(0.05)
            stored = time.perf_counter() - began
    return sent, stored


async def features(fleet: Fleet, token: str, requests: int) -> None:
    params = {"symbol": "SPX", "timeframe": "1d", "indicators": ",".join(INDICATORS), "limit": 500}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=30, headers=headers) as http:
        bars = (await http.get(fleet.url("database-service") + "/api/v1/market/ohlcv",
                               params={"symbol": "SPX", "timeframe": "1d", "limit": 1500})).json()["bars"]
        took = []
        for _ in range(requests):
            began = time.perf_counter()
            (await http.get(fleet.url("database-service") + "/api/v1/market/ohlcv",
                            params={"symbol": "SPX", "timeframe": "1d", "limit": 1500})).raise_for_status()
            took.append(time.perf_counter() - began)
        print(line("  (of which: reading 1,500 bars from database-service)", took))
        for label, base in (("feature-engineering directly", fleet.url("feature-engineering")),
                            ("through the gateway", fleet.url("api-gateway"))):
            for _ in range(5):  # warm connections and caches
                (await http.get(base + "/api/v1/features", params=params)).raise_for_status()
            took = []
            for _ in range(requests):
                began = time.perf_counter()
                response = await http.get(base + "/api/v1/features", params=params)
                took.append(time.perf_counter() - began)
                response.raise_for_status()
            print(line(f"  {label} (HTTP, 500 bars x 10)", took))
    h, lo, c, v = (np.array([float(b[k]) for b in bars]) for k in ("high", "low", "close", "volume"))
    took = []
    for _ in range(requests):
        began = time.perf_counter()
        talib.SMA(c, 20), talib.EMA(c, 50), talib.RSI(c, 14), talib.MACD(c, 12, 26, 9)
        talib.BBANDS(c, 20, 2, 2), talib.ATR(h, lo, c, 14), talib.ADX(h, lo, c, 14)
        talib.CCI(h, lo, c, 20), talib.STOCH(h, lo, c, 14, 3, 0, 3, 0), talib.OBV(c, v)
        took.append(time.perf_counter() - began)
    print(line(f"  anchor: TA-Lib in-process ({len(c)} bars x 10)", took))


def patterns(bars: int, window: int = 500) -> None:
    from pattern_validator.scan import detect_last

    frame = _spx_frame()
    ours, anchor = [], []
    cdl = [getattr(talib, name) for name in talib.get_function_groups()["Pattern Recognition"]]
    for end in range(len(frame) - bars, len(frame)):
        w: OhlcvFrame = frame.slice(end - window + 1, end + 1)
        began = time.perf_counter()
        detect_last(w)
        ours.append(time.perf_counter() - began)
        began = time.perf_counter()
        for fn in cdl:
            fn(w.open, w.high, w.low, w.close)
        anchor.append(time.perf_counter() - began)
    print(line(f"  pattern-validator, {window}-bar window", ours))
    print(line(f"  anchor: TA-Lib's {len(cdl)} candlestick functions", anchor))


def _spx_frame() -> OhlcvFrame:
    from arch.data import sp500

    data = sp500.load()
    times = (data.index.astype("datetime64[ns]").asi8 // 1_000_000).astype(np.int64)
    columns = ("Open", "High", "Low", "Close", "Volume")
    return OhlcvFrame(times, *(data[c].to_numpy(np.float64) for c in columns))


async def run(args: argparse.Namespace) -> None:
    env = {"ADMIN_EMAIL": ADMIN_EMAIL, "ADMIN_PASSWORD": ADMIN_PASSWORD, "LOG_LEVEL": "WARNING",
           "DEFAULT_FEEDS": "[]", "HEARTBEAT_INTERVAL_S": "30",
           # The benchmark measures latency, not the plan limit (the admin is on the free plan).
           "RATE_LIMIT_FREE": "1000000"}
    for var in ("DATABASE_URL", "NATS_URL"):
        if os.environ.get(var):
            env[var] = os.environ[var]
    with tempfile.TemporaryDirectory(prefix="bench-md-") as data_dir:
        fleet = Fleet(Path(data_dir), services=SERVICES, env=env, port_offset=PORT_OFFSET)
        with fleet:
            async with httpx.AsyncClient(timeout=10) as http:
                login = await http.post(fleet.url("api-gateway") + "/api/v1/auth/login",
                                        json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
                login.raise_for_status()
                token = login.json()["access_token"]
            print(f"machine: {os.cpu_count()} cores; NATS {fleet.nats_url}")
            print(f"\n1. ticks end to end ({args.ticks:,} ticks, {args.batch} per WebSocket message, "
                  f"{args.rounds} rounds, median)")
            rounds = []
            for _ in range(args.rounds):
                single, batched = await raw_nats(fleet.nats_url, args.ticks, args.batch)
                sent, stored = await ingest(fleet, token, args.ticks, args.batch, args.timeout)
                rounds.append((args.ticks / sent, args.ticks / stored, single, batched))
                print("  round: ingest {:,.0f}  end to end {:,.0f}  raw nats-py {:,.0f} ticks/s".format(
                    *rounds[-1][:3]))
            accepted, end_to_end, single, batched = (statistics.median(r[i] for r in rounds)
                                                     for i in range(4))
            print(f"  data-bridge ingest (WebSocket in, accepted)      {accepted:>12,.0f} ticks/s")
            print(f"  end to end (WebSocket -> NATS -> warehouse)      {end_to_end:>12,.0f} ticks/s")
            print(f"  anchor: raw nats-py publish, 1 tick/message      {single:>12,.0f} ticks/s")
            print(f"  anchor: raw nats-py publish, {args.batch} ticks/message {batched:>12,.0f} ticks/s")
            print(f"  end to end / raw nats-py (1 tick/message)        {end_to_end / single:>12.2f}")
            print("\n2. feature latency")
            await features(fleet, token, args.requests)
    print(f"\n3. pattern detection per closed bar (last {args.pattern_bars:,} SPX daily bars)")
    patterns(args.pattern_bars)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000, help="ticks per WebSocket message")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the tick measurement")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--pattern-bars", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=300.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
