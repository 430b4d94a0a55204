"""Feature sets: create, list, read, replace, rename, delete; validated; each user sees only their own."""

from __future__ import annotations

from collections.abc import Callable
from uuid import uuid4

import httpx
import pytest
from fastapi import FastAPI
from feature_engineering import feature_sets

from aitrading.errors import Conflict
from aitrading.testing import TokenIssuer


@pytest.fixture(scope="module")
def database_service_url() -> str:
    """Feature sets never read bars, so no database-service runs here (a call would find it down)."""
    return "http://127.0.0.1:9"


@pytest.fixture
def new_user(token_issuer: TokenIssuer) -> Callable[[], dict[str, str]]:
    return lambda: {"Authorization": f"Bearer {token_issuer.token(sub=uuid4())}"}


async def test_a_set_is_created_listed_read_replaced_and_deleted(
        client: httpx.AsyncClient, new_user: Callable[[], dict[str, str]]) -> None:
    me = new_user()
    names = ["rsi", " macd_12_26_9_hist ", "rsi"]
    created = await client.post("/api/v1/features/sets", headers=me,
                                json={"name": "momentum", "indicators": names})
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["name"], body["indicators"], body["stream"]) == ("momentum", ["rsi", "macd_12_26_9_hist"],
                                                                  False)
    await client.post("/api/v1/features/sets", headers=me, json={"name": "a-first", "indicators": ["obv"]})
    listed = await client.get("/api/v1/features/sets", headers=me)
    assert [s["name"] for s in listed.json()] == ["a-first", "momentum"]
    assert (await client.get("/api/v1/features/sets/momentum", headers=me)).json() == body

    replaced = await client.put("/api/v1/features/sets/momentum", headers=me,
                                json={"indicators": ["roc_5", "cci_20"], "stream": True})
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["indicators"], replaced.json()["stream"]) == (["roc_5", "cci_20"], True)
    assert replaced.json()["updated_at"] >= body["updated_at"]

    renamed = await client.put("/api/v1/features/sets/momentum", headers=me,
                               json={"name": "fast", "indicators": ["roc_5"]})
    assert renamed.status_code == 200 and renamed.json()["name"] == "fast"
    assert (await client.get("/api/v1/features/sets/momentum", headers=me)).status_code == 404

    assert (await client.delete("/api/v1/features/sets/fast", headers=me)).status_code == 204
    assert (await client.get("/api/v1/features/sets/fast", headers=me)).status_code == 404
    assert (await client.delete("/api/v1/features/sets/fast", headers=me)).status_code == 404
    assert [s["name"] for s in (await client.get("/api/v1/features/sets", headers=me)).json()] == ["a-first"]


async def test_a_name_is_unique_per_user_only(client: httpx.AsyncClient,
                                              new_user: Callable[[], dict[str, str]]) -> None:
    me, someone = new_user(), new_user()
    first = await client.post("/api/v1/features/sets", headers=me,
                              json={"name": "core", "indicators": ["sma"]})
    assert first.status_code == 201
    again = await client.post("/api/v1/features/sets", headers=me,
                              json={"name": "core", "indicators": ["ema"]})
    assert again.status_code == 409
    assert again.json()["errors"] == [{"field": "name", "reason": "already used by another of your sets"}]
    theirs = await client.post("/api/v1/features/sets", headers=someone,
                               json={"name": "core", "indicators": ["ema"]})
    assert theirs.status_code == 201
    await client.post("/api/v1/features/sets", headers=me, json={"name": "other", "indicators": ["sma"]})
    clash = await client.put("/api/v1/features/sets/other", headers=me,
                             json={"name": "core", "indicators": ["sma"]})
    assert clash.status_code == 409
    assert (await client.get("/api/v1/features/sets/core", headers=me)).json()["indicators"] == ["sma"]


async def test_another_users_set_does_not_exist_for_you(client: httpx.AsyncClient,
                                                        new_user: Callable[[], dict[str, str]]) -> None:
    owner, intruder = new_user(), new_user()
    await client.post("/api/v1/features/sets", headers=owner, json={"name": "private", "indicators": ["atr"]})
    assert (await client.get("/api/v1/features/sets/private", headers=intruder)).status_code == 404
    put = await client.put("/api/v1/features/sets/private", headers=intruder, json={"indicators": ["sma"]})
    assert put.status_code == 404
    assert (await client.delete("/api/v1/features/sets/private", headers=intruder)).status_code == 404
    assert (await client.get("/api/v1/features/sets", headers=intruder)).json() == []
    kept = await client.get("/api/v1/features/sets/private", headers=owner)
    assert kept.status_code == 200 and kept.json()["indicators"] == ["atr"]


@pytest.mark.parametrize(("body", "errors"), [
    ({"name": "bad", "indicators": ["sma_20", "foo", "rsi_1"]}, [
        {"field": "indicators", "reason": "unknown indicator 'foo'; GET /api/v1/features/catalog lists them"},
        {"field": "indicators", "reason": "rsi_1: timeperiod must be between 2 and 100000"}]),
    ({"name": "empty", "indicators": []},
     [{"field": "indicators", "reason": "must list at least one indicator"}]),
    ({"name": "no way/..", "indicators": ["sma"]}, [{"field": "name", "reason":
      "must be 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"}]),
    ({"name": "many", "indicators": [f"sma_{n}" for n in range(2, 103)]},
     [{"field": "indicators", "reason": "at most 100 indicators"}]),
])
async def test_a_bad_set_is_refused_naming_what_is_wrong_and_nothing_is_stored(
        client: httpx.AsyncClient, new_user: Callable[[], dict[str, str]], body: dict[str, object],
        errors: list[dict[str, str]]) -> None:
    me = new_user()
    response = await client.post("/api/v1/features/sets", headers=me, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == errors
    assert (await client.get("/api/v1/features/sets", headers=me)).json() == []


async def test_a_bad_replacement_leaves_the_set_as_it_was(client: httpx.AsyncClient,
                                                          new_user: Callable[[], dict[str, str]]) -> None:
    me = new_user()
    await client.post("/api/v1/features/sets", headers=me, json={"name": "keep", "indicators": ["willr"]})
    response = await client.put("/api/v1/features/sets/keep", headers=me, json={"indicators": ["willr_1"]})
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "indicators",
                                          "reason": "willr_1: timeperiod must be between 2 and 100000"}]
    assert (await client.get("/api/v1/features/sets/keep", headers=me)).json()["indicators"] == ["willr"]


async def test_sets_need_a_signed_in_caller(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/features/sets")).status_code == 401
    created = await client.post("/api/v1/features/sets", json={"name": "x", "indicators": ["sma"]})
    assert created.status_code == 401


async def test_a_user_at_the_most_sets_allowed_is_refused_another(app: FastAPI) -> None:
    owner = uuid4()
    async with app.state.db.sessionmaker() as session, session.begin():
        for name in ("one", "two"):
            await feature_sets.create(session, owner, name=name, names=["sma"], stream=False,
                                      max_indicators=10, max_sets=2)
        with pytest.raises(Conflict, match="2 feature sets, the most allowed"):
            await feature_sets.create(session, owner, name="three", names=["sma"], stream=False,
                                      max_indicators=10, max_sets=2)
        await session.rollback()
