"""The proxy path: a raw ASGI app in front of the gateway's FastAPI app.

`/api/v1/...`, `/.well-known/jwks.json` and `/services/<name>/health` are answered here without
FastAPI routing or middleware: resolve the owner (`routes`), identify the caller (`authentication`),
take a token from their bucket (`plan_limits`), forward over the pooled client (`upstream_http`)
streaming both bodies, and queue a usage event (`usage`). WebSockets under `/ws/` go to
`websocket_relay`. Everything else (`/health`, `/ready`, `/metrics`, `/info`, `/docs`,
`/openapi.json`) falls through to the FastAPI app.

Failures are problem+json: unknown route 404, missing or bad credentials 401, over the limit 429,
upstream unreachable or its circuit open 503, no answer within `upstream_timeout_s` 504, upstream
broke the connection or answered garbage 502. A circuit breaker per upstream refuses calls to a dead
service at once and lets one trial through after `breaker_reset_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from urllib.parse import quote

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aitrading.errors import (
    DomainError,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    UpstreamTimeout,
    problem,
)
from aitrading.request_context import request_id_var
from api_gateway.authentication import Caller
from api_gateway.forwarding import IncomingRequest, new_request_id, read_request_headers, response_headers
from api_gateway.gateway import Gateway
from api_gateway.plan_limits import rate_limit_headers
from api_gateway.routes import API_ROOT, IDENTITY_SERVICE, JWKS_PATH, Upstream
from api_gateway.upstream_http import ConnectFailed, ReadTimeout, UpstreamError, UpstreamResponse
from api_gateway.usage import ANONYMOUS_PLAN
from api_gateway.websocket_relay import WebSocketRelay

_log = structlog.get_logger("api_gateway.proxy")

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_METHODS = {m: m.encode() for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")}
_RETRY_AFTER_DOWN = "1"
_SERVICES_ROOT = "/services/"
_HEALTH_SUFFIX = "/health"
_HEALTH_TARGET = b"/health"


class BadGateway(DomainError):
    status, title, type_slug = 502, "Bad gateway", "bad-gateway"


class _ClientGone(Exception):
    """The client disconnected before its request body arrived."""


class GatewayProxy:
    """ASGI app answering the proxy paths itself and passing everything else to `app`."""

    def __init__(self, app: ASGIApp, *, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway
        self.routes = gateway.routes
        self.relay = WebSocketRelay(gateway)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith(API_ROOT):
                resolved = self.routes.resolve(path)
                if resolved is None:
                    await _not_found(scope, send, f"no service serves {path}")
                    return
                route, rest = resolved
                await self._forward(scope, receive, send, route.upstream, route.prefix, route.is_public(rest))
                return
            if path == JWKS_PATH:
                identity = self.routes.upstreams.get(IDENTITY_SERVICE)
                if identity is not None:
                    await self._forward(scope, receive, send, identity, "jwks", True)
                    return
            elif path.startswith(_SERVICES_ROOT) and path.endswith(_HEALTH_SUFFIX):
                name = path[len(_SERVICES_ROOT):-len(_HEALTH_SUFFIX)]
                upstream = self.routes.upstreams.get(name)
                if upstream is None:
                    await _not_found(scope, send, f"no service named {name!r} is routed here")
                    return
                await self._forward(scope, receive, send, upstream, "health", True, target=_HEALTH_TARGET)
                return
        elif kind == "websocket" and scope["path"].startswith("/ws/"):
            await self.relay(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _forward(self, scope: Scope, receive: Receive, send: Send, upstream: Upstream, prefix: str,
                       public: bool, target: bytes | None = None) -> None:
        gateway = self.gateway
        started = time.perf_counter()
        incoming = read_request_headers(scope["headers"])
        request_id = incoming.request_id or new_request_id()
        context_token = request_id_var.set(request_id)
        request_id_bytes = request_id.encode()
        extra: list[tuple[bytes, bytes]] = [(b"x-request-id", request_id_bytes)]
        method: str = scope["method"]
        client = scope.get("client")
        client_ip: str = client[0] if client else "unknown"
        caller: Caller | None = None
        status, size = 500, 0
        gateway.inflight.count += 1
        try:
            try:
                caller = await self._identify(incoming, public)
                decision = await gateway.limits.hit(caller, client_ip)
            except DomainError as exc:
                status = exc.status
                await _refuse(scope, send, exc, extra)
                return
            extra += rate_limit_headers(decision)
            if not decision.allowed:
                status = 429
                await _refuse(scope, send, _rate_limited(caller, decision.retry_after_s), extra)
                return

            forward = incoming.forward
            if caller is not None:
                forward.append((b"authorization", caller.authorization))
            elif incoming.authorization is not None:
                forward.append((b"authorization", incoming.authorization.encode("latin-1")))
            ip = client_ip.encode()
            forward.append((b"x-forwarded-for",
                            ip if incoming.forwarded_for is None else incoming.forwarded_for + b", " + ip))
            forward.append((b"x-forwarded-proto", b"https" if scope.get("scheme") == "https" else b"http"))
            if incoming.host is not None:
                forward.append((b"x-forwarded-host", incoming.host))
            forward.append((b"x-request-id", request_id_bytes))
            if target is None:
                target = _target(scope)
            status, size = await self._exchange(scope, receive, send, upstream, method, target, forward,
                                                incoming.has_body, extra)
        except _ClientGone:
            status = 499  # nginx's "client closed request", for usage and metrics only
        except Exception:  # the edge of the proxy path: log it, answer 500 problem+json if still possible
            _log.exception("proxy failure", service=upstream.name, path=scope["path"])
            status = 500
            with contextlib.suppress(RuntimeError, OSError):
                await _refuse(scope, send, _Unexpected(), extra)
        finally:
            gateway.inflight.count -= 1
            request_id_var.reset(context_token)
            gateway.proxy_metrics.count(upstream.name, status)
            latency_ms = (time.perf_counter() - started) * 1000
            if caller is not None:
                gateway.usage.record(upstream.name, caller.user_id, caller.plan, method, prefix, status,
                                     latency_ms, size, request_id)
            else:
                gateway.usage.record(upstream.name, None, ANONYMOUS_PLAN, method, prefix, status, latency_ms,
                                     size, request_id)

    async def _identify(self, incoming: IncomingRequest, public: bool) -> Caller | None:
        auth = self.gateway.auth
        if incoming.authorization is None and incoming.api_key is None:
            if public:
                return None
            raise Unauthorized("missing bearer token: send 'Authorization: Bearer <access token>' "
                               "or 'X-API-Key: atp_...'")
        if public:
            try:  # a public route still meters a caller it can identify, and ignores stale credentials
                return await auth.identify(incoming.authorization, incoming.api_key)
            except DomainError:
                return None
        return await auth.identify(incoming.authorization, incoming.api_key)

    async def _exchange(self, scope: Scope, receive: Receive, send: Send, upstream: Upstream, method: str,
                        target: bytes, headers: list[tuple[bytes, bytes]], has_body: bool,
                        extra: list[tuple[bytes, bytes]]) -> tuple[int, int]:
        """Send the request upstream and relay the answer; (status, response body bytes)."""
        gateway = self.gateway
        breaker = upstream.breaker
        if not breaker.allow():
            retry = str(max(1, math.ceil(breaker.retry_after_s())))
            await _refuse(scope, send, Unavailable(
                f"{upstream.name} is unavailable: too many recent failures, calls are paused",
                headers={"Retry-After": retry}), extra)
            return 503, 0
        body: bytes | AsyncIterator[bytes] | None = None
        body_whole = True
        if has_body:
            body = await _request_body(receive)
            body_whole = isinstance(body, bytes)
        upstream_started = time.perf_counter()
        try:
            response = await gateway.http.request(
                upstream.origin, _METHODS.get(method) or method.encode(), target, headers, body,
                retry_stale=body_whole and method in _IDEMPOTENT)
        except UpstreamError as exc:
            breaker.record_failure()
            failure = _failure(upstream.name, exc, gateway.settings.upstream_timeout_s)
            await _refuse(scope, send, failure, extra)
            return failure.status, 0
        gateway.proxy_metrics.observe(upstream.name, time.perf_counter() - upstream_started)
        status = response.status
        if status == 502 or status == 503 or status == 504:
            breaker.record_failure()
        else:
            breaker.record_success()
        headers_out = response_headers(response.headers)
        headers_out += extra
        if response.complete:  # the usual small answer: all of it is here already
            content = response.take_all()
            await send({"type": "http.response.start", "status": status, "headers": headers_out})
            await send({"type": "http.response.body", "body": content})
            return status, len(content)
        await send({"type": "http.response.start", "status": status, "headers": headers_out})
        return status, await _stream_response(response, receive, send, upstream.name, body_whole)


def _failure(service: str, exc: UpstreamError, timeout_s: float) -> DomainError:
    if isinstance(exc, ConnectFailed):
        return Unavailable(f"{service} is unavailable: {exc}", headers={"Retry-After": _RETRY_AFTER_DOWN})
    if isinstance(exc, ReadTimeout):
        return UpstreamTimeout(f"{service} did not answer within {timeout_s:g} s")
    return BadGateway(f"{service} failed to answer: {exc}")


async def _stream_response(response: UpstreamResponse, receive: Receive, send: Send, service: str,
                           watch_disconnect: bool) -> int:
    """Relay the body chunk by chunk as it arrives; stop early if the client goes away."""
    size = 0
    watcher: asyncio.Task[None] | None = None
    if watch_disconnect:
        async def close_on_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            response.close()

        watcher = asyncio.create_task(close_on_disconnect(), name="client-disconnect-watch")
    try:
        async for chunk in response.chunks():
            size += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except UpstreamError as exc:
        # Headers are gone already: leaving the response incomplete makes the server drop the
        # connection, so the client sees a truncated body rather than a complete-looking one.
        if watcher is None or not watcher.done():
            _log.warning("upstream broke off a streamed answer", service=service, error=str(exc))
    finally:
        response.close()
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    return size


async def _request_body(receive: Receive) -> bytes | AsyncIterator[bytes]:
    """The whole body when it came in one message (the usual case), else a stream of its chunks."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise _ClientGone
    first: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return first
    return _body_chunks(first, receive)


