"""Which HTTP client should the gateway forward with? httpx vs aiohttp vs the gateway's own.

    uv run --with aiohttp python benchmarks/gateway/clients.py [--requests 20000] [--concurrency 64]

Starts the benchmark upstream (benchmarks/gateway/upstream.py: FastAPI on uvicorn, uvloop, httptools,
one worker), then in one uvloop process sends the same GET with each client over a keep-alive pool,
`--concurrency` requests in flight, and prints requests/s and the client's CPU time per request. The
upstream caps requests/s; the CPU per request is what a proxy pays for its client on every call.
aiohttp is not a dependency of the platform, hence `--with aiohttp` (the script skips it otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import uvloop
from api_gateway.settings import Settings
from api_gateway.upstream_http import Origin, UpstreamHttp
from run import PING, free_port, wait_until_answers  # type: ignore[import-not-found]

HERE = Path(__file__).resolve().parent


async def measure(name: str, one: Callable[[], Awaitable[None]], requests: int,
                  concurrency: int) -> tuple[str, float, float]:
    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    await asyncio.gather(*(worker(20) for _ in range(concurrency)))  # warm the pool
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    done = requests // concurrency * concurrency
    return name, done / wall, cpu / done * 1e6


async def compare(url: str, requests: int, concurrency: int) -> list[tuple[str, float, float]]:
    results = []
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency,
                                                     max_keepalive_connections=concurrency)) as client:
        async def with_httpx() -> None:
            response = await client.get(url)
            await response.aread()

        results.append(await measure("httpx", with_httpx, requests, concurrency))
    try:
        import aiohttp
    except ImportError:
        print("aiohttp is not installed: run with `uv run --with aiohttp ...` to include it")
    else:
        connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=4)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            async def with_aiohttp() -> None:
                async with session.get(url) as response:
                    await response.read()

            results.append(await measure("aiohttp", with_aiohttp, requests, concurrency))
    http = UpstreamHttp(Settings())
    origin = Origin.parse(url.removesuffix(PING))

    async def with_gateway_client() -> None:
        response = await http.request(origin, b"GET", PING.encode(), [])
        await response.read()

    results.append(await measure("gateway client", with_gateway_client, requests, concurrency))
    await http.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    port = free_port()
    upstream = subprocess.Popen([sys.executable, str(HERE / "upstream.py"), str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}{PING}"
        wait_until_answers(url)
        results = uvloop.run(compare(url, args.requests, args.concurrency))
    finally:
        upstream.terminate()
        upstream.wait(timeout=15)
    print(f"{'client':<16}{'requests/s':>12}{'client CPU µs/request':>24}")
    for name, rate, cpu_us in results:
        print(f"{name:<16}{rate:>12.0f}{cpu_us:>24.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
