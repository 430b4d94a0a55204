"""The fleet: infrastructure plus each requested service as its own supervised process.

`python -m aitrading.fleet run` (and so `make run`) drives it from the command line; fleet tests use it
directly:

    with Fleet(tmp_path, services=["api-gateway"], env={"DATABASE_URL": db, "NATS_URL": nats}) as fleet:
        httpx.get(fleet.url("api-gateway") + "/health")

Services start in dependency order (a service's `depends_on` are healthy, or have failed, before it
starts; services of one level start together) and stop in the reverse order. A service that fails is
reported with the tail of its log; the others keep running.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from dotenv import dotenv_values

from aitrading.fleet.infra import INFRA_VARS, Infrastructure, hide_password
from aitrading.fleet.processes import FAILED, HEALTHY, STARTING, ManagedProcess, ProcessSpec, reap_orphans
from aitrading.fleet.status_table import StatusRow
from aitrading.registry import REGISTRY, ServiceSpec, implemented, repo_root

HEALTH_TIMEOUT_S = 60.0
# A little over the services' own graceful-shutdown budget (ServiceSettings.shutdown_grace_s = 10).
STOP_GRACE_S = 12.0
STATE_FILE = "fleet.json"
MAX_PARALLEL_STARTS = max(4, 2 * (os.cpu_count() or 2))


class FleetStartError(RuntimeError):
    """A requested service did not become healthy; the message names it and quotes its log."""


def data_root() -> Path:
    """The fleet's data folder: `AITRADING_DATA_DIR`, else `.data/` at the repository root."""
    configured = os.environ.get("AITRADING_DATA_DIR")
    return Path(configured).resolve() if configured else repo_root() / ".data"


def say(message: str) -> None:
    print(f"[fleet] {message}", flush=True)


def select_services(names: Sequence[str] | None, root: Path | None = None) -> list[ServiceSpec]:
    """The services to run: all implemented ones, or `names` plus the implemented services they need."""
    available = {spec.name: spec for spec in implemented(root)}
    if names is None:
        return list(available.values())
    chosen: dict[str, ServiceSpec] = {}
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in chosen:
            continue
        if name not in REGISTRY:
            raise ValueError(f"unknown service {name!r}; the catalogue is in aitrading.registry")
        if name not in available:
            if name in names:
                raise ValueError(f"service {name!r} has no folder in this checkout (services/{name})")
            continue  # an unbuilt dependency: the dependent copes with its absence
        chosen[name] = available[name]
        pending.extend(REGISTRY[name].depends_on)
    return [spec for spec in available.values() if spec.name in chosen]


def startup_levels(specs: Sequence[ServiceSpec]) -> list[list[ServiceSpec]]:
    """Services grouped so each level depends only on earlier ones (catalogue order inside a level)."""
    names = {spec.name for spec in specs}
    placed: set[str] = set()
    levels: list[list[ServiceSpec]] = []
    remaining = list(specs)
    while remaining:
        level = [s for s in remaining if all(d in placed or d not in names for d in s.depends_on)]
        if not level:
            raise ValueError(f"dependency cycle among {[s.name for s in remaining]}")
        levels.append(level)
        placed.update(s.name for s in level)
        remaining = [s for s in remaining if s.name not in placed]
    return levels


def python_module_command(spec: ServiceSpec) -> list[str]:
    """How a service runs: its package's `__main__` (uvicorn on the port from its settings)."""
    return [sys.executable, "-m", spec.package]


def _fleet_env(env: Mapping[str, str] | None, root: Path) -> dict[str, str]:
    """Our environment, overlaid with `env`; when `env` is given, infra URLs come only from it.

    Without `env` (the `make run` path), `.env` at the checkout root fills what the environment does
    not set, so DATABASE_URL and friends there decide between external and embedded servers.
    """
    base = dict(os.environ)
    if env is None:
        dotenv = {k: v for k, v in dotenv_values(root / ".env").items() if v is not None}
        base = {**dotenv, **base}
    else:
        for key in INFRA_VARS:
            base.pop(key, None)
        base.update(env)
    return base


