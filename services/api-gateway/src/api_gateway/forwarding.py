"""What crosses the gateway in each direction: request headers in, response headers out.

Hop-by-hop headers (RFC 9110 §7.6.1: Connection and the headers it names, Keep-Alive, TE, Trailer,
Transfer-Encoding, Upgrade, Proxy-*) belong to one connection and are never forwarded; neither is Host
(the upstream's own is sent) nor Expect. The gateway sets `X-Forwarded-For` (appended),
`X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Request-ID` itself, and replaces an API key with the
access token it was exchanged for. Upstream `Date` and `Server` give way to the gateway's own, as in
nginx. Headers stay bytes end to end: nothing is decoded that is only passed on.
"""

from __future__ import annotations

import itertools
import uuid

_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
                         b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"})

# Incoming headers the gateway reads or replaces, by what it does with them.
_AUTHORIZATION, _API_KEY, _REQUEST_ID, _HOST, _FORWARDED_FOR, _BODY_LENGTH, _BODY_CHUNKED, _CONNECTION, \
    _DROP = range(9)
_SPECIAL_REQUEST: dict[bytes, int] = {
    b"authorization": _AUTHORIZATION,
    b"x-api-key": _API_KEY,
    b"x-request-id": _REQUEST_ID,
    b"host": _HOST,
    b"x-forwarded-for": _FORWARDED_FOR,
    b"content-length": _BODY_LENGTH,
    b"transfer-encoding": _BODY_CHUNKED,
    b"connection": _CONNECTION,
    b"x-forwarded-proto": _DROP,
    b"x-forwarded-host": _DROP,
    b"expect": _DROP,  # 100-continue is between the client and the gateway's server
    **{name: _DROP for name in _HOP_BY_HOP - {b"transfer-encoding", b"connection"}},
}

_DROPPED_RESPONSE = _HOP_BY_HOP | {b"date", b"server", b"x-request-id"}

# Request ids the gateway assigns: a random per-process prefix and a counter (unique, and cheaper than
# a uuid4 per request).
_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):012x}"


class IncomingRequest:
    """The parts of a request's headers the gateway acts on, and the ones it forwards as they are."""

    __slots__ = ("api_key", "authorization", "forward", "forwarded_for", "has_body", "host", "request_id")

    def __init__(self) -> None:
        self.forward: list[tuple[bytes, bytes]] = []
        self.authorization: str | None = None
        self.api_key: str | None = None
        self.request_id: str | None = None
        self.host: bytes | None = None
        self.forwarded_for: bytes | None = None
        self.has_body = False


def read_request_headers(raw: list[tuple[bytes, bytes]]) -> IncomingRequest:
    incoming = IncomingRequest()
    forward = incoming.forward
    connection_names: bytes | None = None
    special = _SPECIAL_REQUEST
    for item in raw:
        kind = special.get(item[0])
        if kind is None:
            forward.append(item)
        elif kind == _AUTHORIZATION:
            incoming.authorization = item[1].decode("latin-1")
        elif kind == _REQUEST_ID:
            candidate = item[1].decode("latin-1")
            if 0 < len(candidate) <= 128 and candidate.isprintable():
                incoming.request_id = candidate
        elif kind == _HOST:
            incoming.host = item[1]
        elif kind == _BODY_LENGTH:
            incoming.has_body = item[1].strip() != b"0"
            forward.append(item)
        elif kind == _BODY_CHUNKED:
            incoming.has_body = True
        elif kind == _API_KEY:
            incoming.api_key = item[1].decode("latin-1").strip()
        elif kind == _FORWARDED_FOR:
            previous = incoming.forwarded_for
            incoming.forwarded_for = item[1] if previous is None else previous + b", " + item[1]
        elif kind == _CONNECTION:
            connection_names = item[1]
    if connection_names is not None:
        named = {token.strip().lower() for token in connection_names.split(b",")}
        incoming.forward = [(k, v) for k, v in forward if k not in named]
    return incoming


def response_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An upstream answer's headers, names lowercased, minus hop-by-hop ones and those the gateway sets."""
    dropped = _DROPPED_RESPONSE
    kept = []
    for name, value in raw:
        lowered = name.lower()
        if lowered not in dropped:
            kept.append((lowered, value))
    return kept
