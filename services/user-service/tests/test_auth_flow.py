"""Register, sign in, who am I, refresh rotation, sign out, lockout — through the HTTP API."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from user_service.passwords import Passwords

PASSWORD = "correct horse Battery 9"


def email() -> str:
    return f"user-{uuid4().hex[:12]}@example.com"


async def test_register_login_and_me(client: httpx.AsyncClient) -> None:
    address = email()
    registered = await client.post("/api/v1/auth/register", json={"email": address, "password": PASSWORD})
    assert registered.status_code == 201
    body = registered.json()
    assert set(body) == {"id", "email", "created_at"}
    assert body["email"] == address

    login = await client.post("/api/v1/auth/login", json={"email": address.upper(), "password": PASSWORD})
    assert login.status_code == 200
    tokens = login.json()
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900
    assert tokens["access_token"] and tokens["refresh_token"]

    me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200
    assert me.json() == {"id": body["id"], "email": address, "roles": ["user"], "plan": "free",
                         "created_at": body["created_at"]}


async def test_me_without_a_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/users/me")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_duplicate_email_in_another_case_is_409(client: httpx.AsyncClient) -> None:
    address = email()
    first = await client.post("/api/v1/auth/register", json={"email": address, "password": PASSWORD})
    assert first.status_code == 201
    again = await client.post("/api/v1/auth/register", json={"email": address.upper(), "password": PASSWORD})
    assert again.status_code == 409
    assert "already exists" in again.json()["detail"]


@pytest.mark.parametrize(("password", "reason"), [
    ("Short1!", "at least 10 characters"),
    ("alllowercaseletters", "it has only lowercase letters"),
    ("12345678901234", "it has only digits"),
])
async def test_weak_password_is_422_naming_the_field_and_why(client: httpx.AsyncClient, password: str,
                                                              reason: str) -> None:
    response = await client.post("/api/v1/auth/register", json={"email": email(), "password": password})
    assert response.status_code == 422
    problem = response.json()
    assert [e["field"] for e in problem["errors"]] == ["password"]
    assert reason in problem["detail"]


@pytest.mark.parametrize("address",
                         ["no-at-sign.example.com", "a@localhost", "two@@example.com", "sp ace@x.io"])
async def test_bad_email_is_422_naming_the_field(client: httpx.AsyncClient, address: str) -> None:
    response = await client.post("/api/v1/auth/register", json={"email": address, "password": PASSWORD})
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["email"]


async def test_wrong_password_and_unknown_email_answer_the_same_401(client: httpx.AsyncClient,
                                                                    sign_up: Any) -> None:
    user = await sign_up()
    wrong = await client.post("/api/v1/auth/login", json={"email": user["email"], "password": "Wrong pass 1"})
    unknown = await client.post("/api/v1/auth/login", json={"email": email(), "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]


async def test_five_failures_lock_the_email_with_retry_after(client: httpx.AsyncClient, sign_up: Any,
                                                             db_session: AsyncSession) -> None:
    user = await sign_up()
    for _ in range(5):
        failed = await client.post("/api/v1/auth/login",
                                   json={"email": user["email"], "password": "Nope nope 1"})
        assert failed.status_code == 401
    locked = await client.post("/api/v1/auth/login", json={"email": user["email"], "password": PASSWORD})
    assert locked.status_code == 429
    assert locked.headers["content-type"].startswith("application/problem+json")
    assert 1 <= int(locked.headers["Retry-After"]) <= 30
    # The count lives in Postgres, where every replica sees it.
    stored = (await db_session.execute(text("SELECT failures FROM login_failures WHERE email_key = :e"),
                                       {"e": user["email"].lower()})).scalar_one()
    assert stored == 5


async def test_lock_grows_with_each_failure_after_it_ends(client: httpx.AsyncClient, sign_up: Any,
                                                          db_session: AsyncSession) -> None:
    user = await sign_up()
    for _ in range(5):
        await client.post("/api/v1/auth/login", json={"email": user["email"], "password": "Nope nope 1"})
    # Let the first lock run out, then fail once more: the next lock is twice as long.
    await db_session.execute(text("UPDATE login_failures SET locked_until = now() - interval '1 second' "
                                  "WHERE email_key = :e"), {"e": user["email"]})
    failed = await client.post("/api/v1/auth/login", json={"email": user["email"], "password": "Nope nope 1"})
    assert failed.status_code == 401
    locked = await client.post("/api/v1/auth/login", json={"email": user["email"], "password": PASSWORD})
    assert locked.status_code == 429
    assert 30 < int(locked.headers["Retry-After"]) <= 60


async def test_unknown_emails_are_locked_too(client: httpx.AsyncClient) -> None:
    address = email()
    for _ in range(5):
        await client.post("/api/v1/auth/login", json={"email": address, "password": PASSWORD})
    response = await client.post("/api/v1/auth/login", json={"email": address, "password": PASSWORD})
    assert response.status_code == 429


async def test_success_resets_the_failure_count(client: httpx.AsyncClient, sign_up: Any) -> None:
    user = await sign_up()
    for _ in range(2):
        for _ in range(4):
            failed = await client.post("/api/v1/auth/login",
                                       json={"email": user["email"], "password": "Nope nope 1"})
            assert failed.status_code == 401
        ok = await client.post("/api/v1/auth/login", json={"email": user["email"], "password": PASSWORD})
        assert ok.status_code == 200


async def test_refresh_rotates_and_reuse_revokes_the_family(client: httpx.AsyncClient, sign_up: Any) -> None:
    user = await sign_up()
    first = user["refresh_token"]
    rotated = await client.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert rotated.status_code == 200
    second = rotated.json()["refresh_token"]
    assert second != first
    assert rotated.json()["token_type"] == "bearer"
    me = await client.get("/api/v1/users/me",
                          headers={"Authorization": f"Bearer {rotated.json()['access_token']}"})
    assert me.status_code == 200

    reused = await client.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert reused.status_code == 401
    assert "already used" in reused.json()["detail"]
    # The thief's copy is refused, and so is the newest token of that family.
    after = await client.post("/api/v1/auth/refresh", json={"refresh_token": second})
    assert after.status_code == 401


async def test_reuse_leaves_other_sessions_alone(client: httpx.AsyncClient, sign_up: Any) -> None:
    user = await sign_up()
    other = await client.post("/api/v1/auth/login", json={"email": user["email"], "password": PASSWORD})
    await client.post("/api/v1/auth/refresh", json={"refresh_token": user["refresh_token"]})
    await client.post("/api/v1/auth/refresh", json={"refresh_token": user["refresh_token"]})
    still = await client.post("/api/v1/auth/refresh", json={"refresh_token": other.json()["refresh_token"]})
    assert still.status_code == 200


async def test_unknown_refresh_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/auth/refresh", json={"refresh_token": "not-a-token"})
    assert response.status_code == 401


async def test_logout_ends_the_family(client: httpx.AsyncClient, sign_up: Any) -> None:
    user = await sign_up()
    rotated = await client.post("/api/v1/auth/refresh", json={"refresh_token": user["refresh_token"]})
    out = await client.post("/api/v1/auth/logout", json={"refresh_token": rotated.json()["refresh_token"]})
    assert out.status_code == 204
    refused = await client.post("/api/v1/auth/refresh",
                                json={"refresh_token": rotated.json()["refresh_token"]})
    assert refused.status_code == 401
    # Signing out with a token nobody knows is not an error either.
    assert (await client.post("/api/v1/auth/logout", json={"refresh_token": "unknown"})).status_code == 204


async def test_login_rehashes_a_password_hashed_with_old_parameters(client: httpx.AsyncClient, sign_up: Any,
                                                                    db_session: AsyncSession) -> None:
    user = await sign_up()
    old = await Passwords(time_cost=2, memory_kib=1024, parallelism=1).hash(PASSWORD)
    await db_session.execute(text("UPDATE users SET password_hash = :h WHERE id = :id"),
                             {"h": old, "id": UUID(user["id"])})
    login = await client.post("/api/v1/auth/login", json={"email": user["email"], "password": PASSWORD})
    assert login.status_code == 200
    stored = (await db_session.execute(text("SELECT password_hash FROM users WHERE id = :id"),
                                       {"id": UUID(user["id"])})).scalar_one()
    assert stored != old and stored.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