class Fleet:
    """Infrastructure (external or embedded) plus one process per service, under `data_dir`.

    `services=None` runs every service that exists in the checkout; a list runs those plus the
    services they depend on. `env` adds to the services' environment; when it is given, DATABASE_URL,
    NATS_URL and REDIS_URL are taken only from it (leave them out to get embedded servers).
    `port_offset` moves every service port (PORT for the service, SERVICE_URLS for its clients).
    `root` is the checkout whose `services/` folders say what exists (and the services' working
    directory); `command` says how a service is run.
    """

    def __init__(self, data_dir: Path, *, services: Sequence[str] | None = None,
                 env: Mapping[str, str] | None = None, port_offset: int = 0,
                 health_timeout_s: float = HEALTH_TIMEOUT_S, stop_grace_s: float = STOP_GRACE_S,
                 max_parallel: int = MAX_PARALLEL_STARTS, root: Path | None = None,
                 command: Callable[[ServiceSpec], Sequence[str]] = python_module_command,
                 echo: Callable[[str], None] = say) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.logs_dir = self.data_dir / "logs"
        self.run_dir = self.data_dir / "run"
        self.root = root or repo_root()
        self.command = command
        self.levels = startup_levels(select_services(services, self.root))
        self.port_offset = port_offset
        self.health_timeout_s = health_timeout_s
        self.stop_grace_s = stop_grace_s
        self.max_parallel = max(1, max_parallel)
        self.echo = echo
        self._env = _fleet_env(env, self.root)
        self.infra = Infrastructure(self.data_dir, self._env)
        self.processes: dict[str, ManagedProcess] = {}
        self._launched = False

    # --- the programmatic API (fleet tests) -----------------------------------------------------------

    @property
    def services(self) -> list[ServiceSpec]:
        return [spec for level in self.levels for spec in level]

    @property
    def database_url(self) -> str:
        return self.infra.database_url

    @property
    def nats_url(self) -> str:
        return self.infra.nats_url

    def port(self, name: str) -> int:
        return REGISTRY[name].port + self.port_offset

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port(name)}"

    def start(self) -> None:
        """Infrastructure and services; raises FleetStartError (after stopping everything) on a failure."""
        failed = [p for p in self.launch() if p.state != HEALTHY]
        if failed:
            report = self.failure_report(failed)
            self.stop()
            raise FleetStartError(report)

    def stop(self) -> None:
        """Services in reverse dependency order, then NATS, then PostgreSQL. Safe to call twice."""
        if not self._launched:
            return
        for level in reversed(self.levels):
            running = [self.processes[s.name] for s in level if s.name in self.processes]
            for process in running:
                process.terminate()
            deadline = time.monotonic() + self.stop_grace_s
            for process in running:
                process.wait_stopped(max(0.0, deadline - time.monotonic()))
        self.infra.stop()
        (self.run_dir / STATE_FILE).unlink(missing_ok=True)
        self._launched = False

    def stop_service(self, name: str) -> None:
        self._process(name).stop(self.stop_grace_s)
        self.echo(f"{name} stopped")

    def start_service(self, name: str) -> None:
        process = self._process(name)
        self._start_together([process])
        if process.state != HEALTHY:
            raise FleetStartError(self.failure_report([process]))

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- start-up that reports instead of raising (the launcher command) ------------------------------

    def launch(self) -> list[ManagedProcess]:
        """Start infrastructure, then every service level by level; failed services are left stopped.

        Raises only when the infrastructure cannot start (or on Ctrl-C), after stopping what it started.
        """
        self._launched = True
        try:
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            orphans = reap_orphans(self.run_dir / "services")
            if orphans:
                self.echo(f"stopped processes left over from an earlier run: {', '.join(orphans)}")
            self.infra.start()
            for line in self.infra.describe():
                self.echo(line)
            self._write_state()
            for level in self.levels:
                self._start_together([self._process(spec.name) for spec in level])
        except BaseException:
            self.stop()
            raise
        return [self.processes[spec.name] for spec in self.services]

    def rows(self) -> list[StatusRow]:
        rows = self.infra.rows()
        for spec in self.services:
            process = self.processes.get(spec.name)
            state = process.state if process else "not started"
            rows.append(StatusRow(spec.name, self.port(spec.name), state, self.url(spec.name)))
        return rows

    def failure_report(self, processes: Sequence[ManagedProcess]) -> str:
        parts = []
        for process in processes:
            tail = process.log_tail(20) or "(the log is empty)"
            indented = "\n".join("    " + line for line in tail.splitlines())
            parts.append(f"{process.name}: {process.failure or process.state}\n"
                         f"  last lines of {process.spec.log_path}:\n{indented}")
        return "\n".join(parts)

    # --- internals ---------------------------------------------------------------------------------------

    def _process(self, name: str) -> ManagedProcess:
        if name not in self.processes:
            spec = next((s for s in self.services if s.name == name), None)
            if spec is None:
                raise ValueError(f"{name!r} is not one of this fleet's services")
            self.processes[name] = ManagedProcess(ProcessSpec(
                name=name,
                argv=list(self.command(spec)),
                port=self.port(name),
                log_path=self.logs_dir / f"{name}.log",
                env=self.service_env(name),
                cwd=self.root,
            ), pid_dir=self.run_dir / "services")
        return self.processes[name]

    def service_env(self, name: str) -> dict[str, str]:
        """The environment service `name` runs with: ours, the infra URLs, its port."""
        # PORT always: a stray PORT in our own environment would put every service on one port.
        env = {**self._env, **self.infra.service_env(), "PORT": str(self.port(name)), "PYTHONUNBUFFERED": "1",
               "DATA_DIR": str(self.data_dir),
               # What runs here: the gateway routes to these, central-hub expects them.
               "DEPLOYED_SERVICES": json.dumps([spec.name for spec in self.services])}
        if not env.get("SERVICE_CLIENT_SECRET") and not env.get("SERVICE_CLIENT_SECRET_FILE"):
            env["SERVICE_CLIENT_SECRET"] = self.service_secret()
        if not env.get("CREDENTIALS_KEY") and not env.get("CREDENTIALS_KEY_FILE"):
            env["CREDENTIALS_KEY"] = self.credentials_key()
        if self.port_offset:
            env["SERVICE_URLS"] = json.dumps({name: self.url(name) for name in REGISTRY})
        return env

    def service_secret(self) -> str:
        """The fleet's service-to-service secret: made once per data folder, kept there (mode 0600)."""
        path = self.data_dir / "service-client-secret"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def credentials_key(self) -> str:
        """The Fernet key that encrypts users' venue credentials at rest (trading-engine): made once per
        data folder, kept there (mode 0600). Losing it makes the stored credentials unreadable."""
        path = self.data_dir / "credentials-key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())  # Fernet's key format
        return path.read_text().strip()

    def _start_together(self, processes: Sequence[ManagedProcess]) -> None:
        """Start processes and wait for each to be healthy or failed, at most `max_parallel` at a time.

        The cap keeps a couple of dozen Python processes from importing at once on a small machine,
        where the slowest would otherwise miss its health deadline.
        """
        waiting = list(processes)
        pending: list[ManagedProcess] = []
        while waiting or pending:
            while waiting and len(pending) < self.max_parallel:
                process = waiting.pop(0)
                self.echo(f"starting {process.name} on port {process.spec.port}")
                process.start()
                pending.append(process)
            for process in list(pending):
                state = process.check(self.health_timeout_s)
                if state == STARTING:
                    continue
                pending.remove(process)
                if state == HEALTHY:
                    self.echo(f"{process.name} healthy at {process.spec.url} "
                              f"({process.seconds_since_start():.1f}s)")
                elif state == FAILED:
                    self.echo(f"{process.name} FAILED\n{self.failure_report([process])}")
            if pending or waiting:
                time.sleep(0.2)

    def _write_state(self) -> None:
        """What `python -m aitrading.fleet status` reads to check a running fleet."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "infra": {name: [hide_password(url), origin]
                      for name, (url, origin) in self.infra.components().items()},
            "services": [{"name": s.name, "port": self.port(s.name), "url": self.url(s.name)}
                         for s in self.services],
        }
        (self.run_dir / STATE_FILE).write_text(json.dumps(state, indent=2))
