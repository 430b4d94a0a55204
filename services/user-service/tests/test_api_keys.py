"""API keys: created once, listed without secrets, exchanged for tokens by the gateway, revoked."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import httpx
import jwt
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def create_key(client: httpx.AsyncClient, user: dict[str, Any], name: str = "script") -> dict[str, Any]:
    response = await client.post("/api/v1/api-keys", json={"name": name}, headers=user["headers"])
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_create_then_exchange_gives_a_token_for_the_owner(client: httpx.AsyncClient,
                                                                sign_up: Any) -> None:
    user = await sign_up()
    created = await create_key(client, user)
    assert created["key"].startswith(f"atp_{created['prefix']}_")
    assert created["name"] == "script"

    exchanged = await client.post("/internal/api-keys/exchange", json={"key": created["key"]})
    assert exchanged.status_code == 200
    body = exchanged.json()
    assert set(body) == {"access_token", "expires_in"}
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == user["id"]
    assert claims["api_key_id"] == created["id"]
    assert claims["kind"] == "user" and claims["email"] == user["email"]

    me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["id"] == user["id"]


async def test_listing_shows_no_secret_and_records_last_use(client: httpx.AsyncClient, sign_up: Any) -> None:
    user = await sign_up()
    created = await create_key(client, user)
    listed = await client.get("/api/v1/api-keys", headers=user["headers"])
    assert listed.status_code == 200
    [row] = listed.json()
    assert "key" not in row and row["prefix"] == created["prefix"]
    assert row["last_used_at"] is None
    await client.post("/internal/api-keys/exchange", json={"key": created["key"]})
    [row] = (await client.get("/api/v1/api-keys", headers=user["headers"])).json()
    assert row["last_used_at"] is not None


async def test_revoked_key_is_refused(client: httpx.AsyncClient, sign_up: Any) -> None:
    user = await sign_up()
    created = await create_key(client, user)
    revoked = await client.delete(f"/api/v1/api-keys/{created['id']}", headers=user["headers"])
    assert revoked.status_code == 204
    exchanged = await client.post("/internal/api-keys/exchange", json={"key": created["key"]})
    assert exchanged.status_code == 401
    assert (await client.get("/api/v1/api-keys", headers=user["headers"])).json() == []


async def test_expired_key_is_refused(client: httpx.AsyncClient, sign_up: Any,
                                      db_session: AsyncSession) -> None:
    user = await sign_up()
    created = await create_key(client, user)
    expire = text("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = :id")
    await db_session.execute(expire, {"id": UUID(created["id"])})
    exchanged = await client.post("/internal/api-keys/exchange", json={"key": created["key"]})
    assert exchanged.status_code == 401


async def test_unknown_or_malformed_or_wrong_secret_keys_are_refused(client: httpx.AsyncClient,
                                                                     sign_up: Any) -> None:
    user = await sign_up()
    created = await create_key(client, user)
    wrong_secret = f"atp_{created['prefix']}_{'x' * 43}"
    for key in (wrong_secret, "atp_0123456789ab_secret", "not a key", ""):
        response = await client.post("/internal/api-keys/exchange", json={"key": key})
        assert response.status_code == 401, key


async def test_another_users_key_cannot_be_revoked(client: httpx.AsyncClient, sign_up: Any) -> None:
    owner = await sign_up()
    other = await sign_up()
    created = await create_key(client, owner)
    response = await client.delete(f"/api/v1/api-keys/{created['id']}", headers=other["headers"])
    assert response.status_code == 404
    assert (await client.delete(f"/api/v1/api-keys/{uuid4()}", headers=owner["headers"])).status_code == 404


async def test_a_key_cannot_mint_more_keys(client: httpx.AsyncClient, sign_up: Any) -> None:
    user = await sign_up()
    created = await create_key(client, user)
    token = (await client.post("/internal/api-keys/exchange", json={"key": created["key"]})).json()
    response = await client.post("/api/v1/api-keys", json={"name": "more"},
                                 headers={"Authorization": f"Bearer {token['access_token']}"})
    assert response.status_code == 403


async def test_expiry_in_the_past_is_422(client: httpx.AsyncClient, sign_up: Any) -> None:
    user = await sign_up()
    body = {"name": "old", "expires_at": "2000-01-01T00:00:00Z"}
    response = await client.post("/api/v1/api-keys", json=body, headers=user["headers"])
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "expires_at"
