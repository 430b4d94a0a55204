"""Users' own pattern rules: validated expressions over catalogue features, stored per owner.

A rule is detected on every bar where its expression holds (use `crosses_above` / `crosses_below` for
the bar a condition starts); its detections are named `rule:<name>`, carry the rule's direction and
confidence 1.0, since a rule is a definition the user chose, not an estimate.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.errors import Conflict, Invalid, NotFound
from aitrading.market import indicators
from aitrading.market.indicators import FeatureSpec
from pattern_validator import rules, store
from pattern_validator.detections import Direction

MAX_RULES = 100


def check_feature(name: str) -> FeatureSpec:
    """The catalogue's reading of a feature name (Invalid when it names no feature)."""
    return indicators.parse(name, field="expression")


@dataclass(frozen=True)
class CompiledRule:
    """A rule ready to evaluate: its parsed expression and the features it needs computed."""

    id: UUID
    name: str
    direction: Direction
    expression: rules.Expression
    specs: tuple[FeatureSpec, ...]

    @property
    def history(self) -> int:
        return history_bars(self.expression, self.specs)


def history_bars(expression: rules.Expression, specs: tuple[FeatureSpec, ...]) -> int:
    """Bars before the first bar evaluated that the features (warm-up) and functions (look-back) need."""
    return indicators.history_needed(specs) + expression.lookback


def compile_expression(text: str) -> tuple[rules.Expression, tuple[FeatureSpec, ...]]:
    expression = rules.parse(text, check_feature)
    return expression, tuple(check_feature(name) for name in expression.features)


def features_named(text: str) -> list[str]:
    """The feature names a stored expression reads, without consulting the catalogue."""
    try:
        return list(rules.parse(text, lambda _: None).features)
    except Invalid:
        return []


@dataclass(frozen=True)
class Rule:
    id: UUID
    owner_id: UUID
    name: str
    expression: str
    direction: Direction
    description: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: store.Record) -> Rule:
        return cls(row.id, row.owner_id, row.name, row.expression, Direction(row.direction), row.description,
                   row.created_at, row.updated_at)

    def compiled(self) -> CompiledRule:
        expression, specs = compile_expression(self.expression)
        return CompiledRule(self.id, self.name, self.direction, expression, specs)


@dataclass(frozen=True)
class RuleDraft:
    name: str
    expression: str
    direction: Direction = Direction.NEUTRAL
    description: str | None = None


def _conflict(name: str) -> Conflict:
    return Conflict(f"you already have a rule named {name!r}",
                    errors=[{"field": "name", "reason": "already used by another of your rules"}])


def _values(draft: RuleDraft) -> dict[str, Any]:
    compile_expression(draft.expression)  # refuses what would not evaluate, with its position
    return {"name": draft.name, "expression": draft.expression, "direction": draft.direction.value,
            "description": draft.description}


async def create(session: AsyncSession, owner: UUID, draft: RuleDraft) -> Rule:
    values = _values(draft)
    if await store.rule_named(session, owner, draft.name) is not None:
        raise _conflict(draft.name)
    if await store.count_rules(session, owner) >= MAX_RULES:
        # Every pattern query evaluates all of the caller's rules: the number is bounded.
        raise Conflict(f"you have {MAX_RULES} rules, the most allowed; delete one to add another")
    now = datetime.now(UTC)
    rule_id = uuid.uuid4()
    try:
        await store.insert_rule(session, {**values, "id": rule_id, "owner_id": owner, "created_at": now,
                                          "updated_at": now})
    except IntegrityError as exc:  # the same name saved concurrently
        raise _conflict(draft.name) from exc
    return Rule(rule_id, owner, draft.name, draft.expression, draft.direction, draft.description, now, now)


async def list_for(session: AsyncSession, owner: UUID) -> list[Rule]:
    return [Rule.of(row) for row in await store.rules_of(session, owner)]


def _not_found(rule_id: UUID) -> NotFound:
    return NotFound(f"no rule {rule_id} among yours")


async def get(session: AsyncSession, owner: UUID, rule_id: UUID) -> Rule:
    row = await store.rule_of(session, owner, rule_id)
    if row is None:
        raise _not_found(rule_id)
    return Rule.of(row)


async def replace(session: AsyncSession, owner: UUID, rule_id: UUID, draft: RuleDraft) -> Rule:
    values = _values(draft)
    if await store.rule_of(session, owner, rule_id) is None:
        raise _not_found(rule_id)
    same_name = await store.rule_named(session, owner, draft.name)
    if same_name is not None and same_name.id != rule_id:
        raise _conflict(draft.name)
    try:
        row = await store.update_rule(session, owner, rule_id, values, datetime.now(UTC))
    except IntegrityError as exc:
        raise _conflict(draft.name) from exc
    if row is None:
        raise _not_found(rule_id)
    return Rule.of(row)


async def delete(session: AsyncSession, owner: UUID, rule_id: UUID) -> None:
    if not await store.delete_rule(session, owner, rule_id):
        raise _not_found(rule_id)
