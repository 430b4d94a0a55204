"""JetStream streams by subject family, and the token-safe form of symbols in subjects.

Every event subject starts with its family (`orders.`, `md.`, ...). A family that others must not miss
is captured by a stream, so durable consumers catch up after downtime; `fleet.*` heartbeats are core
NATS only. `EventBus.start` creates or updates these streams, so the list here is the whole truth.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

DAY_S = 24 * 3600.0


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    description: str
    max_age_s: float | None = None  # None: kept until max_bytes pushes the oldest out
    max_bytes: int | None = None
    # Server-side dedupe of Nats-Msg-Id (the event id) within this window; consumers dedupe beyond it.
    duplicate_window_s: float = 300.0

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=self.max_age_s or 0,
            max_bytes=self.max_bytes or -1,
            # The server refuses a dedupe window longer than the stream keeps messages.
            duplicate_window=min(self.duplicate_window_s, self.max_age_s or self.duplicate_window_s),
        )

    def captures(self, subject: str) -> bool:
        return any(subject_within(subject, pattern) for pattern in self.subjects)


MARKET = StreamSpec(
    name="MARKET",
    subjects=("md.>",),
    description="Market data: ticks and bars; short-lived, consumers read recent history",
    max_age_s=7 * DAY_S,
    max_bytes=8 * 1024**3,
)
TRADING = StreamSpec(
    name="TRADING",
    subjects=("orders.>", "fills.>", "positions.>", "risk.>"),
    description="Orders, fills, positions and risk state: durable, consumed idempotently",
    max_age_s=30 * DAY_S,
)
AUDIT = StreamSpec(
    name="AUDIT",
    subjects=("audit.>",),
    description="Audit records on their way to the audit log",
    max_age_s=30 * DAY_S,
)
PLATFORM = StreamSpec(
    name="PLATFORM",
    subjects=(
        "users.>", "usage.>", "billing.>", "payments.>", "config.>", "notify.>",
        "features.>", "patterns.>", "predictions.>", "votes.>", "decisions.>",
    ),
    description="Platform facts: users, usage, billing, payments, config, notifications and signals",
    max_age_s=30 * DAY_S,
)

STREAMS: tuple[StreamSpec, ...] = (MARKET, TRADING, AUDIT, PLATFORM)


def subject_within(subject: str, pattern: str) -> bool:
    """Whether every subject matched by `subject` (itself possibly a wildcard filter) matches `pattern`."""
    tokens, wanted = subject.split("."), pattern.split(".")
    for i, want in enumerate(wanted):
        if want == ">":
            return len(tokens) > i
        if i >= len(tokens) or tokens[i] == ">":
            return False
        if want != "*" and want != tokens[i]:
            return False
    return len(tokens) == len(wanted)


@lru_cache(maxsize=4096)
def stream_for(subject: str) -> StreamSpec | None:
    """The stream that stores `subject`, or None for core-NATS-only subjects (e.g. `fleet.*`)."""
    for spec in STREAMS:
        if spec.captures(subject):
            return spec
    return None


_UNSAFE = re.compile(r"[^A-Za-z0-9_\-+=:@^]")


def subject_token(symbol: str) -> str:
    """One subject token for a symbol: `BTC/USDT` → `BTC-USDT`; dots, spaces and wildcards become `-`."""
    token = _UNSAFE.sub("-", symbol.strip())
    if not token:
        raise ValueError("a symbol is needed to build a subject token")
    return token
