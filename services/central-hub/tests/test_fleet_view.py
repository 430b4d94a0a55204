"""The registry view and the status rules, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from central_hub.fleet_view import (
    FleetView,
    Heartbeat,
    InstanceState,
    Probe,
    ServiceHealth,
    assess_service,
    fleet_status,
    service_status,
)
from hypothesis import given
from hypothesis import strategies as st

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def beat(service: str = "trading-engine", instance: str = "a1", version: str = "1.0.0") -> Heartbeat:
    return Heartbeat(service=service, instance=instance, version=version, host="node-1", port=8007, pid=42,
                     started_at=T0, in_flight=0)


def view() -> FleetView:
    return FleetView(stale_after_s=15, forget_after_s=300)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


OK_PROBE = Probe(latency_ms=3.2, status_code=200, version="1.0.1", reported_status="ok")
NO_ANSWER = Probe(latency_ms=None, error="not reachable: ConnectError")


def test_heartbeat_parses_the_data_of_a_fleet_event_and_ignores_extra_keys() -> None:
    data = {**beat().model_dump(mode="json"), "zone": "eu-1"}
    assert Heartbeat.parse(data) == beat()


@pytest.mark.parametrize("broken", [{}, {"service": "x"}, {**beat().model_dump(mode="json"), "port": "http"},
                                    {**beat().model_dump(mode="json"), "in_flight": -1}])
def test_heartbeat_refuses_data_that_is_not_one(broken: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Heartbeat.parse(broken)


def test_an_instance_is_fresh_until_stale_after_s_have_passed_without_a_beat() -> None:
    fleet = view()
    fleet.record_heartbeat(beat(), at(0))
    [fresh] = fleet.instances(at(15))
    [stale] = fleet.instances(at(15.5))
    assert not fresh.stale and fresh.age_s == 15
    assert stale.stale


def test_a_new_beat_refreshes_the_instance_and_its_data() -> None:
    fleet = view()
    fleet.record_heartbeat(beat(version="1.0.0"), at(0))
    fleet.record_heartbeat(beat(version="1.0.1"), at(20))
    [instance] = fleet.instances(at(21))
    assert not instance.stale and instance.beat.version == "1.0.1" and instance.last_seen == at(20)


def test_a_stopped_instance_is_removed_but_its_service_stays_known() -> None:
    fleet = view()
    fleet.record_heartbeat(beat(instance="a1"), at(0))
    fleet.record_heartbeat(beat(instance="a2"), at(0))
    assert fleet.record_stopped(beat(instance="a1")) is True
    assert fleet.record_stopped(beat(instance="a1")) is False
    assert [i.beat.instance for i in fleet.instances(at(1))] == ["a2"]
    assert fleet.record_stopped(beat(instance="a2"))
    assert fleet.instances(at(1)) == [] and fleet.services_heard == {"trading-engine"}


def test_silent_instances_are_forgotten_after_forget_after_s() -> None:
    fleet = view()
    fleet.record_heartbeat(beat(instance="old"), at(0))
    fleet.record_heartbeat(beat(instance="new"), at(250))
    assert [b.instance for b in fleet.forget_silent(at(301))] == ["old"]
    assert [i.beat.instance for i in fleet.instances(at(301))] == ["new"]


def test_instances_filter_by_service_and_sort_by_service() -> None:
    fleet = view()
    fleet.record_heartbeat(beat(service="user-service"), at(0))
    fleet.record_heartbeat(beat(service="api-gateway"), at(0))
    assert [i.service for i in fleet.instances(at(1))] == ["api-gateway", "user-service"]
    assert [i.service for i in fleet.instances(at(1), "user-service")] == ["user-service"]


def test_view_refuses_a_forget_window_shorter_than_staleness() -> None:
    with pytest.raises(ValueError):
        FleetView(stale_after_s=30, forget_after_s=10)


def states(*ages: float) -> list[InstanceState]:
    return [InstanceState(beat(instance=f"i{n}"), at(-age), age, age > 15) for n, age in enumerate(ages)]


@pytest.mark.parametrize(("probe", "ages", "expected"), [
    (OK_PROBE, (), "healthy"),
    (OK_PROBE, (1,), "healthy"),
    (OK_PROBE, (20, 1), "healthy"),
    (OK_PROBE, (20,), "stale"),
    (Probe(latency_ms=2.0, status_code=503, reported_status="unavailable"), (1,), "unhealthy"),
    (Probe(latency_ms=2.0, status_code=200, reported_status="draining"), (), "unhealthy"),
    (NO_ANSWER, (1,), "unhealthy"),
    (NO_ANSWER, (20,), "unreachable"),
    (NO_ANSWER, (), "unreachable"),
    (None, (1,), "healthy"),
    (None, (20,), "stale"),
    (None, (), "unreachable"),
])
def test_service_status_combines_the_probe_and_the_heartbeats(
        probe: Probe | None, ages: tuple[float, ...], expected: str) -> None:
    assert service_status(probe, states(*ages)) == expected


def test_assessment_prefers_the_probed_version_and_counts_fresh_instances() -> None:
    health = assess_service("trading-engine", OK_PROBE, states(1, 2, 40))
    assert health == ServiceHealth("trading-engine", "healthy", "1.0.1", 3.2, 2, at(-1), None)


def test_assessment_of_an_unreachable_service_keeps_its_last_known_version_and_says_why() -> None:
    health = assess_service("trading-engine", NO_ANSWER, states(40))
    assert health.status == "unreachable"
    assert health.version == "1.0.0" and health.latency_ms is None and health.instances == 0
    assert health.error == "not reachable: ConnectError"


def test_assessment_of_a_stale_service_says_how_long_it_has_been_silent() -> None:
    assert assess_service("x", OK_PROBE, states(40, 61)).error == "no heartbeat for 40s"


def test_assessment_of_a_service_alive_on_nats_but_not_on_http() -> None:
    health = assess_service("x", NO_ANSWER, states(1))
    assert health.status == "unhealthy"
    assert health.error == "not reachable: ConnectError; heartbeats are still arriving"


def health_of(name: str, status: str) -> ServiceHealth:
    return ServiceHealth(name, status, None, None, 0, None, None)  # type: ignore[arg-type]


ENTRY = frozenset({"api-gateway", "user-service"})


@pytest.mark.parametrize(("statuses", "expected"), [
    ({"api-gateway": "healthy", "user-service": "healthy", "audit-service": "healthy"}, "ok"),
    ({"api-gateway": "healthy", "user-service": "healthy", "audit-service": "unreachable"}, "degraded"),
    ({"api-gateway": "healthy", "user-service": "stale", "audit-service": "healthy"}, "degraded"),
    ({"api-gateway": "healthy", "user-service": "unhealthy", "audit-service": "healthy"}, "down"),
    ({"api-gateway": "unreachable", "audit-service": "healthy"}, "down"),
    ({"audit-service": "healthy"}, "ok"),  # the entry path counts only where it is deployed
    ({"audit-service": "unreachable"}, "down"),
    ({}, "down"),
])
def test_fleet_status(statuses: dict[str, str], expected: str) -> None:
    assert fleet_status([health_of(n, s) for n, s in statuses.items()], ENTRY) == expected


SERVICE_STATES = st.sampled_from(["healthy", "stale", "unhealthy", "unreachable"])


@given(st.dictionaries(st.sampled_from(["a", "b", "c", "api-gateway"]), SERVICE_STATES, min_size=1))
def test_fleet_is_ok_exactly_when_every_service_is_healthy(statuses: dict[str, str]) -> None:
    result = fleet_status([health_of(n, s) for n, s in statuses.items()], {"api-gateway"})
    assert (result == "ok") == all(s == "healthy" for s in statuses.values())
    if not any(s in ("healthy", "stale") for s in statuses.values()):
        assert result == "down"


@given(st.lists(st.tuples(st.sampled_from(["s1", "s2"]), st.sampled_from(["i1", "i2", "i3"]),
                          st.floats(0, 1000), st.booleans()), max_size=30))
def test_view_holds_one_entry_per_instance_with_its_latest_beat(
        events: list[tuple[str, str, float, bool]]) -> None:
    fleet = view()
    expected: dict[tuple[str, str], float] = {}
    clock = 0.0
    for service, instance, step, stopped in events:
        clock += step
        if stopped:
            fleet.record_stopped(beat(service, instance))
            expected.pop((service, instance), None)
        else:
            fleet.record_heartbeat(beat(service, instance), at(clock))
            expected[(service, instance)] = clock
    now = at(clock)
    got = {(i.service, i.beat.instance): i for i in fleet.instances(now)}
    assert set(got) == set(expected)
    for key, seen in expected.items():
        assert got[key].last_seen == at(seen)
        assert got[key].stale == ((clock - seen) > fleet.stale_after_s)
