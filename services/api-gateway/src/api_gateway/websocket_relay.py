"""WebSocket relay for `/ws/*`: the client's socket at the gateway, joined to the owning service's.

The owner comes from the registry's `websocket_paths` (e.g. `/ws/market` → data-bridge). The client
authenticates with `?token=<access token>` (browsers cannot set headers on a WebSocket), an
`Authorization: Bearer` header, or an API key (`X-API-Key` / `?api_key=`); the upstream connection
carries `Authorization: Bearer <access token>` so the service verifies the caller itself, and the
credential is removed from the query it sees. A refused handshake is answered with a problem+json
HTTP response where the server supports it (uvicorn does), else closed with 1008.

Messages are relayed both ways as they come, text as text and binary as binary; when either side
closes, the other is closed with the same code. One usage event per connection, when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from urllib.parse import parse_qsl, urlencode

import structlog
from starlette.types import Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from aitrading.errors import DomainError, NotFound, RateLimited, Unauthorized, Unavailable, problem
from aitrading.request_context import request_id_var
from api_gateway.authentication import Caller
from api_gateway.forwarding import new_request_id, read_request_headers
from api_gateway.gateway import Gateway
from api_gateway.plan_limits import rate_limit_headers
from api_gateway.routes import Upstream

_log = structlog.get_logger("api_gateway.websocket_relay")

_CREDENTIAL_PARAMS = frozenset({"token", "access_token", "api_key"})
_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Codes that may be sent in a close frame (RFC 6455 §7.4): not 1005/1006/1015 nor undefined ones.
_SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def sendable_close_code(code: int | None, fallback: int) -> int:
    if code is None:
        return fallback
    if code in _SENDABLE_CODES or 3000 <= code <= 4999:
        return code
    return fallback


class WebSocketRelay:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        gateway = self.gateway
        incoming = read_request_headers(scope["headers"])
        request_id = incoming.request_id or new_request_id()
        context_token = request_id_var.set(request_id)
        try:
            upstream = gateway.routes.websocket_upstream(scope["path"])
            if upstream is None:
                await _deny(scope, send, NotFound(f"no service serves the WebSocket {scope['path']}"), [])
                return
            params = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            credentials = {name: value for name, value in params if name in _CREDENTIAL_PARAMS}
            query = urlencode([(name, value) for name, value in params if name not in _CREDENTIAL_PARAMS])
            authorization = incoming.authorization
            token = credentials.get("token") or credentials.get("access_token")
            if authorization is None and token:
                authorization = f"Bearer {token}"
            api_key = incoming.api_key or credentials.get("api_key")
            client = scope.get("client")
            client_ip = client[0] if client else "unknown"
            extra = [(b"x-request-id", request_id.encode())]
            try:
                caller = await gateway.auth.identify(authorization, api_key)
                if caller is None:
                    raise Unauthorized("missing credentials: connect with ?token=<access token> or an "
                                       "'Authorization: Bearer' header")
                decision = await gateway.limits.hit(caller, client_ip)
                if not decision.allowed:
                    retry = max(1, math.ceil(decision.retry_after_s))
                    raise RateLimited(f"rate limit of the {caller.plan} plan exceeded; retry in {retry} s",
                                      headers={"Retry-After": str(retry)})
            except DomainError as exc:
                await _deny(scope, send, exc, extra)
                return
            extra.extend(rate_limit_headers(decision))
            await self._relay(scope, receive, send, upstream, caller, query, incoming.forwarded_for,
                              client_ip, request_id, extra)
        finally:
            request_id_var.reset(context_token)

    async def _relay(self, scope: Scope, receive: Receive, send: Send, upstream: Upstream, caller: Caller,
                     query: str, forwarded_for: bytes | None, client_ip: str, request_id: str,
                     extra: list[tuple[bytes, bytes]]) -> None:
        gateway = self.gateway
        breaker = upstream.breaker
        if not breaker.allow():
            retry = str(max(1, math.ceil(breaker.retry_after_s())))
            await _deny(scope, send, Unavailable(f"{upstream.name} is unavailable: calls are paused",
                                                 headers={"Retry-After": retry}), [])
            return
        url = "ws" + upstream.base_url[4:] if upstream.base_url.startswith("http") else upstream.base_url
        raw_path = scope.get("raw_path")
        url += raw_path.decode("latin-1") if raw_path else scope["path"]
        if query:
            url += "?" + query
        headers = [
            ("Authorization", caller.authorization.decode()),
            ("X-Request-ID", request_id),
            ("X-Forwarded-For", client_ip if forwarded_for is None
             else f"{forwarded_for.decode('latin-1')}, {client_ip}"),
        ]
        subprotocols = [Subprotocol(p) for p in scope.get("subprotocols", [])] or None
        started = time.perf_counter()
        try:
            upstream_ws = await connect(url, additional_headers=headers, subprotocols=subprotocols,
                                        open_timeout=gateway.settings.upstream_connect_timeout_s,
                                        max_size=_MAX_MESSAGE_BYTES, compression=None)
        except InvalidStatus as exc:
            breaker.record_success()  # the service answered; it refused this connection
            status = exc.response.status_code
            await _deny(scope, send, _upstream_refusal(upstream.name, status), [])
            return
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            breaker.record_failure()
            await _deny(scope, send, Unavailable(f"{upstream.name} is unavailable: {exc.__class__.__name__}",
                                                 headers={"Retry-After": "1"}), [])
            return
        breaker.record_success()
        relayed = [0]
        try:
            await send({"type": "websocket.accept", "subprotocol": upstream_ws.subprotocol, "headers": extra})
            await _pump(receive, send, upstream_ws, relayed)
        finally:
            await upstream_ws.close()
            gateway.usage.record(upstream.name, caller.user_id, caller.plan, "WS", scope["path"].strip("/"),
                                 101, (time.perf_counter() - started) * 1000, relayed[0], request_id)


async def _pump(receive: Receive, send: Send, upstream_ws: ClientConnection, relayed: list[int]) -> None:
    """Relay until one side closes, then close the other with the same code."""

    async def client_to_upstream() -> None:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                await upstream_ws.send(text if text is not None else message.get("bytes") or b"")
            elif kind == "websocket.disconnect":
                await upstream_ws.close(code=sendable_close_code(message.get("code"), 1000),
                                        reason=message.get("reason") or "")
                return

    async def upstream_to_client() -> None:
        try:
            async for data in upstream_ws:
                relayed[0] += len(data)
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})
        except ConnectionClosed:
            pass
        code = sendable_close_code(upstream_ws.close_code, 1011)
        if upstream_ws.close_code in (None, 1005):
            code = 1000
        await send({"type": "websocket.close", "code": code, "reason": upstream_ws.close_reason or ""})

    to_upstream = asyncio.create_task(client_to_upstream(), name="ws-client-to-upstream")
    to_client = asyncio.create_task(upstream_to_client(), name="ws-upstream-to-client")
    try:
        done, _ = await asyncio.wait({to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (to_upstream, to_client):
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, OSError, RuntimeError):
                await task
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            _log.warning("websocket relay ended with an error", error=repr(task.exception()))


def _upstream_refusal(service: str, status: int) -> DomainError:
    if status in (401, 403):
        return Unauthorized(f"{service} refused the connection ({status})")
    if status == 404:
        return NotFound(f"{service} does not serve this WebSocket")
    return Unavailable(f"{service} refused the WebSocket ({status})")


async def _deny(scope: Scope, send: Send, exc: DomainError, extra: list[tuple[bytes, bytes]]) -> None:
    """Refuse the handshake: an HTTP problem response when the server allows one, else close 1008."""
    if "websocket.http.response" in scope.get("extensions", {}):
        response = problem(exc.status, exc.detail, title=exc.title, type_slug=exc.type_slug,
                           headers=exc.headers, extra=exc.extra or None)
        headers = [*response.raw_headers, *extra]
        await send({"type": "websocket.http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": response.body})
        return
    close: Message = {"type": "websocket.close", "code": 1008, "reason": exc.detail[:120]}
    await send(close)
