"""`python -m aitrading.fleet run | stop | status` — the commands behind `make run`.

`run` stays in the foreground until Ctrl-C, SIGTERM or `stop` from another shell (which signals the
launcher through its pid file), then stops everything it started. `stop` also cleans up after a
launcher that was killed outright. `status` checks the health of a running fleet.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path
from types import FrameType

from aitrading.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedServerError, pid_alive
from aitrading.fleet.infra import infra_rows
from aitrading.fleet.launcher import HEALTH_TIMEOUT_S, STATE_FILE, Fleet, data_root, say
from aitrading.fleet.processes import HEALTHY, health_status, reap_orphans
from aitrading.fleet.status_table import StatusRow, render_table
from aitrading.registry import implemented

LAUNCHER_PID_FILE = "launcher.pid"
STOP_WAIT_S = 120.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aitrading.fleet",
                                     description="Run the whole platform on this machine.")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="data folder (default: $AITRADING_DATA_DIR or .data/ at the repository root)")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start infrastructure and services; Ctrl-C stops them")
    run.add_argument("services", nargs="*", help="only these services (and what they depend on)")
    run.add_argument("--infra-only", action="store_true",
                     help="only PostgreSQL and NATS, e.g. to run services yourself with reload")
    run.add_argument("--health-timeout", type=float, default=HEALTH_TIMEOUT_S, metavar="SECONDS",
                     help="how long a service may take to answer /health (default %(default)s)")
    commands.add_parser("stop", help="stop a running fleet (and anything a killed launcher left behind)")
    commands.add_parser("status", help="health of a running fleet")
    args = parser.parse_args(argv)
    data_dir = (args.data_dir or data_root()).resolve()
    if args.command == "run":
        return run_fleet(data_dir, [] if args.infra_only else args.services or None, args.health_timeout)
    if args.command == "stop":
        return stop_fleet(data_dir)
    return print_status(data_dir)


def run_fleet(data_dir: Path, services: list[str] | None = None,
              health_timeout_s: float = HEALTH_TIMEOUT_S) -> int:
    pid_file = data_dir / "run" / LAUNCHER_PID_FILE
    running = launcher_pid(data_dir)
    if running is not None:
        say(f"a launcher already runs this fleet (pid {running}); "
            "stop it with `python -m aitrading.fleet stop`")
        return 1
    try:
        fleet = Fleet(data_dir, services=services, health_timeout_s=health_timeout_s)
    except ValueError as exc:
        say(str(exc))
        return 2
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{os.getpid()}\n")
    say(f"data folder {data_dir}, logs in {fleet.logs_dir}")
    # SIGINT explicitly too: a launcher started in the background inherits it ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # respect nohup
        signal.signal(signal.SIGHUP, _interrupt)
    try:
        processes = fleet.launch()
        print(render_table(fleet.rows()), flush=True)
        healthy = sum(p.state == HEALTHY for p in processes)
        summary = f"{healthy} of {len(processes)} services healthy" if processes else "infrastructure only"
        say(f"{summary}; Ctrl-C or `python -m aitrading.fleet stop` stops everything")
        _watch(fleet)
    except KeyboardInterrupt:
        pass
    except EmbeddedServerError as exc:
        say(f"infrastructure did not start: {exc}")
        return 1
    finally:
        # A second Ctrl-C must not cut the shutdown short and leave orphans behind.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        say("stopping services, then NATS and PostgreSQL")
        fleet.stop()
        pid_file.unlink(missing_ok=True)
        say("stopped")
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _watch(fleet: Fleet) -> None:
    """Report services that die while the fleet runs (they are not restarted)."""
    while True:
        time.sleep(1)
        for process in fleet.processes.values():
            if process.exited_unexpectedly():
                say(f"{process.name} {process.failure}; it stays down until the next run\n"
                    f"{fleet.failure_report([process])}")


def stop_fleet(data_dir: Path) -> int:
    pid = launcher_pid(data_dir)
    if pid is None:
        say("no launcher is running")
    else:
        say(f"stopping the launcher (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid):
            say(f"the launcher (pid {pid}) is still stopping after {STOP_WAIT_S:.0f}s")
            return 1
    # Whatever a launcher killed with SIGKILL left behind: services, then NATS, then PostgreSQL.
    leftovers = reap_orphans(data_dir / "run" / "services")
    servers: list[tuple[str, EmbeddedNats | EmbeddedPostgres]] = [
        ("NATS", EmbeddedNats(data_dir / "nats")), ("PostgreSQL", EmbeddedPostgres(data_dir / "postgres"))]
    for label, server in servers:
        if server.is_running():
            server.stop()
            leftovers.append(label)
    if leftovers:
        say(f"stopped leftovers of an earlier run: {', '.join(leftovers)}")
    (data_dir / "run" / LAUNCHER_PID_FILE).unlink(missing_ok=True)
    return 0


def print_status(data_dir: Path) -> int:
    pid = launcher_pid(data_dir)
    state_file = data_dir / "run" / STATE_FILE
    rows: list[StatusRow] = []
    if pid is not None and state_file.exists():
        say(f"launcher running (pid {pid}), data folder {data_dir}")
        state = json.loads(state_file.read_text())
        rows += infra_rows({name: (url, origin) for name, (url, origin) in state["infra"].items()})
        services = [(s["name"], s["port"], s["url"]) for s in state["services"]]
    else:
        say(f"no launcher running for {data_dir}; checking the catalogue ports")
        services = [(s.name, s.port, f"http://127.0.0.1:{s.port}") for s in implemented()]
    all_healthy = pid is not None
    for name, port, url in services:
        code = health_status(url + "/health")
        status = "healthy" if code == 200 else "down" if code is None else f"unhealthy ({code})"
        all_healthy = all_healthy and code == 200
        rows.append(StatusRow(name, port, status, url))
    print(render_table(rows), flush=True)
    return 0 if all_healthy else 1


def launcher_pid(data_dir: Path) -> int | None:
    """The pid of the launcher running this data folder, if one is alive."""
    try:
        pid = int((data_dir / "run" / LAUNCHER_PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid  # no /proc: trust the pid file
    return pid if b"aitrading.fleet" in cmdline or b"aitrading/fleet" in cmdline else None
