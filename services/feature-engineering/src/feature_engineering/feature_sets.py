"""Feature sets: a user's named lists of indicators, usable as `set=<name>` and optionally streamed.

Names are unique per user; indicators are validated against the catalogue when a set is written and
kept as the user wrote them (trimmed, each once). Someone else's set does not exist for you (404).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.errors import Conflict, Invalid, NotFound
from aitrading.market import indicators
from feature_engineering import store

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NAME_RULE = "1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"


@dataclass(frozen=True)
class FeatureSet:
    name: str
    indicators: list[str]
    stream: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: store.Record) -> FeatureSet:
        return cls(row.name, list(row.indicators), row.stream, row.created_at, row.updated_at)


def _now() -> datetime:
    return datetime.now(UTC)


def check_name(name: str, *, field: str = "name") -> str:
    if not NAME.match(name):
        raise Invalid(f"feature set name {name!r} must be {NAME_RULE}",
                      errors=[{"field": field, "reason": f"must be {NAME_RULE}"}])
    return name


def check_indicators(names: Sequence[str], *, limit: int) -> list[str]:
    """The names trimmed and each once, all known to the catalogue; Invalid listing every bad one."""
    cleaned = list(dict.fromkeys(n.strip() for n in names))
    if not cleaned:
        raise Invalid("a feature set needs at least one indicator",
                      errors=[{"field": "indicators", "reason": "must list at least one indicator"}])
    if len(cleaned) > limit:
        raise Invalid(f"a feature set holds at most {limit} indicators",
                      errors=[{"field": "indicators", "reason": f"at most {limit} indicators"}])
    indicators.parse_many(cleaned, field="indicators")
    return cleaned


async def create(session: AsyncSession, owner: UUID, *, name: str, names: Sequence[str], stream: bool,
                 max_indicators: int, max_sets: int) -> FeatureSet:
    check_name(name)
    cleaned = check_indicators(names, limit=max_indicators)
    if await store.count_sets(session, owner) >= max_sets:
        raise Conflict(f"you have {max_sets} feature sets, the most allowed; delete one first")
    row = await store.insert_set(session, owner=owner, name=name, indicators=cleaned, stream=stream,
                                 now=_now())
    if row is None:
        raise Conflict(f"you already have a feature set named {name!r}",
                       errors=[{"field": "name", "reason": "already used by another of your sets"}])
    return FeatureSet.from_row(row)


async def list_for(session: AsyncSession, owner: UUID) -> list[FeatureSet]:
    return [FeatureSet.from_row(r) for r in await store.sets_of(session, owner)]


async def get(session: AsyncSession, owner: UUID, name: str) -> FeatureSet:
    row = await store.set_named(session, owner, name)
    if row is None:
        raise NotFound(f"no feature set named {name!r}")
    return FeatureSet.from_row(row)


async def replace(session: AsyncSession, owner: UUID, name: str, *, new_name: str | None,
                  names: Sequence[str], stream: bool, max_indicators: int) -> FeatureSet:
    """Replace the set's indicators and stream flag; a `new_name` renames it."""
    target = check_name(new_name) if new_name is not None else name
    cleaned = check_indicators(names, limit=max_indicators)
    if target != name and await store.set_named(session, owner, target) is not None:
        raise Conflict(f"you already have a feature set named {target!r}",
                       errors=[{"field": "name", "reason": "already used by another of your sets"}])
    try:
        row = await store.update_set(session, owner=owner, name=name, new_name=target, indicators=cleaned,
                                     stream=stream, now=_now())
    except IntegrityError:  # renamed onto a name another request took meanwhile
        raise Conflict(f"you already have a feature set named {target!r}",
                       errors=[{"field": "name", "reason": "already used by another of your sets"}]) from None
    if row is None:
        raise NotFound(f"no feature set named {name!r}")
    return FeatureSet.from_row(row)


async def delete(session: AsyncSession, owner: UUID, name: str) -> None:
    if not await store.delete_set(session, owner, name):
        raise NotFound(f"no feature set named {name!r}")
