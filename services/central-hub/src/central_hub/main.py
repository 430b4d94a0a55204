"""The central-hub app: the fleet's registry view (heartbeats), fleet health, the dependency graph.

It keeps no database: everything it knows is rebuilt from heartbeats within one interval.
"""

from __future__ import annotations

from fastapi import FastAPI

from aitrading.service import create_service
from central_hub import api, events
from central_hub.fleet_view import FleetView
from central_hub.probes import HealthProber
from central_hub.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    view = FleetView(stale_after_s=settings.stale_after_s, forget_after_s=settings.forget_after_s)
    prober = HealthProber(timeout_s=settings.probe_timeout_s)
    app = create_service(settings, routers=[api.router], database=False, resources=[prober])
    app.state.fleet = view
    app.state.prober = prober
    events.subscribe(app.state.bus, view, app.state.metrics)
    return app
