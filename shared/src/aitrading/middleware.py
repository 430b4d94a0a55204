"""Pure ASGI middleware: request id, in-flight tracking for graceful drain, metrics, access log."""

from __future__ import annotations

import asyncio
import time
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aitrading.metrics import ServiceMetrics
from aitrading.request_context import authorization_var, request_id_var

_access = structlog.get_logger("aitrading.access")
_QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})
REQUEST_ID_HEADER = b"x-request-id"


class InFlight:
    """Counts requests being served, so shutdown can wait until they are done."""

    def __init__(self) -> None:
        self.count = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """True when no request is in flight within `timeout_s`."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _valid_request_id(value: str) -> bool:
    return 0 < len(value) <= 128 and value.isprintable()


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics, inflight: InFlight) -> None:
        self.app = app
        self.metrics = metrics
        self.inflight = inflight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, REQUEST_ID_HEADER)
        request_id = incoming if incoming is not None and _valid_request_id(incoming) else uuid.uuid4().hex
        rid_token = request_id_var.set(request_id)
        auth_token = authorization_var.set(_header(scope, b"authorization"))
        status = 500
        started = time.perf_counter()
        rid_bytes = request_id.encode("latin-1")

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, rid_bytes)]
            await send(message)

        self.inflight.enter()
        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.inflight.leave()
            self.metrics.in_progress.dec()
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = scope.get("method", "WS")
            self.metrics.observe_request(method, template, status, elapsed)
            path = scope.get("path", "")
            if path not in _QUIET_PATHS:
                _access.info("request", method=method, path=path, route=template, status=status,
                             duration_ms=round(elapsed * 1000, 2))
            request_id_var.reset(rid_token)
            authorization_var.reset(auth_token)
