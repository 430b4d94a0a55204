"""The bootstrapped admin and what only an admin may do."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import jwt
from fastapi import FastAPI
from user_service import users
from user_service.settings import Settings

AdminHeaders = Callable[[], Awaitable[dict[str, str]]]
PASSWORD = "correct horse Battery 9"


async def test_admin_is_bootstrapped_from_settings(client: httpx.AsyncClient, settings: Settings,
                                                   admin_headers: AdminHeaders) -> None:
    headers = await admin_headers()
    me = await client.get("/api/v1/users/me", headers=headers)
    assert me.status_code == 200
    assert me.json()["email"] == settings.admin_email
    assert set(me.json()["roles"]) == {"user", "admin"}


async def test_bootstrap_is_idempotent(app: FastAPI, settings: Settings, client: httpx.AsyncClient,
                                       admin_headers: AdminHeaders) -> None:
    assert settings.admin_email and settings.admin_password
    again = await users.bootstrap_admin(app.state.db, app.state.passwords, email=settings.admin_email,
                                        password=settings.admin_password.get_secret_value())
    listed = await client.get("/api/v1/users", params={"email": settings.admin_email},
                              headers=await admin_headers())
    assert [u["id"] for u in listed.json()["items"]] == [str(again.id)]


async def test_users_list_is_admin_only_and_paged(client: httpx.AsyncClient, sign_up: Any,
                                                  admin_headers: AdminHeaders) -> None:
    user = await sign_up()
    assert (await client.get("/api/v1/users", headers=user["headers"])).status_code == 403
    page = await client.get("/api/v1/users", params={"limit": 1, "offset": 0}, headers=await admin_headers())
    assert page.status_code == 200
    body = page.json()
    assert body["limit"] == 1 and len(body["items"]) == 1 and body["total"] >= 2
    found = await client.get("/api/v1/users", params={"email": user["email"]}, headers=await admin_headers())
    assert [u["id"] for u in found.json()["items"]] == [user["id"]]


async def test_admin_changes_plan_and_roles_and_the_next_token_shows_them(
        client: httpx.AsyncClient, sign_up: Any, admin_headers: AdminHeaders) -> None:
    user = await sign_up()
    change = {"plan": "pro", "roles": ["user", "analyst"]}
    changed = await client.patch(f"/api/v1/users/{user['id']}", json=change, headers=await admin_headers())
    assert changed.status_code == 200
    assert changed.json()["plan"] == "pro"
    renewed = await client.post("/api/v1/auth/refresh", json={"refresh_token": user["refresh_token"]})
    claims = jwt.decode(renewed.json()["access_token"], options={"verify_signature": False})
    assert claims["plan"] == "pro"
    assert claims["roles"] == ["user", "analyst"]


async def test_unknown_plan_is_422(client: httpx.AsyncClient, sign_up: Any,
                                   admin_headers: AdminHeaders) -> None:
    user = await sign_up()
    response = await client.patch(f"/api/v1/users/{user['id']}", json={"plan": "platinum"},
                                  headers=await admin_headers())
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "plan"


async def test_disabling_ends_sessions_and_refuses_sign_in(client: httpx.AsyncClient, sign_up: Any,
                                                           admin_headers: AdminHeaders) -> None:
    user = await sign_up()
    disabled = await client.patch(f"/api/v1/users/{user['id']}", json={"disabled": True},
                                  headers=await admin_headers())
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    refresh = await client.post("/api/v1/auth/refresh", json={"refresh_token": user["refresh_token"]})
    assert refresh.status_code == 401
    login = await client.post("/api/v1/auth/login", json={"email": user["email"], "password": PASSWORD})
    assert login.status_code == 401
    me = await client.get("/api/v1/users/me", headers=user["headers"])
    assert me.status_code == 403


async def test_an_admin_cannot_lock_themselves_out(client: httpx.AsyncClient,
                                                   admin_headers: AdminHeaders) -> None:
    headers = await admin_headers()
    me = (await client.get("/api/v1/users/me", headers=headers)).json()
    response = await client.patch(f"/api/v1/users/{me['id']}", json={"roles": ["user"]}, headers=headers)
    assert response.status_code == 422
