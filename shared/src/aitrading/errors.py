"""The error model: domain exceptions rendered as RFC 9457 `application/problem+json`.

Domain code raises meaning (`NotFound`, `Conflict`, `Invalid`, ...); one set of handlers turns it into
a problem document carrying the request id. Validation errors name each field and the reason.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from aitrading.jsonutil import dumps
from aitrading.request_context import current_request_id

PROBLEM_JSON = "application/problem+json"
_log = structlog.get_logger("aitrading.errors")


class DomainError(Exception):
    """Base of every expected failure. Subclasses set `status` and `title`."""

    status: int = 400
    title: str = "Bad request"
    type_slug: str = "bad-request"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra


class Invalid(DomainError):
    status, title, type_slug = 422, "Unprocessable content", "invalid"


class Unauthorized(DomainError):
    status, title, type_slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str = "missing or invalid credentials", **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(detail, **kw)


class Forbidden(DomainError):
    status, title, type_slug = 403, "Forbidden", "forbidden"


class NotFound(DomainError):
    status, title, type_slug = 404, "Not found", "not-found"


class Conflict(DomainError):
    status, title, type_slug = 409, "Conflict", "conflict"


class RateLimited(DomainError):
    status, title, type_slug = 429, "Too many requests", "rate-limited"


class Unavailable(DomainError):
    status, title, type_slug = 503, "Service unavailable", "unavailable"


class UpstreamTimeout(DomainError):
    status, title, type_slug = 504, "Gateway timeout", "upstream-timeout"


_STATUS_TITLES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 409: "Conflict", 413: "Content too large", 415: "Unsupported media type",
    422: "Unprocessable content", 429: "Too many requests", 500: "Internal server error",
    502: "Bad gateway", 503: "Service unavailable", 504: "Gateway timeout",
}


def problem(status: int, detail: str, *, title: str | None = None, type_slug: str | None = None,
            errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None,
            extra: dict[str, Any] | None = None) -> Response:
    body: dict[str, Any] = {
        "type": f"https://aitrading.dev/problems/{type_slug or status}",
        "title": title or _STATUS_TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "request_id": current_request_id(),
    }
    if errors:
        body["errors"] = errors
    if extra:
        body.update(extra)
    return Response(dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        out.append({"field": ".".join(loc) or "body", "reason": err.get("msg", "invalid")})
    return out


def install_error_handlers(app: FastAPI) -> None:
    async def on_domain(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, DomainError)
        return problem(exc.status, exc.detail, title=exc.title, type_slug=exc.type_slug,
                       errors=exc.errors, headers=exc.headers, extra=exc.extra or None)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = _field_errors(exc)
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        return problem(422, detail, type_slug="validation", errors=errors)

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return problem(exc.status_code, detail, headers=dict(exc.headers or {}))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        _log.exception("unhandled error", path=request.url.path, error=repr(exc))
        return problem(500, "an unexpected error occurred; quote the request id when reporting it")

    app.add_exception_handler(DomainError, on_domain)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


_BY_STATUS: dict[int, type[DomainError]] = {
    401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 422: Invalid, 429: RateLimited,
}


def raise_for_upstream(service: str, status: int, body: Any) -> None:
    """Turn another service's error answer into our own domain error, keeping its detail and fields.

    A 4xx keeps its meaning (the caller asked for something missing or invalid); a 5xx becomes 503
    naming the service, since from our caller's side that service is unavailable.
    """
    if status < 400:
        return
    detail = body.get("detail") if isinstance(body, dict) else None
    errors = body.get("errors") if isinstance(body, dict) else None
    if status >= 500:
        raise Unavailable(f"{service} failed: {detail or status}", service=service)
    error = _BY_STATUS.get(status, DomainError)
    fields = errors if isinstance(errors, list) else None
    exc = error(str(detail or f"{service} answered {status}"), errors=fields)
    if error is DomainError:
        exc.status = status
    raise exc
