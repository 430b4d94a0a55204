"""user-service verifies bearer tokens like every other service: with the library's JwksVerifier.

Its own JWKS is fetched in-process (an httpx transport answering from the key ring) instead of over
the network, so the service needs no address for itself and no port in tests; the verifier's caching,
unknown-`kid` refresh and checks are exactly the library's.
"""

from __future__ import annotations

import httpx

from aitrading.auth import JwksVerifier
from aitrading.settings import ServiceSettings
from user_service.tokens import KeyRing

JWKS_PATH = "/.well-known/jwks.json"


class KeyRingTransport(httpx.AsyncBaseTransport):
    """Answers GET of the JWKS path with the key ring's current JWKS document."""

    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "GET" or request.url.path != JWKS_PATH:
            return httpx.Response(404, request=request)
        return httpx.Response(200, json=await self._keys.jwks(), request=request)


class OwnVerifier:
    """A resource owning the in-process JWKS client; `verifier` replaces the service factory's."""

    name = "own-jwks"

    def __init__(self, keys: KeyRing, settings: ServiceSettings) -> None:
        self._http = httpx.AsyncClient(transport=KeyRingTransport(keys))
        # A refresh is a local query, so an unknown kid (rotated on another replica) may look again soon.
        self.verifier = JwksVerifier(f"http://user-service.local{JWKS_PATH}", issuer=settings.jwt_issuer,
                                     audience=settings.jwt_audience, http=self._http,
                                     min_refresh_interval_s=1.0)

    async def start(self) -> None:
        """The verifier itself is a component of the service factory; only the client is ours."""

    async def check(self) -> None:
        """Always ready: the JWKS is answered in-process."""

    async def stop(self) -> None:
        await self._http.aclose()
