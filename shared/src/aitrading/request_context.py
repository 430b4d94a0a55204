"""Per-request context (request id, caller token) carried through contextvars."""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
authorization_var: ContextVar[str | None] = ContextVar("authorization", default=None)


def current_request_id() -> str | None:
    return request_id_var.get()


def current_authorization() -> str | None:
    return authorization_var.get()