async def _body_chunks(first: bytes, receive: Receive) -> AsyncIterator[bytes]:
    if first:
        yield first
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def _target(scope: Scope) -> bytes:
    """The request target as the client sent it: raw (still percent-encoded) path and query."""
    raw: bytes | None = scope.get("raw_path")
    path = raw if raw else quote(scope["path"]).encode()
    query: bytes = scope.get("query_string", b"")
    return path + b"?" + query if query else path


def _rate_limited(caller: Caller | None, retry_after_s: float) -> DomainError:
    who = f"the {caller.plan} plan" if caller is not None else "anonymous calls from this address"
    return RateLimited(f"rate limit of {who} exceeded; retry in {max(1, math.ceil(retry_after_s))} s")


class _Unexpected(DomainError):
    status, title, type_slug = 500, "Internal server error", "internal"

    def __init__(self) -> None:
        super().__init__("an unexpected error occurred; quote the request id when reporting it")


async def _refuse(scope: Scope, send: Send, exc: DomainError,
                  extra: list[tuple[bytes, bytes]] | None) -> None:
    """Answer with the problem document of `exc` (the request id comes from the context)."""
    response = problem(exc.status, exc.detail, title=exc.title, type_slug=exc.type_slug, errors=exc.errors,
                       headers=exc.headers, extra=exc.extra or None)
    if extra:
        present = {name for name, _ in response.raw_headers}
        response.raw_headers.extend(item for item in extra if item[0] not in present)

    async def no_body() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, no_body, send)


async def _not_found(scope: Scope, send: Send, detail: str) -> None:
    """404 for a path no routed service serves, carrying the request id like every answer."""
    request_id = read_request_headers(scope["headers"]).request_id or new_request_id()
    token = request_id_var.set(request_id)
    try:
        await _refuse(scope, send, NotFound(detail), [(b"x-request-id", request_id.encode())])
    finally:
        request_id_var.reset(token)
