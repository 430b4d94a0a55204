"""Supervision of one long-running child process: its own process group, a log file, a health URL.

Generic over the command line, so the launcher runs services with it and the tests run a throwaway
HTTP server. Stopping signals the whole process group (SIGTERM, a grace period, then SIGKILL), so
nothing the child spawned outlives it. A pid file per process lets a later launcher clean up after
one that was killed outright.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from aitrading.embedded import log_tail, pid_alive, port_accepts

STARTING, HEALTHY, FAILED, STOPPED, EXITED = "starting", "healthy", "failed", "stopped", "exited"


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    name: str
    argv: Sequence[str]
    port: int
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    health_path: str = "/health"
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def health_url(self) -> str:
        return self.url + self.health_path


def health_status(url: str, timeout_s: float = 2.0) -> int | None:
    """The HTTP status `GET url` answers with, or None when nothing answers."""
    try:
        # trust_env=False: a proxy from HTTP_PROXY must not sit between us and 127.0.0.1.
        return httpx.get(url, timeout=timeout_s, trust_env=False).status_code
    except httpx.HTTPError:
        return None


class ManagedProcess:
    """One supervised child. `state` is starting → healthy | failed, and later exited or stopped."""

    def __init__(self, spec: ProcessSpec, pid_dir: Path | None = None) -> None:
        self.spec = spec
        self.pid_dir = pid_dir
        self.state = STOPPED
        self.failure: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._started_at = 0.0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def exit_code(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    def is_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Launch the command in a new session (its own process group), output appended to the log."""
        if self.is_alive():
            return
        self.failure = None
        if port_accepts(self.spec.port, self.spec.host):
            self._fail(f"port {self.spec.port} is already in use by another process")
            return
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.spec.log_path.open("ab") as log:
            self._log_offset = log.tell()
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"--- {self.name} starting at {stamp}: {' '.join(self.spec.argv)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                list(self.spec.argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.spec.cwd, env=dict(self.spec.env) if self.spec.env is not None else None,
                start_new_session=True,
            )
        self._started_at = time.monotonic()
        self.state = STARTING
        self._write_pid_file()

    def check(self, timeout_s: float) -> str:
        """One look at a starting process: healthy once /health answers 200, failed if it exits or stalls."""
        if self.state != STARTING:
            return self.state
        code = self.exit_code
        if code is not None:
            self._fail(f"exited with code {code} before becoming healthy")
        elif health_status(self.spec.health_url, timeout_s=1.0) == 200:
            self.state = HEALTHY
        elif time.monotonic() - self._started_at > timeout_s:
            self._fail(f"no healthy answer from {self.spec.health_url} within {timeout_s:.0f}s")
        return self.state

    def wait_healthy(self, timeout_s: float = 60) -> bool:
        while self.check(timeout_s) == STARTING:
            time.sleep(0.2)
        return self.state == HEALTHY

    def seconds_since_start(self) -> float:
        return time.monotonic() - self._started_at

    def exited_unexpectedly(self) -> bool:
        """True once, when a process that was starting or healthy has exited on its own."""
        if self.state in (STARTING, HEALTHY) and self.exit_code is not None:
            self.state = EXITED
            self.failure = f"exited with code {self.exit_code}"
            return True
        return False

    def terminate(self) -> None:
        """Ask the whole process group to stop (SIGTERM); `wait_stopped` finishes the job."""
        if self._process is not None:
            _signal_group(self._process.pid, signal.SIGTERM)

    def wait_stopped(self, grace_s: float) -> None:
        """Wait up to `grace_s` for the group to leave, then SIGKILL whatever is left of it."""
        if self._process is None:
            return
        process, pgid = self._process, self._process.pid
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (process.poll() is None or group_alive(pgid)):
            time.sleep(0.05)
        if process.poll() is None or group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        if self.state != FAILED:
            self.state = STOPPED
        self._process = None
        self._remove_pid_file()

    def stop(self, grace_s: float = 10) -> None:
        self.terminate()
        self.wait_stopped(grace_s)

    def kill(self) -> None:
        """SIGKILL the whole group at once, as a crash would: no drain, no shutdown hooks."""
        if self._process is not None:
            _signal_group(self._process.pid, signal.SIGKILL)
        self.wait_stopped(0)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines this run wrote to the log (earlier runs' lines are left out)."""
        return log_tail(self.spec.log_path, lines, start=self._log_offset)

    def _fail(self, reason: str) -> None:
        self.state = FAILED
        self.failure = reason

    @property
    def _pid_file(self) -> Path | None:
        return self.pid_dir / f"{self.name}.pid" if self.pid_dir is not None else None

    def _write_pid_file(self) -> None:
        if self._pid_file is not None and self._process is not None:
            self._pid_file.parent.mkdir(parents=True, exist_ok=True)
            self._pid_file.write_text(json.dumps({"pid": self._process.pid, "argv": list(self.spec.argv)}))

    def _remove_pid_file(self) -> None:
        if self._pid_file is not None:
            self._pid_file.unlink(missing_ok=True)


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process remains in process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # Fields after the command name: state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def reap_orphans(pid_dir: Path, grace_s: float = 10) -> list[str]:
    """Stop process groups left behind by a launcher that died without cleaning up; their names.

    A pid file is trusted only while its pid still runs the recorded command line (Linux /proc), so a
    recycled pid is never signalled.
    """
    reaped: list[str] = []
    if not pid_dir.is_dir():
        return reaped
    for pid_file in sorted(pid_dir.glob("*.pid")):
        try:
            record = json.loads(pid_file.read_text())
            pid, argv = int(record["pid"]), [str(a) for a in record["argv"]]
        except (OSError, ValueError, KeyError, TypeError):
            pid_file.unlink(missing_ok=True)
            continue
        if pid_alive(pid) and _runs(pid, argv):
            _signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while group_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if group_alive(pid):
                _signal_group(pid, signal.SIGKILL)
            reaped.append(pid_file.stem)
        pid_file.unlink(missing_ok=True)
    return reaped


def _runs(pid: int, argv: Sequence[str]) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return [part.decode(errors="replace") for part in cmdline if part] == list(argv)
