"""The fleet as heartbeats and probes show it: instances per service, staleness, service and fleet status.

Pure: every function takes the current time, nothing here does I/O. The view lives in memory only;
after a restart the heartbeats rebuild it within one interval.

Service status, from the /health probe (when the service has an address) and its instances:

| probe                     | instances                | status        |
|---------------------------|--------------------------|---------------|
| answered 200, status ok   | none known, or any fresh | `healthy`     |
| answered 200, status ok   | all stale                | `stale`       |
| answered anything else    | -                        | `unhealthy`   |
| no answer                 | some fresh               | `unhealthy`   |
| no answer                 | none fresh               | `unreachable` |
| no address to probe       | some fresh / all stale / none | `healthy` / `stale` / `unreachable` |

The fleet is `ok` when every service is healthy, `down` when nothing answers or a service on the
entry path (the gateway and what it depends on) does not, and `degraded` otherwise.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

HEALTHY: Final = "healthy"
STALE: Final = "stale"
UNHEALTHY: Final = "unhealthy"
UNREACHABLE: Final = "unreachable"
ServiceState = Literal["healthy", "stale", "unhealthy", "unreachable"]
FleetState = Literal["ok", "degraded", "down"]
ANSWERING: frozenset[str] = frozenset({HEALTHY, STALE})


class Heartbeat(BaseModel):
    """The data of a `fleet.heartbeat.<service>` / `fleet.stopped.<service>` event (aitrading.service)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    service: str = Field(min_length=1)
    instance: str = Field(min_length=1)
    version: str
    host: str
    port: int
    pid: int
    started_at: datetime
    in_flight: int = Field(ge=0)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Heartbeat:
        """The heartbeat in an event's data; raises ValueError when the data is not one."""
        return cls.model_validate(data)


@dataclass(frozen=True, slots=True)
class InstanceState:
    """One running process of a service as last heard from."""

    beat: Heartbeat
    last_seen: datetime
    age_s: float
    stale: bool

    @property
    def service(self) -> str:
        return self.beat.service


@dataclass(frozen=True, slots=True)
class Probe:
    """The outcome of one GET /health: `status_code` None when no answer came (`error` says why)."""

    latency_ms: float | None
    status_code: int | None = None
    version: str | None = None
    reported_status: str | None = None
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.status_code is not None

    @property
    def ok(self) -> bool:
        return self.status_code == 200 and self.reported_status == "ok"


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    name: str
    status: ServiceState
    version: str | None
    latency_ms: float | None
    instances: int  # fresh ones
    last_seen: datetime | None
    error: str | None


class FleetView:
    """Instances by (service, instance id), updated by heartbeats and stop announcements."""

    def __init__(self, *, stale_after_s: float, forget_after_s: float) -> None:
        if stale_after_s <= 0 or forget_after_s < stale_after_s:
            raise ValueError("need 0 < stale_after_s <= forget_after_s")
        self.stale_after_s = stale_after_s
        self.forget_after_s = forget_after_s
        self._seen: dict[tuple[str, str], tuple[Heartbeat, datetime]] = {}
        self._services: set[str] = set()

    def record_heartbeat(self, beat: Heartbeat, received_at: datetime) -> None:
        # The hub's own receive time, not the sender's clock: staleness must not depend on clock skew.
        self._seen[(beat.service, beat.instance)] = (beat, received_at)
        self._services.add(beat.service)

    def record_stopped(self, beat: Heartbeat) -> bool:
        """Forget an instance that shut down cleanly; its service stays known. True if it was known."""
        self._services.add(beat.service)
        return self._seen.pop((beat.service, beat.instance), None) is not None

    def forget_silent(self, now: datetime) -> list[Heartbeat]:
        """Drop instances silent for longer than `forget_after_s` (they died without a word)."""
        gone = [key for key, (_, seen) in self._seen.items()
                if (now - seen).total_seconds() > self.forget_after_s]
        return [self._seen.pop(key)[0] for key in gone]

    @property
    def services_heard(self) -> frozenset[str]:
        """Every service that sent a heartbeat or a stop since the view was created."""
        return frozenset(self._services)

    def instances(self, now: datetime, service: str | None = None) -> list[InstanceState]:
        """The known instances (of one service, or all), ordered by service, then start time."""
        states = []
        for (name, _), (beat, seen) in self._seen.items():
            if service is not None and name != service:
                continue
            age_s = max(0.0, (now - seen).total_seconds())
            states.append(InstanceState(beat, seen, age_s, age_s > self.stale_after_s))
        return sorted(states, key=lambda s: (s.beat.service, s.beat.started_at, s.beat.instance))


def service_status(probe: Probe | None, instances: Sequence[InstanceState]) -> ServiceState:
    """One service's status from its probe (None: it has no address) and its instances."""
    fresh = any(not i.stale for i in instances)
    if probe is None:
        if fresh:
            return HEALTHY
        return STALE if instances else UNREACHABLE
    if probe.answered:
        if not probe.ok:
            return UNHEALTHY
        return STALE if instances and not fresh else HEALTHY
    return UNHEALTHY if fresh else UNREACHABLE


def assess_service(name: str, probe: Probe | None, instances: Sequence[InstanceState]) -> ServiceHealth:
    status = service_status(probe, instances)
    fresh = [i for i in instances if not i.stale]
    newest = max(instances, key=lambda i: i.last_seen, default=None)
    version = probe.version if probe is not None and probe.version else None
    if version is None and newest is not None:
        version = newest.beat.version
    error = None
    if status == UNHEALTHY and probe is not None:
        error = probe.error or f"/health answered {probe.status_code}"
        if not probe.answered:
            error = f"{error}; heartbeats are still arriving"
    elif status == UNREACHABLE:
        error = probe.error if probe is not None else "no heartbeat and no address to probe"
    elif status == STALE:
        error = f"no heartbeat for {min(i.age_s for i in instances):.0f}s"
    return ServiceHealth(
        name=name,
        status=status,
        version=version,
        latency_ms=probe.latency_ms if probe is not None and probe.answered else None,
        instances=len(fresh),
        last_seen=newest.last_seen if newest else None,
        error=error,
    )


def fleet_status(services: Iterable[ServiceHealth], entry_path: Collection[str]) -> FleetState:
    statuses = {s.name: s.status for s in services}
    if not any(status in ANSWERING for status in statuses.values()):
        return "down"
    if any(statuses[name] not in ANSWERING for name in entry_path if name in statuses):
        return "down"
    return "ok" if all(status == HEALTHY for status in statuses.values()) else "degraded"
