"""Bearer-token verification against the issuer's JWKS, and the `CurrentUser` dependency.

Every service verifies the caller's token itself (zero trust); the gateway checks first. user-service
issues the tokens and publishes the public keys at `GET /.well-known/jwks.json` (Ed25519 as `"OKP"`
keys and/or RSA keys, each with a `kid`).

Access-token claims (what user-service issues and what `verify` demands):

| claim | meaning |
|---|---|
| `iss` | the issuer, `settings.jwt_issuer` (checked) |
| `aud` | the audience, `settings.jwt_audience` (checked) |
| `sub` | the user id (a UUID), or `service:<name>` for a service token (id = `service_principal_id(name)`) |
| `exp`, `iat`, `nbf` | expiry (required), issue time (required), not-before (optional); epoch seconds |
| `jti` | the token's unique id |
| `email` | the user's email (absent for services) |
| `roles` | list of role names, e.g. `["user"]`, `["user", "admin"]`, `["service"]` |
| `plan` | `"free"`, `"pro"` or `"enterprise"` (defaults to `"free"`) |
| `typ` | `"access"`; anything else (a refresh token) is refused |
| `kind` | `"user"` or `"service"` (inferred from `sub` when absent) |

Only EdDSA and RS256 signatures are accepted, and the algorithm must match the key's type: `none`,
HMAC and algorithm confusion are refused. Keys are parsed once and cached by `kid`; a token with an
unknown `kid` triggers one shared, rate-limited refresh of the JWKS, which is how a key rotation at the
issuer is picked up without a restart. A token already verified is remembered until it expires (a
bounded map), so a client's repeated calls cost a lookup, not a signature check; the map is emptied
when the issuer withdraws a key.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any
from uuid import UUID

import httpx
import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from fastapi import Depends, Request
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from aitrading.errors import Forbidden, Unauthorized, Unavailable
from aitrading.request_context import authorization_var

_log = structlog.get_logger("aitrading.auth")

ALGORITHMS = ("EdDSA", "RS256")
PLANS = frozenset({"free", "pro", "enterprise"})
# Service principals get a stable UUID derived from their name, so ownership columns stay UUIDs.
SERVICE_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "services.aitrading.dev")
SERVICE_SUBJECT_PREFIX = "service:"

PublicKey = Ed25519PublicKey | RSAPublicKey


def service_principal_id(name: str) -> UUID:
    """The principal id of the service `name` (the `sub` of its tokens is `service:<name>`)."""
    return uuid.uuid5(SERVICE_ID_NAMESPACE, name)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user or a service, as proven by a verified access token."""

    id: UUID
    email: str | None
    roles: frozenset[str]
    plan: str
    kind: str  # "user" | "service"
    token: str = field(repr=False)  # the raw bearer token, for propagation
    claims: Mapping[str, Any] = field(repr=False, compare=False)

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_service(self) -> bool:
        return self.kind == "service"

    @property
    def service_name(self) -> str | None:
        sub = str(self.claims.get("sub", ""))
        return sub[len(SERVICE_SUBJECT_PREFIX):] if sub.startswith(SERVICE_SUBJECT_PREFIX) else None


@dataclass(frozen=True, slots=True)
class _Key:
    algorithm: str
    public_key: PublicKey


def _parse_jwk(jwk: Mapping[str, Any]) -> tuple[str, _Key] | None:
    """One JWK → (kid, key) for a signing key we accept; None for anything else."""
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid or jwk.get("use", "sig") != "sig":
        return None
    kty = jwk.get("kty")
    if kty == "OKP" and jwk.get("crv") == "Ed25519":
        algorithm = "EdDSA"
        key: Any = OKPAlgorithm.from_jwk(dict(jwk))
    elif kty == "RSA":
        algorithm = "RS256"
        key = RSAAlgorithm.from_jwk(dict(jwk))
    else:
        return None
    declared = jwk.get("alg")
    if declared is not None and declared != algorithm:
        return None
    if not isinstance(key, Ed25519PublicKey | RSAPublicKey):  # a private JWK: publish public parts only
        return None
    return kid, _Key(algorithm, key)


