"""The gateway's throughput beside nginx's, on the same upstream route, in one run.

    uv run python benchmarks/gateway/run.py [--duration 15] [--connections 64] [--threads 2]

Starts a tiny FastAPI upstream (uvicorn, uvloop, httptools, one worker) serving
`GET /api/v1/bench/ping`, nginx (Debian's, one worker, keep-alive upstream pool, no access log) in front
of it, and the api-gateway (`python -m api_gateway`, one process) in front of it with token
verification, plan rate limiting and usage events all on; then drives each with wrk over loopback:

  (a) direct   wrk → upstream
  (b) nginx    wrk → nginx → upstream
  (c) gateway  wrk → api-gateway → upstream   (Authorization: Bearer <Ed25519 access token>)

The benchmark signs its own token and has the upstream serve the matching JWKS, which the gateway
fetches once (JWKS_URL). The upstream is registered with the gateway through settings, not the
registry: GATEWAY_EXTRA_ROUTES='{"bench": "http://127.0.0.1:<port>"}'. The enterprise limit is raised
so the bucket is consulted on every request but never refuses one. Rate-limit buckets are in-process
unless `--redis` is given (then REDIS_URL). Usage events go to NATS_URL, or an embedded NATS server.

Prints requests/s and p50/p99 latency for each, and the gateway/nginx throughput ratio. Needs `nginx`
and `wrk` on PATH (Debian: `apt-get install -y nginx wrk`). Every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ISSUER = "aitrading-user-service"
AUDIENCE = "aitrading"
PING = "/api/v1/bench/ping"

NGINX_CONF = """
worker_processes 1;
daemon off;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream bench {{
        server 127.0.0.1:{upstream_port};
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


@dataclass
class Result:
    name: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_answers(url: str, headers: dict[str, str] | None = None, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout_s} s: {last!r}")


@contextmanager
def process(name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None,
            stop_signal: int = signal.SIGTERM) -> Iterator[subprocess.Popen[bytes]]:
    log = (log_dir / f"{name}.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, cwd=ROOT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(stop_signal)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def signing_material(directory: Path) -> tuple[str, Path]:
    """A fresh Ed25519 key: (an enterprise-plan access token, the JWKS file publishing its key)."""
    private = ed25519.Ed25519PrivateKey.generate()
    kid = f"bench-{uuid.uuid4().hex[:8]}"
    jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwks_file = directory / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [{**jwk, "kid": kid, "alg": "EdDSA", "use": "sig"}]}))
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": str(uuid.uuid4()), "iat": now, "nbf": now,
              "exp": now + 3600, "jti": uuid.uuid4().hex, "email": "bench@example.com", "roles": ["user"],
              "plan": "enterprise", "typ": "access", "kind": "user"}
    return jwt.encode(claims, private, algorithm="EdDSA", headers={"kid": kid}), jwks_file


def run_wrk(name: str, url: str, args: argparse.Namespace, headers: dict[str, str],
            duration_s: int | None = None) -> Result:
    argv = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration_s or args.duration}s",
            "--latency"]
    for key, value in headers.items():
        argv += ["-H", f"{key}: {value}"]
    output = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    errors = ""
    if match := re.search(r"Socket errors:.*", output):
        errors = match.group(0)
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += f" non-2xx: {match.group(1)}"
    return Result(name, rps, latency_ms(output, "50%"), latency_ms(output, "99%"), errors.strip())


def latency_ms(output: str, percentile: str) -> float:
    match = re.search(rf"^\s+{re.escape(percentile)}\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def nats_url(stack: ExitStack, directory: Path) -> str:
    if os.environ.get("NATS_URL"):
        return os.environ["NATS_URL"]
    from aitrading.embedded import EmbeddedNats

    server = EmbeddedNats(directory / "nats")
    server.start()
    stack.callback(server.stop)
    return server.url


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=15, help="seconds of load per target and round")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unmeasured load per target")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure the targets in turn this many times; the median round is shown")
    parser.add_argument("--redis", action="store_true",
                        help="rate-limit buckets in REDIS_URL instead of in-process")
    return parser.parse_args()


