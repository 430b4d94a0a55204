"""The fleet launcher: process supervision, start order, status table, and the run/status/stop commands.

Supervision is tested with throwaway processes (a tiny HTTP server answering /health, a crashing
script), so these tests do not depend on which services exist yet.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import pytest

from aitrading.embedded import free_port, pid_alive, port_accepts
from aitrading.fleet import Fleet, FleetStartError, ManagedProcess, ProcessSpec, StatusRow, render_table
from aitrading.fleet.launcher import select_services, startup_levels
from aitrading.fleet.processes import FAILED, HEALTHY, STOPPED, group_alive, health_status, reap_orphans
from aitrading.registry import REGISTRY, ServiceSpec

# A fake service: answers GET /health with 200 (404 elsewhere) and, like a server with a worker, starts a
# child process in its group whose pid it writes to argv[2]. With argv[3] == "stubborn" it ignores SIGTERM.
HEALTH_SERVER = """
import http.server, signal, subprocess, sys
port, child_pid_file = int(sys.argv[1]), sys.argv[2]
if len(sys.argv) > 3 and sys.argv[3] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(child_pid_file, "w").write(str(child.pid))

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')
    def log_message(self, *args):
        pass

print("fake service listening on", port, flush=True)
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""

# A fake catalogue service for Fleet tests: listens on $PORT like a real one, shows its environment at /env.
FAKE_SERVICE = """
import http.server, json, os
keys = ("DATABASE_URL", "NATS_URL", "REDIS_URL", "PORT", "SERVICE_URLS")

class Service(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({k: os.environ.get(k) for k in keys}).encode()
        self.send_response(200 if self.path in ("/health", "/env") else 404)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Service).serve_forever()
"""

CRASHING = """
import sys
print("booting the fake service", flush=True)
print("fatal: DATABASE_URL points nowhere", file=sys.stderr, flush=True)
sys.exit(3)
"""


def _fake_service(tmp_path: Path, name: str, *extra: str) -> tuple[ManagedProcess, Path]:
    port = free_port()
    child_pid_file = tmp_path / f"{name}.child"
    argv = [sys.executable, "-c", HEALTH_SERVER, str(port), str(child_pid_file), *extra]
    spec = ProcessSpec(name=name, argv=argv, port=port, log_path=tmp_path / "logs" / f"{name}.log")
    return ManagedProcess(spec, pid_dir=tmp_path / "run"), child_pid_file


