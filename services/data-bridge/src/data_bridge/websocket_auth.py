"""Who is on the other end of a WebSocket: the bearer token from the `Authorization` header or `?token=`.

Browsers cannot set headers on a WebSocket, hence the query form (the gateway's relay moves it into the
header). A refused handshake is answered with a problem+json HTTP response where the server supports
it (uvicorn does), else the socket is closed with 1008 (policy violation).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.websockets import WebSocket

from aitrading.auth import JwksVerifier, Principal
from aitrading.errors import DomainError, Forbidden, Unauthorized, problem

POLICY_VIOLATION = 1008


def _token(websocket: WebSocket) -> str:
    header = websocket.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <access token>'")
        return token.strip()
    token = websocket.query_params.get("token") or websocket.query_params.get("access_token") or ""
    if not token:
        raise Unauthorized("missing credentials: connect with ?token=<access token> or an "
                           "'Authorization: Bearer' header")
    return token


async def authenticate(websocket: WebSocket,
                       allowed: Callable[[Principal], bool] = lambda _: True,
                       refusal: str = "not allowed") -> Principal | None:
    """The verified caller, or None once the handshake has been refused (nothing more to do)."""
    verifier: JwksVerifier = websocket.app.state.verifier
    try:
        principal = await verifier.verify(_token(websocket))
        if not allowed(principal):
            raise Forbidden(refusal)
    except DomainError as exc:
        await deny(websocket, exc)
        return None
    return principal


async def deny(websocket: WebSocket, exc: DomainError) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(problem(exc.status, exc.detail, title=exc.title,
                                                     type_slug=exc.type_slug, errors=exc.errors,
                                                     headers=exc.headers))
    else:
        await websocket.close(code=POLICY_VIOLATION, reason=exc.detail[:120])


def admin_or_service(principal: Principal) -> bool:
    return principal.is_admin or principal.is_service
