"""What central-hub consumes: the fleet's heartbeats and stop announcements (core NATS, `fleet.>`).

`fleet.heartbeat.<service>` (every HEARTBEAT_INTERVAL_S from each instance, aitrading.service) and
`fleet.stopped.<service>` (once, at a clean shutdown), both with the data of `Heartbeat`. central-hub
publishes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog

from aitrading.events import Event, EventBus
from aitrading.metrics import ServiceMetrics
from central_hub.fleet_view import FleetView, Heartbeat

FLEET_SUBJECTS = "fleet.>"
HEARTBEAT = "fleet.heartbeat"
STOPPED = "fleet.stopped"

_log = structlog.get_logger("central_hub.events")


Handler = Callable[[Event], Awaitable[None]]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def fleet_handler(view: FleetView, metrics: ServiceMetrics,
                  clock: Callable[[], datetime] = _utcnow) -> Handler:
    received = metrics.counter("fleet_events_total", "Fleet events received by type and service",
                               ("type", "service"))

    async def on_fleet_event(event: Event) -> None:
        if event.type not in (HEARTBEAT, STOPPED):
            return
        try:
            beat = Heartbeat.parse(event.data)
        except ValueError as exc:
            _log.warning("malformed fleet event ignored", event_type=event.type, event_id=str(event.id),
                         source=event.source, error=str(exc)[:300])
            return
        received.labels(event.type, beat.service).inc()
        if event.type == HEARTBEAT:
            view.record_heartbeat(beat, clock())
        elif view.record_stopped(beat):
            _log.info("instance stopped", service=beat.service, instance=beat.instance, host=beat.host)

    return on_fleet_event


def subscribe(bus: EventBus, view: FleetView, metrics: ServiceMetrics) -> None:
    bus.subscribe(FLEET_SUBJECTS, fleet_handler(view, metrics))
