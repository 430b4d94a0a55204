"""The feed API: who may do what, what a bad definition answers, and the feed lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx
from data_bridge import store

from aitrading.testing import TokenIssuer

SYNTHETIC = {"rate": 50, "seed": 7}


async def wait_status(client: httpx.AsyncClient, feed_id: str, status: str,
                      timeout_s: float = 10.0) -> dict[str, Any]:
    async def poll() -> dict[str, Any]:
        while True:
            body = (await client.get(f"/api/v1/feeds/{feed_id}")).json()
            if body["status"] == status:
                return body
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), timeout_s)


async def test_only_admins_create_feeds_and_signed_in_users_see_them(
        bridge: Any, token_issuer: TokenIssuer, symbol: Callable[..., str]) -> None:
    async with bridge() as running:
        user = {"Authorization": f"Bearer {token_issuer.token()}"}
        definition = {"kind": "synthetic", "symbols": [symbol()], "params": SYNTHETIC}
        refused = await running.client.post("/api/v1/feeds", json=definition, headers=user)
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("application/problem+json")
        anonymous = await running.client.post("/api/v1/feeds", json=definition, headers={"Authorization": ""})
        assert anonymous.status_code == 401

        created = await running.client.post("/api/v1/feeds", json=definition)
        assert created.status_code == 201, created.text
        feed = created.json()
        listed = await running.client.get("/api/v1/feeds", headers=user)
        assert listed.status_code == 200
        assert feed["id"] in [f["id"] for f in listed.json()]
        stop = await running.client.post(f"/api/v1/feeds/{feed['id']}/stop", headers=user)
        assert stop.status_code == 403
        assert (await running.client.delete(f"/api/v1/feeds/{feed['id']}", headers=user)).status_code == 403


async def test_bad_definitions_are_422_naming_the_field(bridge: Any, symbol: Callable[..., str]) -> None:
    async with bridge() as running:
        post = running.client.post
        cases = [
            ({"kind": "telepathy", "symbols": [symbol()]}, "kind"),
            ({"kind": "synthetic", "symbols": []}, "symbols"),
            ({"kind": "synthetic", "symbols": ["bad symbol!"]}, "symbols.0"),
            ({"kind": "synthetic", "symbols": [symbol()], "params": {"rate": -1}}, "params.rate"),
            ({"kind": "synthetic", "symbols": [symbol()], "params": {"start_price": "abc"}},
             "params.start_price"),
            ({"kind": "synthetic", "symbols": [symbol()], "params": {"colour": "red"}}, "params.colour"),
            ({"kind": "replay", "symbols": ["AAPL"]}, "symbols"),
            ({"kind": "replay", "symbols": ["SPX"], "params": {"timeframe": "1h"}}, "params.timeframe"),
            ({"kind": "replay", "symbols": ["SPX", "NDX"], "params": {"publish_as": "X"}},
             "params.publish_as"),
            ({"kind": "replay", "symbols": ["SPX"], "params": {"start": "2010-01-01", "end": "2009-01-01"}},
             "params"),
            ({"symbols": ["SPX"]}, "kind"),
        ]
        for body, field in cases:
            answer = await post("/api/v1/feeds", json=body)
            assert answer.status_code == 422, (body, answer.text)
            fields = [e["field"] for e in answer.json()["errors"]]
            assert field in fields, (body, fields)
        assert (await running.client.get("/api/v1/feeds")).json() == []


async def test_a_feed_stops_starts_and_is_deleted(bridge: Any, symbol: Callable[..., str]) -> None:
    async with bridge() as running:
        client = running.client
        name = symbol()
        feed = (await client.post("/api/v1/feeds", json={"kind": "synthetic", "symbols": [name.lower()],
                                                          "params": SYNTHETIC})).json()
        assert feed["symbols"] == [name]
        assert feed["venue"] == "synthetic" and feed["synthetic"] is True
        assert feed["params"]["rate"] == 50 and feed["params"]["vol"] == 0.6  # defaults filled in
        running_feed = await wait_status(client, feed["id"], "running")
        await asyncio.sleep(0.3)
        assert (await client.get(f"/api/v1/feeds/{feed['id']}")).json()["counters"]["ticks"] > 0

        stopped = await client.post(f"/api/v1/feeds/{feed['id']}/stop")
        assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
        assert stopped.json()["desired"] == "stopped"
        ticks = stopped.json()["counters"]["ticks"]
        await asyncio.sleep(0.3)
        assert (await client.get(f"/api/v1/feeds/{feed['id']}")).json()["counters"]["ticks"] == ticks

        started = await client.post(f"/api/v1/feeds/{feed['id']}/start")
        assert started.status_code == 200 and started.json()["status"] in ("starting", "running")
        await wait_status(client, feed["id"], "running")
        assert running_feed["created_at"] == started.json()["created_at"]

        assert (await client.delete(f"/api/v1/feeds/{feed['id']}")).status_code == 204
        assert (await client.get(f"/api/v1/feeds/{feed['id']}")).status_code == 404
        assert (await client.post(f"/api/v1/feeds/{feed['id']}/start")).status_code == 404
        assert (await client.get("/api/v1/feeds/not-a-uuid")).status_code == 422


async def test_running_feeds_come_back_after_a_restart_and_stopped_ones_do_not(
        bridge: Any, make_settings: Any, symbol: Callable[..., str]) -> None:
    settings = make_settings()
    async with bridge(settings) as first:
        kept = (await first.client.post("/api/v1/feeds", json={"kind": "synthetic", "symbols": [symbol()],
                                                                "params": SYNTHETIC})).json()
        halted = (await first.client.post("/api/v1/feeds", json={"kind": "synthetic", "symbols": [symbol()],
                                                                  "params": SYNTHETIC})).json()
        await wait_status(first.client, kept["id"], "running")
        await first.client.post(f"/api/v1/feeds/{halted['id']}/stop")
        await asyncio.sleep(0.2)
        before = (await first.client.get(f"/api/v1/feeds/{kept['id']}")).json()["counters"]["ticks"]
    async with bridge(settings) as second:
        back = await wait_status(second.client, kept["id"], "running")
        assert back["counters"]["ticks"] >= before  # counters carry on
        assert (await second.client.get(f"/api/v1/feeds/{halted['id']}")).json()["status"] == "stopped"
        assert second.app.state.feeds.active  # the manager runs it here
        assert kept["id"] in [str(c.id) for c in second.app.state.feeds.active()]
        assert halted["id"] not in [str(c.id) for c in second.app.state.feeds.active()]


async def test_default_feeds_start_on_first_boot_only(bridge: Any, make_settings: Any,
                                                      symbol: Callable[..., str]) -> None:
    name = symbol("SYN-")
    settings = make_settings(default_feeds=[{"kind": "synthetic", "symbols": [name], "params": {"rate": 5}},
                                            {"kind": "nonsense", "symbols": ["X"]}])
    async with bridge(settings) as first:
        feeds = (await first.client.get("/api/v1/feeds")).json()
        assert [f["symbols"] for f in feeds] == [[name]]  # the invalid default is skipped, not fatal
        await wait_status(first.client, feeds[0]["id"], "running")
        assert (await first.client.delete(f"/api/v1/feeds/{feeds[0]['id']}")).status_code == 204
    async with bridge(settings) as second:
        assert (await second.client.get("/api/v1/feeds")).json() == []


async def test_one_replica_runs_a_feed_and_another_takes_over_when_it_goes(
        bridge: Any, make_settings: Any, symbol: Callable[..., str]) -> None:
    settings = make_settings(feed_claim_interval_s=0.25)

    def runs(running: Any, feed_id: str) -> bool:
        return feed_id in [str(c.id) for c in running.app.state.feeds.active()]

    async with bridge(settings) as second:
        async with bridge(settings) as first:
            feed = (await first.client.post("/api/v1/feeds", json={"kind": "synthetic", "symbols": [symbol()],
                                                                    "params": SYNTHETIC})).json()
            await wait_status(first.client, feed["id"], "running")
            await asyncio.sleep(3 * settings.feed_claim_interval_s)
            assert runs(first, feed["id"]) and not runs(second, feed["id"])
            # Stopped through the replica that does not run it: the runner lets go on its next round.
            stopped = await second.client.post(f"/api/v1/feeds/{feed['id']}/stop")
            assert stopped.json()["status"] == "stopped"
            await asyncio.sleep(3 * settings.feed_claim_interval_s)
            assert not runs(first, feed["id"]) and not runs(second, feed["id"])
            await first.client.post(f"/api/v1/feeds/{feed['id']}/start")  # taken by the one asked, as a rule
            await asyncio.sleep(3 * settings.feed_claim_interval_s)
            assert runs(first, feed["id"]) != runs(second, feed["id"])  # exactly one runs it
        # The first instance went away: the second takes the feed over.
        for _ in range(50):
            if runs(second, feed["id"]):
                break
            await asyncio.sleep(0.1)
        assert runs(second, feed["id"])
        assert (await second.client.get(f"/api/v1/feeds/{feed['id']}")).json()["status"] == "running"


async def test_a_late_running_save_never_revives_a_finished_or_stopped_feed(bridge: Any) -> None:
    async with bridge() as running:
        db = running.app.state.db
        now = datetime.now(UTC)
        ids = [uuid4(), uuid4()]
        async with db.sessionmaker() as session, session.begin():
            for feed_id in ids:
                await store.insert_feed(session, id=feed_id, kind="replay", venue="replay", symbols=["SPX"],
                                        params={}, synthetic=False, now=now)
            await store.save_state(session, ids[0], status="finished", error=None, counters={"bars": 5},
                                   now=now)
            await store.set_desired(session, ids[1], "stopped", "stopped", now)
        async with db.sessionmaker() as session, session.begin():
            for feed_id in ids:  # what a reconcile round that read the feeds a moment earlier would write
                await store.save_state(session, feed_id, status="running", error=None, counters={"bars": 3},
                                       now=now)
        async with db.sessionmaker() as session:
            finished, stopped = [await store.feed_by_id(session, feed_id) for feed_id in ids]
            assert finished is not None and (finished.status, finished.counters) == ("finished", {"bars": 5})
            assert stopped is not None and stopped.status == "stopped"
            assert [row.id for row in await store.feeds_to_run(session)] == []