def _wait_for(predicate: object, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


# --- supervision -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_healthy_process_is_reported_healthy_and_stop_leaves_no_process(tmp_path: Path) -> None:
    process, child_pid_file = _fake_service(tmp_path, "fake-ok")
    process.start()
    assert process.wait_healthy(timeout_s=20), process.log_tail()
    assert process.state == HEALTHY
    pid = process.pid
    assert pid is not None
    assert (tmp_path / "run" / "fake-ok.pid").exists()
    assert _wait_for(child_pid_file.exists)
    child = int(child_pid_file.read_text())
    assert pid_alive(child)

    process.stop(grace_s=5)

    assert process.state == STOPPED
    assert not pid_alive(pid) and not pid_alive(child)
    assert not group_alive(pid)
    assert not port_accepts(process.spec.port)
    assert not (tmp_path / "run" / "fake-ok.pid").exists()
    assert "fake service listening" in process.log_tail()


@pytest.mark.slow
def test_crashing_process_is_reported_failed_with_its_log_tail(tmp_path: Path) -> None:
    spec = ProcessSpec(name="fake-crash", argv=[sys.executable, "-c", CRASHING], port=free_port(),
                       log_path=tmp_path / "fake-crash.log")
    process = ManagedProcess(spec)
    process.start()

    assert not process.wait_healthy(timeout_s=20)
    assert process.state == FAILED
    assert process.failure == "exited with code 3 before becoming healthy"
    tail = process.log_tail()
    assert "booting the fake service" in tail
    assert "fatal: DATABASE_URL points nowhere" in tail
    process.stop(grace_s=1)


@pytest.mark.slow
def test_log_tail_shows_only_the_latest_run(tmp_path: Path) -> None:
    spec = ProcessSpec(name="fake-crash", argv=[sys.executable, "-c", CRASHING], port=free_port(),
                       log_path=tmp_path / "fake-crash.log")
    spec.log_path.write_text("an old line from yesterday\n")
    process = ManagedProcess(spec)
    process.start()
    process.wait_healthy(timeout_s=20)
    assert "yesterday" not in process.log_tail()
    assert "yesterday" in spec.log_path.read_text()  # the log file is appended to, not replaced
    process.stop(grace_s=1)


@pytest.mark.slow
def test_process_that_never_answers_health_fails_after_the_timeout(tmp_path: Path) -> None:
    spec = ProcessSpec(name="fake-mute", argv=[sys.executable, "-c", "import time; time.sleep(600)"],
                       port=free_port(), log_path=tmp_path / "fake-mute.log")
    process = ManagedProcess(spec)
    process.start()
    assert not process.wait_healthy(timeout_s=1.5)
    assert process.failure is not None and "no healthy answer" in process.failure
    pid = process.pid
    assert pid is not None
    process.stop(grace_s=5)
    assert not pid_alive(pid)


@pytest.mark.slow
def test_process_ignoring_sigterm_is_killed_with_its_children_after_the_grace(tmp_path: Path) -> None:
    process, child_pid_file = _fake_service(tmp_path, "fake-stubborn", "stubborn")
    process.start()
    assert process.wait_healthy(timeout_s=20), process.log_tail()
    assert _wait_for(child_pid_file.exists)
    pid, child = process.pid, int(child_pid_file.read_text())
    assert pid is not None

    started = time.monotonic()
    process.stop(grace_s=1)

    assert 0.9 < time.monotonic() - started < 8
    assert not pid_alive(pid) and not pid_alive(child) and not group_alive(pid)


def test_port_already_in_use_is_reported_without_starting_the_process(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        spec = ProcessSpec(name="fake-clash", argv=[sys.executable, "-c", "pass"], port=port,
                           log_path=tmp_path / "fake-clash.log")
        process = ManagedProcess(spec)
        process.start()
    assert process.state == FAILED
    assert process.pid is None
    assert process.failure == f"port {port} is already in use by another process"


@pytest.mark.slow
def test_reap_orphans_stops_a_process_group_a_dead_launcher_left_behind(tmp_path: Path) -> None:
    process, child_pid_file = _fake_service(tmp_path, "fake-orphan")
    process.start()
    assert process.wait_healthy(timeout_s=20), process.log_tail()
    assert _wait_for(child_pid_file.exists)
    pid, child = process.pid, int(child_pid_file.read_text())
    assert pid is not None

    assert reap_orphans(tmp_path / "run", grace_s=5) == ["fake-orphan"]

    assert _wait_for(lambda: not pid_alive(pid) and not pid_alive(child))
    assert not group_alive(pid)
    assert not (tmp_path / "run" / "fake-orphan.pid").exists()
    process.stop(grace_s=1)  # reaps the zombie of our own child


def test_reap_orphans_ignores_a_pid_file_whose_pid_runs_something_else(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "someone.pid").write_text(f'{{"pid": {os.getpid()}, "argv": ["not", "us"]}}')
    assert reap_orphans(tmp_path / "run") == []
    assert pid_alive(os.getpid())


# --- order, selection, table ------------------------------------------------------------------------------


def test_user_service_starts_before_the_gateway_that_depends_on_it() -> None:
    specs = [REGISTRY["api-gateway"], REGISTRY["central-hub"], REGISTRY["user-service"]]
    levels = [[s.name for s in level] for level in startup_levels(specs)]
    assert levels == [["central-hub", "user-service"], ["api-gateway"]]


def test_selecting_a_service_brings_the_implemented_services_it_depends_on(tmp_path: Path) -> None:
    for name in ("api-gateway", "user-service", "central-hub"):
        (tmp_path / "services" / name).mkdir(parents=True)
        (tmp_path / "services" / name / "pyproject.toml").write_text("")
    selected = select_services(["api-gateway"], root=tmp_path)
    assert [s.name for s in selected] == ["api-gateway", "user-service"]
    assert len(select_services(None, root=tmp_path)) == 3
    with pytest.raises(ValueError, match="no folder"):
        select_services(["trading-engine"], root=tmp_path)
    with pytest.raises(ValueError, match="unknown service"):
        select_services(["no-such-service"], root=tmp_path)


def test_status_table_aligns_columns() -> None:
    table = render_table([StatusRow("user-service", 8009, "healthy", "http://127.0.0.1:8009"),
                          StatusRow("api-gateway", 8000, "failed", "http://127.0.0.1:8000")])
    lines = table.splitlines()
    assert lines[0].split() == ["NAME", "PORT", "STATUS", "URL"]
    assert lines[2].split() == ["user-service", "8009", "healthy", "http://127.0.0.1:8009"]
    assert lines[3].index("8000") == lines[2].index("8009")


# --- the fleet with infrastructure only -------------------------------------------------------------------


@pytest.mark.slow
async def test_fleet_without_infra_urls_runs_embedded_postgres_and_nats(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path / "data", services=[], env={}, echo=lambda _: None)
    await asyncio.to_thread(fleet.start)
    try:
        assert fleet.database_url.startswith("postgresql://postgres@127.0.0.1:")
        conn = await asyncpg.connect(fleet.database_url)
        try:
            assert await conn.fetchval("SELECT current_database()") == "aitrading"
        finally:
            await conn.close()
        rows = {row.name: row for row in fleet.rows()}
        assert rows["postgresql"].status == "up (embedded)"
        assert rows["nats"].status == "up (embedded)"
        assert "redis" not in rows
        nats_port = rows["nats"].port
        pg_port = rows["postgresql"].port
    finally:
        await asyncio.to_thread(fleet.stop)
    assert nats_port is not None and pg_port is not None
    assert not port_accepts(nats_port) and not port_accepts(pg_port)


def test_fleet_uses_infra_urls_given_in_its_environment(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql://postgres@127.0.0.1:5999/x", "NATS_URL": "nats://127.0.0.1:4999",
           "REDIS_URL": "redis://:secret@127.0.0.1:6999/0"}
    fleet = Fleet(tmp_path, services=[], env=env, echo=lambda _: None)
    assert fleet.infra.postgres is None and fleet.infra.nats is None
    assert fleet.database_url == env["DATABASE_URL"] and fleet.nats_url == env["NATS_URL"]
    assert "secret" not in "\n".join(fleet.infra.describe())
    assert fleet.url("api-gateway") == "http://127.0.0.1:8000"


def test_port_offset_moves_service_ports_and_tells_clients(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql://postgres@127.0.0.1:5999/x", "NATS_URL": "nats://127.0.0.1:4999"}
    fleet = Fleet(tmp_path, services=[], env=env, port_offset=100, echo=lambda _: None)
    assert fleet.url("user-service") == "http://127.0.0.1:8109"
    env = fleet.service_env("user-service")
    assert env["PORT"] == "8109"
    assert '"api-gateway": "http://127.0.0.1:8100"' in env["SERVICE_URLS"]


# --- the fleet with (fake) services ----------------------------------------------------------------------


def _fake_fleet(tmp_path: Path, env: dict[str, str], command: Callable[[ServiceSpec], list[str]],
                echo: Callable[[str], None]) -> Fleet:
    """api-gateway and the user-service it depends on, as fake services in a throwaway checkout."""
    root = tmp_path / "checkout"
    for name in ("api-gateway", "user-service"):
        (root / "services" / name).mkdir(parents=True)
        (root / "services" / name / "pyproject.toml").write_text("")
    return Fleet(tmp_path / "data", services=["api-gateway"], env=env, port_offset=_free_offset(), root=root,
                 command=command, echo=echo)


def _free_offset() -> int:
    """A port offset that puts api-gateway (8000) and user-service (8009) on free ports."""
    while True:
        offset = free_port() - 8000
        if offset > 0 and free_port(8009 + offset) == 8009 + offset:
            return offset


def _fake_command(crashing: str | None = None) -> Callable[[ServiceSpec], list[str]]:
    def command(spec: ServiceSpec) -> list[str]:
        return [sys.executable, "-c", CRASHING if spec.name == crashing else FAKE_SERVICE]
    return command


@pytest.mark.slow
def test_fleet_starts_dependencies_first_restarts_a_service_and_stops_everything(
        tmp_path: Path, database_url: str, nats_url: str) -> None:
    messages: list[str] = []
    fleet = _fake_fleet(tmp_path, {"DATABASE_URL": database_url, "NATS_URL": nats_url}, _fake_command(),
                        messages.append)
    with fleet:
        started = [m.split()[1] for m in messages if m.startswith("starting ")]
        assert started == ["user-service", "api-gateway"]
        seen = httpx.get(fleet.url("api-gateway") + "/env", trust_env=False).json()
        assert seen["DATABASE_URL"] == database_url and seen["NATS_URL"] == nats_url
        assert seen["PORT"] == str(fleet.port("api-gateway"))
        assert json.loads(seen["SERVICE_URLS"])["user-service"] == fleet.url("user-service")
        assert [row.status for row in fleet.rows()[-2:]] == ["healthy", "healthy"]

        fleet.stop_service("user-service")
        assert health_status(fleet.url("user-service") + "/health") is None
        fleet.start_service("user-service")
        assert health_status(fleet.url("user-service") + "/health") == 200
        pids = [p.pid for p in fleet.processes.values()]
    assert all(pid is not None and not pid_alive(pid) and not group_alive(pid) for pid in pids)
    assert not (fleet.run_dir / "services").exists() or not list((fleet.run_dir / "services").iterdir())


@pytest.mark.slow
def test_fleet_start_reports_a_failing_service_with_its_log_and_stops_the_rest(
        tmp_path: Path, database_url: str, nats_url: str) -> None:
    fleet = _fake_fleet(tmp_path, {"DATABASE_URL": database_url, "NATS_URL": nats_url},
                        _fake_command(crashing="user-service"), lambda _: None)
    with pytest.raises(FleetStartError) as raised:
        fleet.start()
    report = str(raised.value)
    assert "user-service: exited with code 3 before becoming healthy" in report
    assert "fatal: DATABASE_URL points nowhere" in report
    assert "api-gateway" not in report  # it started (and was stopped again) despite its failed dependency
    gateway = fleet.processes["api-gateway"]
    assert gateway.state == STOPPED and gateway.pid is None
    assert health_status(fleet.url("api-gateway") + "/health") is None


# --- the command line -------------------------------------------------------------------------------------


def _fleet_command(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "aitrading.fleet", "--data-dir", str(data_dir), *args]


def _without_infra_urls() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL", "REDIS_URL")}


def _start_launcher(data_dir: Path) -> subprocess.Popen[str]:
    launcher = subprocess.Popen(_fleet_command(data_dir, "run", "--infra-only"), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=_without_infra_urls())
    assert _wait_for(lambda: (data_dir / "run" / "fleet.json").exists() or launcher.poll() is not None, 60)
    assert launcher.poll() is None, launcher.communicate()[0]
    return launcher


@pytest.mark.slow
def test_run_status_and_stop_commands_leave_nothing_running(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    launcher = _start_launcher(data_dir)

    status = subprocess.run(_fleet_command(data_dir, "status"), capture_output=True, text=True, timeout=60,
                            env=_without_infra_urls())
    assert f"launcher running (pid {launcher.pid})" in status.stdout
    assert "up (embedded)" in status.stdout

    stop = subprocess.run(_fleet_command(data_dir, "stop"), capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    output = launcher.communicate(timeout=30)[0]
    assert launcher.returncode == 0, output
    assert "PostgreSQL: postgresql://postgres@127.0.0.1:" in output
    assert "[fleet] stopped" in output
    assert not (data_dir / "postgres" / "pgdata" / "postmaster.pid").exists()
    assert not (data_dir / "nats" / "nats.pid").exists()
    assert not (data_dir / "run" / "launcher.pid").exists()


@pytest.mark.slow
def test_ctrl_c_stops_the_fleet(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    launcher = _start_launcher(data_dir)
    launcher.send_signal(signal.SIGINT)
    output = launcher.communicate(timeout=60)[0]
    assert launcher.returncode == 0, output
    assert "[fleet] stopped" in output
    assert not (data_dir / "postgres" / "pgdata" / "postmaster.pid").exists()


@pytest.mark.slow
def test_stop_cleans_up_after_a_launcher_that_was_killed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    launcher = _start_launcher(data_dir)
    launcher.kill()
    launcher.communicate(timeout=30)
    assert (data_dir / "postgres" / "pgdata" / "postmaster.pid").exists()  # left behind

    stop = subprocess.run(_fleet_command(data_dir, "stop"), capture_output=True, text=True, timeout=120)

    assert "stopped leftovers of an earlier run: NATS, PostgreSQL" in stop.stdout, stop.stdout
    assert not (data_dir / "postgres" / "pgdata" / "postmaster.pid").exists()
    assert not (data_dir / "nats" / "nats.pid").exists()


def test_make_run_takes_infrastructure_urls_from_dot_env(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "NATS_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://ops@10.1.2.3:5432/platform\n"
                                   "NATS_URL=nats://10.1.2.4:4222\n")
    fleet = Fleet(tmp_path / "data", services=[], root=tmp_path)
    assert fleet.database_url == "postgresql://ops@10.1.2.3:5432/platform"
    assert fleet.nats_url == "nats://10.1.2.4:4222"


def test_environment_beats_dot_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("NATS_URL=nats://from-dotenv:4222\n")
    monkeypatch.setenv("NATS_URL", "nats://from-environment:4222")
    assert Fleet(tmp_path / "data", services=[], root=tmp_path).nats_url == "nats://from-environment:4222"
