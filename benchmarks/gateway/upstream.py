"""The benchmark's upstream: a tiny FastAPI app, the route every contender proxies to.

Serves `GET /api/v1/bench/ping` (small JSON) and, when `BENCH_JWKS_FILE` names a file, that file as
`GET /.well-known/jwks.json` so the gateway under test can fetch the benchmark's signing key from it.
Run: `python benchmarks/gateway/upstream.py PORT` (uvicorn, uvloop, httptools, one worker).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response

app = FastAPI(title="bench-upstream")
_JWKS_FILE = os.environ.get("BENCH_JWKS_FILE")
_JWKS = Path(_JWKS_FILE).read_bytes() if _JWKS_FILE else None


@app.get("/api/v1/bench/ping")
async def ping() -> dict[str, object]:
    return {"pong": True, "service": "bench-upstream"}


@app.get("/.well-known/jwks.json")
async def jwks() -> Response:
    if _JWKS is None:
        return Response(status_code=404)
    return Response(_JWKS, media_type="application/json")


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok", "service": "bench-upstream"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
                log_level="warning", access_log=False)
