"""The gateway's HTTP/1.1 client to upstream services: pooled keep-alive connections, bytes in, bytes out.

Why not a general-purpose client: the proxy path forwards headers it already holds as bytes and relays
bytes back, so everything a general client does per request (header dictionaries, str/bytes
conversion, cookie jars, redirects, decompression, tracing hooks) is cost without use. Measured on this
2-core machine with 64 keep-alive requests in flight against one uvicorn worker
(benchmarks/gateway/clients.py; client CPU per request): httpx.AsyncClient 636 requests/s and
1,456 µs, aiohttp.ClientSession 6,192 requests/s and 125 µs, this client 5,606 requests/s (the
upstream is the limit for both) and 62 µs. In the gateway, aiohttp took about 40% of the CPU and the
gateway made 0.41 of nginx's throughput; with this client, 0.7 before any other change.

What it does: one asyncio protocol per connection with httptools' response parser (the parser uvicorn
uses), connections kept per upstream and reused newest-first, closed when idle longer than
`keepalive_s` (below the upstream's own keep-alive, so the gateway never writes to a connection the
upstream is closing); request bodies as bytes or streamed (chunked when no length is known) with
write flow control; response bodies handed over as they arrive with read backpressure; a connect
timeout and an inactivity timeout (no bytes from the upstream for `timeout_s`). Nothing is decoded:
`Content-Encoding` bodies pass through untouched, cookies are the client's business.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from api_gateway.settings import Settings

_PAUSE_READING_ABOVE = 1024 * 1024  # response bytes waiting for the client before reading pauses
_RESUME_READING_BELOW = 256 * 1024


class UpstreamError(Exception):
    """A request to an upstream failed before a complete answer; `sent` says whether it may have run."""

    def __init__(self, detail: str, *, sent: bool) -> None:
        super().__init__(detail)
        self.sent = sent


class ConnectFailed(UpstreamError):
    """No connection could be made (refused, unreachable, connect timeout): the request never left."""


class ReadTimeout(UpstreamError):
    """The upstream sent nothing for longer than the timeout."""


class Disconnected(UpstreamError):
    """The connection closed before the answer was complete; `reused` when it came from the pool."""

    def __init__(self, detail: str, *, sent: bool, answered: bool, reused: bool) -> None:
        super().__init__(detail, sent=sent)
        self.answered = answered
        self.reused = reused


class BadAnswer(UpstreamError):
    """The upstream's bytes were not a valid HTTP/1.1 response."""


@dataclass(frozen=True, slots=True, eq=False)  # compared and hashed by identity: one per upstream
class Origin:
    """Where an upstream listens, parsed once from its base URL."""

    scheme: str
    host: str
    port: int
    host_header: bytes
    base_path: bytes

    @classmethod
    def parse(cls, base_url: str) -> Origin:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"an upstream base URL is http(s)://host[:port][/path], not {base_url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        default = (parts.scheme == "http" and port == 80) or (parts.scheme == "https" and port == 443)
        name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # IPv6 literal
        host = name if default else f"{name}:{port}"
        return cls(parts.scheme, parts.hostname, port, host.encode("ascii"), parts.path.rstrip("/").encode())


