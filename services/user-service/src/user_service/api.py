"""Routes of user-service: parse, authorize, call the domain, shape the response.

`/internal/...` routes are for other services (the gateway exchanges API keys there, services obtain
their own tokens); they are outside `/api/v1`, so the gateway never routes them publicly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.auth import AdminUser, CurrentUser, Principal
from aitrading.db import DbSession
from aitrading.errors import DomainError, Forbidden
from aitrading.service import from_state
from user_service import api_keys, service_credentials, users
from user_service.settings import Settings
from user_service.sign_in import Authenticator, TokenPair
from user_service.tokens import KeyRing, TokenIssuer

router = APIRouter()


Auth = Annotated[Authenticator, Depends(from_state("authenticator"))]
Keys = Annotated[KeyRing, Depends(from_state("keys"))]
Tokens = Annotated[TokenIssuer, Depends(from_state("tokens"))]


def _now() -> datetime:
    return datetime.now(UTC)


@asynccontextmanager
async def _kept_when_refused(session: AsyncSession) -> AsyncIterator[None]:
    """Commit what a refused request wrote (a counted failure, a revoked family), then refuse."""
    try:
        yield
    except DomainError:
        await session.commit()
        raise


def _account(principal: Principal) -> UUID:
    if principal.is_service:
        raise Forbidden("a service token has no user account")
    return principal.id


def _password_signed_in(principal: Principal) -> UUID:
    if "api_key_id" in principal.claims:
        raise Forbidden("API keys cannot manage API keys; sign in with your password")
    return _account(principal)


# --- models ---------------------------------------------------------------------------------------

class RegisterIn(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=4096)


class RegisteredOut(BaseModel):
    id: UUID
    email: str
    created_at: datetime


class LoginIn(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=4096)


class RefreshIn(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=512)


class TokenPairOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int

    @classmethod
    def of(cls, pair: TokenPair) -> TokenPairOut:
        return cls(access_token=pair.access_token, refresh_token=pair.refresh_token,
                   token_type=pair.token_type, expires_in=pair.expires_in)


class AccessTokenOut(BaseModel):
    access_token: str
    expires_in: int


class KeyOut(BaseModel):
    kid: str
    created_at: datetime


class MeOut(BaseModel):
    id: UUID
    email: str
    roles: list[str]
    plan: str
    created_at: datetime


class UserOut(MeOut):
    disabled: bool

    @classmethod
    def of(cls, user: users.User) -> UserOut:
        return cls(id=user.id, email=user.email, roles=list(user.roles), plan=user.plan,
                   created_at=user.created_at, disabled=user.disabled)


class UsersPageOut(BaseModel):
    items: list[UserOut]
    total: int
    limit: int
    offset: int


class UserChangeIn(BaseModel):
    roles: list[str] | None = Field(default=None, max_length=32)
    plan: str | None = None
    disabled: bool | None = None


class ApiKeyIn(BaseModel):
    name: str = Field(max_length=200)
    expires_at: datetime | None = None


class ApiKeyOut(BaseModel):
    id: UUID
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, key: api_keys.ApiKey) -> ApiKeyOut:
        return cls(id=key.id, name=key.name, prefix=key.prefix, created_at=key.created_at,
                   expires_at=key.expires_at, last_used_at=key.last_used_at)


class ApiKeyCreatedOut(ApiKeyOut):
    key: str  # shown once


class ApiKeyExchangeIn(BaseModel):
    key: str = Field(max_length=256)


class ServiceTokenIn(BaseModel):
    service: str = Field(max_length=100)
    secret: str = Field(max_length=1024)


# --- auth ------------------------------------------------------------------------------------------

@router.post("/api/v1/auth/register", status_code=201, response_model=RegisteredOut, tags=["auth"])
async def register(body: RegisterIn, session: DbSession, auth: Auth) -> RegisteredOut:
    user = await users.register(session, auth.passwords, email=body.email, password=body.password, now=_now())
    return RegisteredOut(id=user.id, email=user.email, created_at=user.created_at)


@router.post("/api/v1/auth/login", response_model=TokenPairOut, tags=["auth"])
async def login(body: LoginIn, session: DbSession, auth: Auth) -> TokenPairOut:
    async with _kept_when_refused(session):
        pair = await auth.login(session, body.email, body.password, _now())
    return TokenPairOut.of(pair)


@router.post("/api/v1/auth/refresh", response_model=TokenPairOut, tags=["auth"])
async def refresh_tokens(body: RefreshIn, session: DbSession, auth: Auth) -> TokenPairOut:
    async with _kept_when_refused(session):
        pair = await auth.renew(session, body.refresh_token, _now())
    return TokenPairOut.of(pair)


@router.post("/api/v1/auth/logout", status_code=204, tags=["auth"])
async def logout(body: RefreshIn, session: DbSession, auth: Auth) -> Response:
    await auth.logout(session, body.refresh_token, _now())
    return Response(status_code=204)


@router.post("/api/v1/auth/keys/rotate", status_code=201, response_model=KeyOut, tags=["auth"])
async def rotate_signing_key(request: Request, _: AdminUser, keys: Keys) -> KeyOut:
    key = await keys.rotate()
    await request.app.state.verifier.refresh()  # this replica verifies the new kid at once
    return KeyOut(kid=key.kid, created_at=key.created_at)


@router.get("/.well-known/jwks.json", tags=["auth"])
async def jwks(keys: Keys, response: Response) -> dict[str, list[dict[str, str]]]:
    response.headers["Cache-Control"] = "public, max-age=60"
    return await keys.jwks()


# --- users -----------------------------------------------------------------------------------------

@router.get("/api/v1/users/me", response_model=MeOut, tags=["users"])
async def me(principal: CurrentUser, session: DbSession) -> MeOut:
    user = await users.active(session, _account(principal))
    return MeOut(id=user.id, email=user.email, roles=list(user.roles), plan=user.plan,
                 created_at=user.created_at)


@router.get("/api/v1/users", response_model=UsersPageOut, tags=["users"])
async def list_users(_: AdminUser, session: DbSession, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                     offset: Annotated[int, Query(ge=0)] = 0,
                     email: Annotated[str | None, Query(max_length=320)] = None) -> UsersPageOut:
    page = await users.page(session, limit=limit, offset=offset, email_contains=email)
    return UsersPageOut(items=[UserOut.of(u) for u in page.items], total=page.total, limit=page.limit,
                        offset=page.offset)


@router.get("/api/v1/users/{user_id}", response_model=UserOut, tags=["users"])
async def get_user(user_id: UUID, _: AdminUser, session: DbSession) -> UserOut:
    return UserOut.of(await users.get(session, user_id))


@router.patch("/api/v1/users/{user_id}", response_model=UserOut, tags=["users"])
async def change_user(user_id: UUID, body: UserChangeIn, admin: AdminUser, session: DbSession) -> UserOut:
    change = users.UserChange(roles=body.roles, plan=body.plan, disabled=body.disabled)
    return UserOut.of(await users.update(session, user_id, change, admin_id=admin.id, now=_now()))


# --- API keys --------------------------------------------------------------------------------------

@router.post("/api/v1/api-keys", status_code=201, response_model=ApiKeyCreatedOut, tags=["api-keys"])
async def create_api_key(body: ApiKeyIn, principal: CurrentUser, session: DbSession) -> ApiKeyCreatedOut:
    owner = _password_signed_in(principal)
    await users.active(session, owner)
    key, full = await api_keys.create(session, owner, name=body.name, expires_at=body.expires_at, now=_now())
    return ApiKeyCreatedOut(**ApiKeyOut.of(key).model_dump(), key=full)


@router.get("/api/v1/api-keys", response_model=list[ApiKeyOut], tags=["api-keys"])
async def list_api_keys(principal: CurrentUser, session: DbSession) -> list[ApiKeyOut]:
    keys = await api_keys.list_for(session, _account(principal))
    return [ApiKeyOut.of(k) for k in keys]


@router.delete("/api/v1/api-keys/{key_id}", status_code=204, tags=["api-keys"])
async def revoke_api_key(key_id: UUID, principal: CurrentUser, session: DbSession) -> Response:
    await api_keys.revoke(session, _password_signed_in(principal), key_id, _now())
    return Response(status_code=204)


# --- service-internal ------------------------------------------------------------------------------

@router.post("/internal/api-keys/exchange", response_model=AccessTokenOut, tags=["internal"])
async def exchange_api_key(body: ApiKeyExchangeIn, session: DbSession, tokens: Tokens) -> AccessTokenOut:
    now = _now()
    key, owner = await api_keys.authenticate(session, body.key, now)
    issued = await tokens.for_user(user_id=owner.id, email=owner.email, roles=owner.roles, plan=owner.plan,
                                   now=now, api_key_id=key.id, not_after=key.expires_at)
    return AccessTokenOut(access_token=issued.access_token, expires_in=issued.expires_in)


@router.post("/internal/service-token", response_model=AccessTokenOut, tags=["internal"])
async def service_token(body: ServiceTokenIn, request: Request, tokens: Tokens) -> AccessTokenOut:
    settings: Settings = request.app.state.settings
    shared = settings.service_client_secret.get_secret_value() if settings.service_client_secret else None
    service_credentials.check(body.service, body.secret, shared)
    issued = await tokens.for_service(body.service, _now())
    return AccessTokenOut(access_token=issued.access_token, expires_in=issued.expires_in)