def start_contenders(stack: ExitStack, work: Path, token_jwks: Path, redis: bool) -> dict[str, str]:
    """Start upstream, nginx and the gateway; the URL of the ping route through each."""
    upstream_port, nginx_port, gateway_port = free_port(), free_port(), free_port()
    upstream_base = f"http://127.0.0.1:{upstream_port}"
    upstream_argv = [sys.executable, str(HERE / "upstream.py"), str(upstream_port)]
    stack.enter_context(process("upstream", upstream_argv, work, env={"BENCH_JWKS_FILE": str(token_jwks)}))
    wait_until_answers(upstream_base + PING)

    config = work / "nginx.conf"
    config.write_text(NGINX_CONF.format(dir=work, port=nginx_port, upstream_port=upstream_port))
    stack.enter_context(process("nginx", ["nginx", "-p", str(work), "-c", str(config)], work,
                                stop_signal=signal.SIGQUIT))
    wait_until_answers(f"http://127.0.0.1:{nginx_port}{PING}")

    gateway_env = {
        "PORT": str(gateway_port),
        "HOST": "127.0.0.1",
        "NATS_URL": nats_url(stack, work),
        "JWKS_URL": upstream_base + "/.well-known/jwks.json",
        "DEPLOYED_SERVICES": "[]",
        "GATEWAY_EXTRA_ROUTES": json.dumps({"bench": upstream_base}),
        "RATE_LIMIT_ENTERPRISE": "1000000000",
        "LOG_LEVEL": "WARNING",
        "HEARTBEAT_INTERVAL_S": "60",
    }
    if not redis:
        gateway_env["REDIS_URL"] = ""
    stack.enter_context(process("gateway", [sys.executable, "-m", "api_gateway"], work, env=gateway_env))
    return {"direct": upstream_base + PING, "nginx": f"http://127.0.0.1:{nginx_port}{PING}",
            "gateway": f"http://127.0.0.1:{gateway_port}{PING}"}


def main() -> int:
    args = parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (Debian: apt-get install -y nginx wrk)", file=sys.stderr)
            return 2

    rounds: list[dict[str, Result]] = []
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        token, jwks_file = signing_material(work)
        urls = start_contenders(stack, work, jwks_file, args.redis)
        auth = {"Authorization": f"Bearer {token}"}
        wait_until_answers(urls["gateway"], headers=auth)
        buckets = "in Redis" if args.redis else "in-process"
        print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s on loopback, "
              f"{os.cpu_count()} cores, {args.rounds} round(s); rate-limit buckets {buckets}", flush=True)
        for name, url in urls.items():
            run_wrk(name, url, args, auth, duration_s=args.warmup)
        for number in range(1, args.rounds + 1):
            rounds.append({name: run_wrk(name, url, args, auth) for name, url in urls.items()})
            figures = ", ".join(f"{name} {r.requests_per_s:.0f}/s" for name, r in rounds[-1].items())
            print(f"  round {number}: {figures}", flush=True)
        time.sleep(2)  # the last usage batch goes out
        usage = usage_counts(urls["gateway"].replace(PING, "/metrics"))

    ratios = sorted(r["gateway"].requests_per_s / r["nginx"].requests_per_s for r in rounds)
    median_ratio = ratios[len(ratios) // 2]
    shown = next(r for r in rounds if r["gateway"].requests_per_s / r["nginx"].requests_per_s == median_ratio)
    print()
    print(f"{'target':<10}{'requests/s':>12}{'p50 ms':>10}{'p99 ms':>10}  errors")
    for result in shown.values():
        print(f"{result.name:<10}{result.requests_per_s:>12.0f}{result.p50_ms:>10.2f}{result.p99_ms:>10.2f}"
              f"  {result.errors or '-'}")
    print(f"\ngateway / nginx throughput: {median_ratio:.2f} (aim: at least 0.70)")
    if len(ratios) > 1:
        print("ratio per round: " + ", ".join(f"{ratio:.2f}" for ratio in ratios))
    print(f"usage events (one per gateway request, all rounds and warm-up): {usage}")
    return 0


def usage_counts(metrics_url: str) -> str:
    """The gateway's usage-event counters, to show metering kept up with the load."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    published, dropped = 0.0, 0.0
    for line in text.splitlines():
        if line.startswith("gateway_usage_events_published_total"):
            published += float(line.split()[-1])
        elif line.startswith("gateway_usage_events_dropped_total"):
            dropped += float(line.split()[-1])
    return f"{published:.0f} published to NATS, {dropped:.0f} dropped"


if __name__ == "__main__":
    sys.exit(main())
