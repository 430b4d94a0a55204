"""`users.registered` leaves through the outbox and reaches NATS once the registration commits."""

from __future__ import annotations

import asyncio
from uuid import uuid4

import httpx

from aitrading.events import Event, EventBus


async def test_registration_publishes_users_registered(committing_client: httpx.AsyncClient,
                                                       nats_url: str) -> None:
    email = f"event-{uuid4().hex[:12]}@example.com"
    seen: asyncio.Queue[Event] = asyncio.Queue()

    async def on_registered(event: Event) -> None:
        if event.data.get("email") == email:
            await seen.put(event)

    listener = EventBus(nats_url, source="user-service-test")
    listener.subscribe("users.registered", on_registered)
    await listener.start()
    try:
        response = await committing_client.post("/api/v1/auth/register",
                                                json={"email": email, "password": "Event password 1"})
        assert response.status_code == 201
        event = await asyncio.wait_for(seen.get(), timeout=15)
    finally:
        await listener.stop()
    assert event.type == "users.registered"
    assert event.subject == "users.registered"
    assert event.source == "user-service"
    assert event.data["user_id"] == response.json()["id"]
    assert event.data["plan"] == "free" and event.data["roles"] == ["user"]
