"""Run something once the caller's transaction has committed: a resting paper order joins the in-memory
book, an external order placed by a strategy wakes the reconciler. Nothing runs when it rolls back.

Actions are small, synchronous and harmless if what they refer to did not commit after all (a savepoint
rolled back inside a committed transaction): the book and the reconciler check the database anyway.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

_log = structlog.get_logger(__name__)
_ACTIONS = "trading_engine.after_commit"
_LISTENING = "trading_engine.after_commit.listening"


def after_commit(session: AsyncSession, action: Callable[[], None]) -> None:
    sync = session.sync_session
    if not sync.info.get(_LISTENING):
        event.listen(sync, "after_commit", _run)
        event.listen(sync, "after_rollback", _discard)
        sync.info[_LISTENING] = True
    sync.info.setdefault(_ACTIONS, []).append(action)


def _run(sync: Session) -> None:
    actions: list[Callable[[], None]] = sync.info.pop(_ACTIONS, [])
    for action in actions:
        try:
            action()
        except Exception:  # the commit happened; the sweeps catch up with what the action missed
            _log.exception("after-commit action failed")


def _discard(sync: Session) -> None:
    sync.info.pop(_ACTIONS, None)