class KeySet:
    """Parsed verification keys by `kid`; `decode` is the CPU-only hot path of token verification."""

    def __init__(self, keys: Mapping[str, _Key] | None = None) -> None:
        self._keys: dict[str, _Key] = dict(keys or {})

    @classmethod
    def from_jwks(cls, document: Mapping[str, Any]) -> KeySet:
        raw = document.get("keys")
        if not isinstance(raw, list):
            raise ValueError("a JWKS document has a 'keys' list")
        keys: dict[str, _Key] = {}
        for jwk in raw:
            if not isinstance(jwk, Mapping):
                continue
            try:
                parsed = _parse_jwk(jwk)
            except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
                _log.warning("ignoring unreadable JWK", kid=jwk.get("kid"), error=repr(exc))
                continue
            if parsed is not None:
                keys[parsed[0]] = parsed[1]
        return cls(keys)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def decode(self, token: str, *, issuer: str, audience: str, leeway_s: float = 5) -> Principal:
        """Verify `token` with the key its header names (Unauthorized if invalid; KeyError: unknown kid)."""
        kid, _ = read_header(token)
        key = self._keys[kid]
        return _decode(token, key, issuer=issuer, audience=audience, leeway_s=leeway_s)


def read_header(token: str) -> tuple[str, str]:
    """The token's (kid, alg), refusing any algorithm other than EdDSA and RS256."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise Unauthorized("the bearer token is malformed") from exc
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise Unauthorized(f"token signing algorithm {alg!r} is not accepted")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Unauthorized("the token names no signing key (kid)")
    return kid, alg


_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]


def _decode(token: str, key: _Key, *, issuer: str, audience: str, leeway_s: float) -> Principal:
    try:
        # The algorithm comes from the key's type, never from the token: no algorithm confusion.
        claims = jwt.decode(token, key.public_key, algorithms=[key.algorithm], audience=audience,
                            issuer=issuer, leeway=leeway_s, options={"require": _REQUIRED_CLAIMS})
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("the token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise Unauthorized("the token is not valid yet") from exc
    except jwt.InvalidAudienceError as exc:
        raise Unauthorized("the token is not meant for this audience") from exc
    except jwt.InvalidIssuerError as exc:
        raise Unauthorized("the token was not issued by the trusted issuer") from exc
    except jwt.InvalidSignatureError as exc:
        raise Unauthorized("the token signature is invalid") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise Unauthorized("the token's algorithm does not match its signing key") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthorized(f"the token lacks the {exc.claim!r} claim") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"the token is invalid: {exc}") from exc
    return principal_from_claims(claims, token)


def principal_from_claims(claims: Mapping[str, Any], token: str) -> Principal:
    """The caller described by verified access-token claims."""
    if claims.get("typ") != "access":
        raise Unauthorized("not an access token")
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise Unauthorized("the token subject is not a string")
    kind = claims.get("kind") or ("service" if sub.startswith(SERVICE_SUBJECT_PREFIX) else "user")
    if kind == "service":
        name = sub[len(SERVICE_SUBJECT_PREFIX):] if sub.startswith(SERVICE_SUBJECT_PREFIX) else ""
        if not name:
            raise Unauthorized("a service token's subject is 'service:<name>'")
        principal_id = service_principal_id(name)
    elif kind == "user":
        try:
            principal_id = UUID(sub)
        except ValueError as exc:
            raise Unauthorized("a user token's subject is a user id") from exc
    else:
        raise Unauthorized(f"unknown principal kind {kind!r}")
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise Unauthorized("the token's roles are not a list of names")
    plan = claims.get("plan") or "free"
    if plan not in PLANS:
        raise Unauthorized(f"unknown plan {plan!r} in the token")
    email = claims.get("email")
    return Principal(
        id=principal_id,
        email=email if isinstance(email, str) else None,
        roles=frozenset(roles),
        plan=plan,
        kind=kind,
        token=token,
        claims=MappingProxyType(dict(claims)),
    )


class JwksVerifier:
    """Verifies access tokens with the issuer's published keys, fetched and cached from `jwks_url`.

    The key set is refreshed when it is older than `cache_ttl_s` (in the background; tokens keep
    verifying with the cached keys meanwhile) and when a token names an unknown `kid` (awaited; at
    most one fetch per `min_refresh_interval_s`, concurrent callers share it).
    """

    name = "jwks"

    def __init__(self, jwks_url: str, *, issuer: str, audience: str, http: httpx.AsyncClient | None = None,
                 cache_ttl_s: float = 300, min_refresh_interval_s: float = 5, leeway_s: float = 5,
                 verified_cache_size: int = 4096) -> None:
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self.cache_ttl_s = cache_ttl_s
        self.min_refresh_interval_s = min_refresh_interval_s
        self.leeway_s = leeway_s
        self._http = http
        self._owns_http = http is None
        self._keys: KeySet | None = None
        self._fetched_at = float("-inf")  # monotonic time of the last successful fetch
        self._attempted_at = float("-inf")  # monotonic time the last fetch started
        self._inflight: asyncio.Task[KeySet] | None = None
        # token → (principal, expiry in epoch seconds): a repeated token skips the signature check.
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._verified_cache_size = verified_cache_size

    @property
    def keys(self) -> KeySet | None:
        """The cached key set (None before the first successful fetch)."""
        return self._keys

    async def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None:
            if time.time() < cached[1]:
                self._verified.move_to_end(token)
                return cached[0]
            del self._verified[token]
        kid, _ = read_header(token)
        keys = self._keys
        now = time.monotonic()
        if keys is not None and kid in keys:
            if now - self._fetched_at > self.cache_ttl_s:
                self._start_refresh(now)  # stale-while-revalidate: do not make this caller wait
        else:
            keys = await self._refresh_for_unknown_kid(now)
            if kid not in keys:
                raise Unauthorized(f"the token's signing key {kid!r} is unknown")
        principal = keys.decode(token, issuer=self.issuer, audience=self.audience, leeway_s=self.leeway_s)
        self._remember(token, principal)
        return principal

    def _remember(self, token: str, principal: Principal) -> None:
        if self._verified_cache_size <= 0:
            return
        self._verified[token] = (principal, float(principal.claims["exp"]) + self.leeway_s)
        if len(self._verified) > self._verified_cache_size:
            self._verified.popitem(last=False)

    async def refresh(self) -> None:
        """Fetch the key set now (joining a fetch already under way)."""
        task = self._inflight or self._start_refresh(time.monotonic())
        await asyncio.shield(task)

    async def _refresh_for_unknown_kid(self, now: float) -> KeySet:
        if self._inflight is not None:
            return await asyncio.shield(self._inflight)
        if now - self._attempted_at < self.min_refresh_interval_s:
            if self._keys is None:
                raise Unavailable("the signing keys could not be fetched from the issuer; try again shortly",
                                  headers={"Retry-After": str(max(1, round(self.min_refresh_interval_s)))})
            return self._keys
        return await asyncio.shield(self._start_refresh(now))

    def _start_refresh(self, now: float) -> asyncio.Task[KeySet]:
        if self._inflight is None:
            self._attempted_at = now
            self._inflight = asyncio.create_task(self._fetch(), name="jwks-refresh")
            self._inflight.add_done_callback(self._refresh_done)
        return self._inflight

    def _refresh_done(self, task: asyncio.Task[KeySet]) -> None:
        self._inflight = None
        if not task.cancelled() and task.exception() is not None:
            _log.warning("JWKS refresh failed", url=self.jwks_url, error=repr(task.exception()))

    async def _fetch(self) -> KeySet:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
        try:
            response = await self._http.get(self.jwks_url, headers={"Accept": "application/json"})
            response.raise_for_status()
            keys = KeySet.from_jwks(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            if self._keys is not None:
                return self._keys  # keep verifying with the keys we have; retried after the interval
            raise Unavailable(f"the signing keys could not be fetched from {self.jwks_url}: {exc}") from exc
        if self._keys is not None and not self._keys.kids <= keys.kids:
            self._verified.clear()  # a key was withdrawn: tokens it signed must be checked again
        self._keys = keys
        self._fetched_at = time.monotonic()
        _log.info("JWKS loaded", url=self.jwks_url, kids=sorted(keys.kids))
        return keys

    async def start(self) -> None:
        """Nothing to do: keys are fetched on first use (user-service may start after this service)."""

    async def check(self) -> None:
        """Always ready: the issuer's health is its own, and cached keys keep verifying meanwhile."""

    async def stop(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <access token>'")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("the Authorization header must be 'Bearer <access token>'")
    return token


async def current_principal(request: Request) -> Principal:
    """FastAPI dependency: the verified caller of this request (401 when absent or invalid)."""
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    token = bearer_token(request)
    verifier: JwksVerifier = request.app.state.verifier
    principal = await verifier.verify(token)
    request.state.principal = principal
    authorization_var.set(f"Bearer {token}")  # the service client forwards it on outgoing calls
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]


def require_role(role: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency factory: the verified caller, who must hold `role` (403 otherwise)."""

    async def principal_with_role(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.has_role(role):
            raise Forbidden(f"this action requires the {role!r} role")
        return principal

    principal_with_role.__name__ = f"require_{role}"
    return principal_with_role


AdminUser = Annotated[Principal, Depends(require_role("admin"))]
