"""The fleet launcher: infrastructure plus every service as its own process (`make run`, fleet tests)."""

from aitrading.fleet.launcher import Fleet, FleetStartError, data_root, select_services, startup_levels
from aitrading.fleet.processes import ManagedProcess, ProcessSpec
from aitrading.fleet.status_table import StatusRow, render_table

__all__ = [
    "Fleet",
    "FleetStartError",
    "ManagedProcess",
    "ProcessSpec",
    "StatusRow",
    "data_root",
    "render_table",
    "select_services",
    "startup_levels",
]
