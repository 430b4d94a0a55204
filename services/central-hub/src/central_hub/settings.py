"""central-hub settings: when an instance counts as stale or gone, and which services the fleet has."""

from __future__ import annotations

from aitrading.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "central-hub"

    # An instance is stale once its last heartbeat is older than this: three missed beats at the
    # platform's default interval of 5 s (HEARTBEAT_INTERVAL_S).
    stale_after_s: float = 15.0
    # A silent instance is forgotten after this (it died without announcing `fleet.stopped`); its
    # service stays known and is then reported by its /health probe alone.
    forget_after_s: float = 300.0
    # How long a /health probe may take before the service counts as unreachable.
    probe_timeout_s: float = 1.0
