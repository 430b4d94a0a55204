"""The gateway's HTTP/1.1 client against a real socket server that answers in every framing HTTP allows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from api_gateway.settings import Settings
from api_gateway.upstream_http import (
    BadAnswer,
    ConnectFailed,
    Disconnected,
    Origin,
    ReadTimeout,
    UpstreamHttp,
)

from aitrading.embedded import free_port

# Canned answers by request path; each is exactly what goes on the wire.
ANSWERS: dict[bytes, bytes] = {
    b"/length": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Kind: length\r\n\r\nhello",
    b"/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
    b"/until-close": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody until the end",
    b"/no-content": b"HTTP/1.1 204 No Content\r\nX-Kind: empty\r\n\r\n",
    b"/head": b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Kind: head\r\n\r\n",
    b"/continue": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    b"/garbage": b"NOT HTTP AT ALL\r\n\r\n",
}


class WireServer:
    """Reads one request head at a time and writes the scripted answer; counts connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.hang_ups = 0
        self.bodies: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                _, target, _ = request_line.split(" ")
                headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
                if "content-length" in headers:
                    self.bodies.append(await reader.readexactly(int(headers["content-length"])))
                elif headers.get("transfer-encoding") == "chunked":
                    self.bodies.append(await read_chunked(reader))
                if target == "/silent":  # never answer; wait for the client to give up and hang up
                    await reader.read()
                    return
                if target == "/hang-up":
                    self.hang_ups += 1
                    return
                answer = ANSWERS[target.encode()]
                writer.write(answer)
                await writer.drain()
                if b"Connection: close" in answer:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    async def __aenter__(self) -> WireServer:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return body
        body += chunk[:-2]


@pytest.fixture
async def wire() -> AsyncIterator[tuple[WireServer, UpstreamHttp, Origin]]:
    async with WireServer() as server:
        http = UpstreamHttp(Settings(upstream_timeout_s=0.5, upstream_connect_timeout_s=0.5))
        try:
            yield server, http, Origin.parse(f"http://127.0.0.1:{server.port}")
        finally:
            await http.stop()


async def get(http: UpstreamHttp, origin: Origin, path: bytes, method: bytes = b"GET",
              body: bytes | AsyncIterator[bytes] | None = None,
              headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, dict[bytes, bytes], bytes]:
    response = await http.request(origin, method, path, headers or [], body)
    content = await response.read()
    return response.status, {k.lower(): v for k, v in response.headers}, content


async def test_every_response_framing_is_read_whole(wire: tuple[WireServer, UpstreamHttp, Origin]) -> None:
    _, http, origin = wire
    assert await get(http, origin, b"/length") == (200, {b"content-length": b"5", b"x-kind": b"length"},
                                                    b"hello")
    assert (await get(http, origin, b"/chunked"))[2] == b"abcdefg"
    assert (await get(http, origin, b"/until-close"))[2] == b"body until the end"
    assert await get(http, origin, b"/no-content") == (204, {b"x-kind": b"empty"}, b"")
    status, headers, content = await get(http, origin, b"/head", method=b"HEAD")
    assert (status, headers[b"content-length"], content) == (200, b"1000", b"")
    assert (await get(http, origin, b"/continue"))[::2] == (201, b"ok")  # the interim 100 is skipped


async def test_keep_alive_connections_are_reused(wire: tuple[WireServer, UpstreamHttp, Origin]) -> None:
    server, http, origin = wire
    for path in (b"/length", b"/chunked", b"/head", b"/length", b"/no-content"):
        await get(http, origin, path, method=b"HEAD" if path == b"/head" else b"GET")
    assert server.connections == 1
    await get(http, origin, b"/until-close")  # the server closes this one...
    await get(http, origin, b"/length")  # ...so the next request opens a new connection
    assert server.connections == 2


async def test_request_bodies_are_sent_with_length_or_chunked(
        wire: tuple[WireServer, UpstreamHttp, Origin]) -> None:
    server, http, origin = wire

    async def parts() -> AsyncIterator[bytes]:
        for part in (b"one,", b"two,", b"three"):
            yield part

    await get(http, origin, b"/length", method=b"POST", body=b"plain body")
    await get(http, origin, b"/length", method=b"POST", body=parts())
    await get(http, origin, b"/length", method=b"PUT", body=parts(), headers=[(b"content-length", b"13")])
    assert server.bodies == [b"plain body", b"one,two,three", b"one,two,three"]


async def test_failures_are_told_apart(wire: tuple[WireServer, UpstreamHttp, Origin]) -> None:
    _, http, origin = wire
    with pytest.raises(ReadTimeout):
        await http.request(origin, b"GET", b"/silent", [])
    with pytest.raises(Disconnected) as hung_up:
        await http.request(origin, b"GET", b"/hang-up", [])
    assert not hung_up.value.answered
    with pytest.raises(BadAnswer):
        await http.request(origin, b"GET", b"/garbage", [])
    with pytest.raises(ConnectFailed):
        await http.request(Origin.parse(f"http://127.0.0.1:{free_port()}"), b"GET", b"/", [])


async def test_a_reused_connection_closed_before_answering_is_retried_once_when_allowed(
        wire: tuple[WireServer, UpstreamHttp, Origin]) -> None:
    server, http, origin = wire
    await get(http, origin, b"/length")  # one connection, now idle in the pool
    with pytest.raises(Disconnected):
        await http.request(origin, b"GET", b"/hang-up", [], retry_stale=True)
    assert (server.connections, server.hang_ups) == (2, 2)  # retried once, on a fresh connection
    await get(http, origin, b"/length")
    with pytest.raises(Disconnected):
        await http.request(origin, b"POST", b"/hang-up", [], b"x")  # not repeatable: not retried
    assert (server.connections, server.hang_ups) == (3, 3)