class UpstreamResponse:
    """One answer: status and raw headers at once, the body as it arrives (`read` or `chunks`)."""

    __slots__ = ("_buffered", "_chunks", "_connection", "_deadlines", "_done", "_error", "_is_head",
                 "_last_activity", "_loop", "_timeout_s", "_until_eof", "_waiter", "headers", "status")

    def __init__(self, connection: _Connection, timeout_s: float, is_head: bool,
                 deadlines: _Deadlines) -> None:
        self._connection: _Connection | None = connection
        self._timeout_s = timeout_s
        self._is_head = is_head
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._done = False
        self._until_eof = True  # until a Content-Length or chunked framing says otherwise
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._loop = connection.loop
        self._last_activity = self._loop.time()
        self._deadlines = deadlines
        deadlines.watch(self)

    @property
    def complete(self) -> bool:
        """Whether the whole body has arrived (it may still be waiting in memory)."""
        return self._done

    async def read(self) -> bytes:
        """The whole body (for small answers and the gateway's own calls)."""
        parts = [chunk async for chunk in self.chunks()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def take_all(self) -> bytes:
        """The body of a complete answer, without waiting."""
        chunks = self._chunks
        body = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        return body

    async def chunks(self) -> AsyncIterator[bytes]:
        chunks = self._chunks
        while True:
            if chunks:
                chunk = chunks.popleft()
                self._buffered -= len(chunk)
                # While the client is slow, reading may be paused: waiting for the client is not the
                # upstream's silence, so consuming counts as activity.
                self._last_activity = self._loop.time()
                connection = self._connection
                if (connection is not None and connection.reading_paused
                        and self._buffered < _RESUME_READING_BELOW):
                    connection.resume_reading()
                yield chunk
                continue
            if self._done:
                return
            if self._error is not None:
                raise self._error
            self._waiter = self._loop.create_future()
            await self._waiter

    def close(self) -> None:
        """Abandon the answer: an unfinished connection cannot be reused and is closed."""
        self._deadlines.forget(self)
        connection, self._connection = self._connection, None
        if connection is not None and not self._done:
            connection.abort()

    # Called by the connection's parser.
    def _on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        first = name[:1]
        if first in (b"c", b"C", b"t", b"T"):
            lowered = name.lower()
            if lowered == b"content-length" or (
                    lowered == b"transfer-encoding" and b"chunked" in value.lower()):
                self._until_eof = False

    def _on_body(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > _PAUSE_READING_ABOVE and self._connection is not None:
            self._connection.pause_reading()
        self._wake()

    def _on_complete(self) -> None:
        self._done = True
        self._deadlines.forget(self)
        self._wake()

    def _on_activity(self, now: float) -> None:
        self._last_activity = now

    def _fail(self, error: UpstreamError) -> None:
        if self._done or self._error is not None:
            return
        self._error = error
        self._deadlines.forget(self)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _idle_too_long(self, now: float) -> bool:
        return now - self._last_activity >= self._timeout_s

    def _time_out(self) -> None:
        connection = self._connection
        self._fail(ReadTimeout(f"no answer for {self._timeout_s:g} s", sent=True))
        if connection is not None:
            connection.on_response_failed()


class _Deadlines:
    """Answers in progress, checked for inactivity ten times a second.

    Cheaper than a timer per request: a request only joins and leaves a set.
    """

    interval_s = 0.1

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.active: set[UpstreamResponse] = set()
        self._task: asyncio.Task[None] | None = None

    def watch(self, response: UpstreamResponse) -> None:
        self.active.add(response)
        if self._task is None:
            self._task = self.loop.create_task(self._run(), name="upstream-deadlines")

    def forget(self, response: UpstreamResponse) -> None:
        self.active.discard(response)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if not self.active:
                continue
            now = self.loop.time()
            for response in [r for r in self.active if r._idle_too_long(now)]:
                self.active.discard(response)
                response._time_out()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes requests, parses answers, goes back to its pool when done."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.reading_paused = False
        self._headers_waiter: asyncio.Future[None] | None = None
        self._headers_done = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._received_any = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes nobody asked for: this connection cannot be trusted any more
            self.abort()
            return
        self._received_any = True
        response._on_activity(self.loop.time())
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BadAnswer(f"invalid HTTP answer: {exc}", sent=True))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        response = self.response
        if response is None:
            return
        if self._headers_done and response._until_eof and not response._done:
            self.response = None
            response._on_complete()  # a body delimited by the end of the connection
            return
        self._fail(Disconnected("the upstream closed the connection", sent=True,
                                answered=self._received_any, reused=self.reused))
        self._wake_drain()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response._on_header(name, value)

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            return
        response.status = self.parser.get_status_code()
        if response.status < 200:  # 1xx interim answers are not relayed; the real one follows
            response.headers.clear()
            return
        self._headers_done = True
        waiter = self._headers_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if response._is_head:
            # llhttp does not know the request was HEAD and would wait for a body: start afresh.
            keep_alive = self.parser.should_keep_alive()
            self.parser = httptools.HttpResponseParser(self)
            self._finish(response, keep_alive)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._on_body(body)

    def on_message_complete(self) -> None:
        response = self.response
        if response is None or not self._headers_done:
            return
        self._finish(response, self.parser.should_keep_alive())

    def _finish(self, response: UpstreamResponse, keep_alive: bool) -> None:
        self.response = None
        response._connection = None
        response._on_complete()
        if keep_alive and not self.closed:
            if self.reading_paused:
                self.resume_reading()
            self.pool.release(self)
        else:
            self.abort()

    # Used by the pool and the response.
    async def send(self, head: bytes, body: bytes | AsyncIterator[bytes] | None, chunked: bool,
                   response: UpstreamResponse) -> None:
        """Write the request and wait for the answer's status line and headers."""
        transport = self.transport
        assert transport is not None
        self.response = response
        self._headers_done = False
        self._received_any = False
        self._headers_waiter = self.loop.create_future()
        if body is None or isinstance(body, bytes):
            transport.write(head + body if body else head)
        else:
            transport.write(head)
            async for chunk in body:
                if self.closed:
                    break
                if chunk:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                if self._write_paused:
                    await self._drain()
            if chunked and not self.closed:
                transport.write(b"0\r\n\r\n")
        if not self._headers_done:
            await self._headers_waiter
        if response._error is not None and not self._headers_done:
            raise response._error

    async def _drain(self) -> None:
        if not self._write_paused or self.closed:
            return
        self._drain_waiter = self.loop.create_future()
        await self._drain_waiter

    def _wake_drain(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        response = self.response
        if response is not None:
            response._fail(error)
        waiter = self._headers_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_response_failed(self) -> None:
        """The response timed out: wake whoever waits for headers, and drop the connection."""
        waiter = self._headers_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self.abort()

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.abort()


class _Pool:
    """Idle connections to one origin, newest last."""

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop, *, max_idle: int, keepalive_s: float,
                 connect_timeout_s: float, ssl_context: ssl.SSLContext | None) -> None:
        self.origin = origin
        self.loop = loop
        self.max_idle = max_idle
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s
        self.ssl_context = ssl_context
        self.idle: collections.deque[_Connection] = collections.deque()

    async def acquire(self) -> _Connection:
        idle = self.idle
        if idle:
            now = self.loop.time()
            while idle:
                connection = idle.pop()
                if connection.closed:
                    continue
                if now - connection.idle_since < self.keepalive_s:
                    connection.reused = True
                    return connection
                connection.abort()
        return await self._connect()

    async def _connect(self) -> _Connection:
        origin = self.origin
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, protocol = await self.loop.create_connection(
                    lambda: _Connection(self), origin.host, origin.port, ssl=self.ssl_context,
                    server_hostname=origin.host if self.ssl_context else None)
        except TimeoutError as exc:
            raise ConnectFailed(f"connecting timed out after {self.connect_timeout_s:g} s",
                                sent=False) from exc
        except OSError as exc:
            reason = exc.strerror or exc.__class__.__name__
            raise ConnectFailed(f"cannot connect: {reason}", sent=False) from exc
        return protocol

    def release(self, connection: _Connection) -> None:
        connection.idle_since = self.loop.time()
        if len(self.idle) >= self.max_idle:
            connection.abort()
            return
        self.idle.append(connection)

    def forget(self, connection: _Connection) -> None:
        if connection in self.idle:
            self.idle.remove(connection)

    def close(self) -> None:
        while self.idle:
            self.idle.pop().abort()


class UpstreamHttp:
    """A component (start/stop/check) holding one connection pool per upstream origin."""

    name = "upstream-http"

    def __init__(self, settings: Settings) -> None:
        self.timeout_s = settings.upstream_timeout_s
        self._max_idle = settings.upstream_pool_size
        self._keepalive_s = settings.upstream_keepalive_s
        self._connect_timeout_s = settings.upstream_connect_timeout_s
        self._pools: dict[Origin, _Pool] = {}
        self._deadlines: _Deadlines | None = None
        self._ssl: ssl.SSLContext | None = None

    def _pool(self, origin: Origin) -> _Pool:
        pool = self._pools.get(origin)
        if pool is None:
            if origin.scheme == "https" and self._ssl is None:
                self._ssl = ssl.create_default_context()
            pool = _Pool(origin, asyncio.get_running_loop(), max_idle=self._max_idle,
                         keepalive_s=self._keepalive_s, connect_timeout_s=self._connect_timeout_s,
                         ssl_context=self._ssl if origin.scheme == "https" else None)
            self._pools[origin] = pool
        return pool

    async def request(self, origin: Origin, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                      body: bytes | AsyncIterator[bytes] | None = None, *, timeout_s: float | None = None,
                      retry_stale: bool = False) -> UpstreamResponse:
        """Send one request; returns once the answer's headers are in (the body follows).

        `target` is the path and query as sent (after the origin's base path). `headers` must not hold
        Host, Connection, Transfer-Encoding or (for a streamed body) a Content-Length they do not mean.
        With `retry_stale`, a request whose pooled connection turns out closed before any answer is
        sent once more on a new connection (only for requests that may be repeated).
        """
        pool = self._pools.get(origin) or self._pool(origin)
        deadlines = self._deadlines or self._start_deadlines()
        lines = [method, b" ", origin.base_path, target, b" HTTP/1.1\r\nhost: ", origin.host_header, b"\r\n"]
        has_length = False
        for name, value in headers:
            lines += (name, b": ", value, b"\r\n")
            if name == b"content-length":
                has_length = True
        chunked = False
        if isinstance(body, bytes):
            if not has_length and (body or method not in (b"GET", b"HEAD")):
                lines += (b"content-length: ", str(len(body)).encode(), b"\r\n")
        elif body is not None and not has_length:
            chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
        lines.append(b"\r\n")
        head = b"".join(lines)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        is_head = method == b"HEAD"
        while True:
            connection = await pool.acquire()
            response = UpstreamResponse(connection, timeout, is_head, deadlines)
            try:
                await connection.send(head, body, chunked, response)
            except Disconnected as exc:
                response.close()
                if retry_stale and exc.reused and not exc.answered:
                    retry_stale = False
                    continue
                raise
            except UpstreamError:
                response.close()
                raise
            except BaseException:
                response.close()
                raise
            return response

    async def fetch(self, origin: Origin, path: str, *, timeout_s: float,
                    headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, bytes]:
        """GET `path` of an upstream and read the whole answer (for the gateway's own small calls)."""
        deadline = time.monotonic() + timeout_s
        response = await self.request(origin, b"GET", path.encode(), headers or [],
                                      timeout_s=timeout_s)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                return response.status, await response.read()
        finally:
            response.close()

    async def start(self) -> None:
        """Connections are made on first use."""

    def _start_deadlines(self) -> _Deadlines:
        self._deadlines = _Deadlines(asyncio.get_running_loop())
        return self._deadlines

    async def stop(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        if self._deadlines is not None:
            await self._deadlines.close()
            self._deadlines = None

    async def check(self) -> None:
        """Always ready: each upstream's health is its own (see /services/<name>/health)."""
