"""Ingest throughput: ticks/s from a WebSocket client, through data-bridge, to md.ticks on NATS.

Starts data-bridge as its own process (as in production: uvloop, httptools) on real PostgreSQL and
NATS, pushes `--ticks` ticks over one or more `/ws/ingest` connections as fast as it can (messages
encoded beforehand, `--batch` ticks each), and stops the clock when a NATS subscriber has counted
every tick in `md.ticks` events (JetStream has stored them by then: the service publishes with
acknowledgements). Prints the figures; asserts nothing.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test NATS_URL=nats://127.0.0.1:4222 \\
        .venv/bin/python benchmarks/market_data/ingest_to_nats.py --ticks 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import nats
import orjson
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from jwt.algorithms import OKPAlgorithm
from nats.aio.msg import Msg
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.asyncio.client import connect

from aitrading.db import to_async_url
from aitrading.embedded import free_port
from aitrading.streams import subject_token
from aitrading.testing import TokenIssuer, serve_app

T0 = 1_700_000_000_000


def messages(symbol: str, total: int, batch: int) -> list[bytes]:
    """Realistic rows: a price wandering in cents, sizes, a two-sided quote; one tick per millisecond."""
    out = []
    for first in range(0, total, batch):
        rows = []
        for i in range(first, min(first + batch, total)):
            cents = 10_000 + (i * 7919) % 200
            rows.append([T0 + i, f"{cents // 100}.{cents % 100:02d}", f"0.{1 + i % 9}",
                         f"{(cents - 1) // 100}.{(cents - 1) % 100:02d}",
                         f"{(cents + 1) // 100}.{(cents + 1) % 100:02d}"])
        out.append(orjson.dumps({"symbol": symbol, "venue": "bench", "ticks": rows}))
    return out


async def run(args: argparse.Namespace) -> None:
    key, kid = Ed25519PrivateKey.generate(), f"bench-{uuid.uuid4().hex[:8]}"
    jwk = {**OKPAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": "EdDSA", "use": "sig"}
    jwks = FastAPI()

    @jwks.get("/.well-known/jwks.json")
    async def keys() -> dict[str, Any]:
        return {"keys": [jwk]}

    schema = f"data_bridge_bench_{uuid.uuid4().hex[:8]}"
    port = free_port()
    async with serve_app(jwks) as jwks_base:
        issuer = TokenIssuer(jwks_base, kid, key)
        env = {**os.environ, "PORT": str(port), "JWKS_URL": issuer.jwks_url,
               "DATABASE_URL": args.database_url, "NATS_URL": args.nats_url, "DATABASE_SCHEMA": schema,
               "DEFAULT_FEEDS": "[]", "LOG_LEVEL": "WARNING", "HEARTBEAT_INTERVAL_S": "60"}
        env.pop("REDIS_URL", None)
        server = subprocess.Popen([sys.executable, "-m", "data_bridge"], env=env)  # noqa: ASYNC220
        try:
            await measure(args, port, issuer)
        finally:
            server.terminate()
            server.wait(timeout=30)
            engine = create_async_engine(to_async_url(args.database_url))
            async with engine.begin() as conn:
                await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            await engine.dispose()


async def measure(args: argparse.Namespace, port: int, issuer: TokenIssuer) -> None:
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base) as http:
        for _ in range(300):
            try:
                if (await http.get("/ready")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        else:
            raise SystemExit("data-bridge did not become ready")

    per_connection = args.ticks // args.connections
    symbols = [f"BENCH{uuid.uuid4().hex[:6].upper()}/USD" for _ in range(args.connections)]
    payloads = [messages(symbol, per_connection, args.batch) for symbol in symbols]
    total = per_connection * args.connections
    counted = 0
    done = asyncio.Event()

    async def count(msg: Msg) -> None:
        nonlocal counted
        counted += len(orjson.loads(msg.data)["data"]["ticks"])
        if counted >= total:
            done.set()

    nc = await nats.connect(args.nats_url)
    for symbol in symbols:
        await nc.subscribe(f"md.tick.{subject_token(symbol)}", cb=count)
    await nc.flush()
    headers = {"Authorization": f"Bearer {issuer.service_token('benchmark')}"}

    async def push(batch: list[bytes]) -> None:
        async with connect(f"ws://127.0.0.1:{port}/ws/ingest", additional_headers=headers,
                           compression=None, max_size=None) as ws:
            for message in batch:
                await ws.send(message)
            await done.wait()

    started = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(push(batch) for batch in payloads)), args.timeout)
    except TimeoutError:
        async with httpx.AsyncClient(base_url=base) as http:
            metrics = [line for line in (await http.get("/metrics")).text.splitlines()
                       if line.startswith("data_bridge_")]
        raise SystemExit(f"only {counted:,} of {total:,} ticks arrived in {args.timeout} s:\n"
                         + "\n".join(metrics)) from None
    elapsed = time.perf_counter() - started
    await nc.close()
    size = sum(len(m) for batch in payloads for m in batch)
    print(f"ingest: {total:,} ticks in {elapsed:.2f} s over {args.connections} connection(s), "
          f"{args.batch} ticks/message ({size / total:.0f} bytes/tick on the socket)")
    print(f"ingest: {total / elapsed:,.0f} ticks/s from WebSocket client to md.ticks on NATS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=1000, help="ticks per WebSocket message")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL",
                                                                 "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--nats-url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
