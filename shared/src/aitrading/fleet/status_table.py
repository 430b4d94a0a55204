"""The fleet status table the launcher prints: one row per server, aligned columns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_HEADERS = ("NAME", "PORT", "STATUS", "URL")


@dataclass(frozen=True, slots=True)
class StatusRow:
    name: str
    port: int | None
    status: str
    url: str


def render_table(rows: Sequence[StatusRow]) -> str:
    cells = [_HEADERS, *((r.name, str(r.port) if r.port is not None else "-", r.status, r.url) for r in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(_HEADERS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
