"""One OpenAPI document for the whole public API, merged from the routed services' own documents.

Each service's `/openapi.json` is fetched (concurrently, with a short timeout) and its `/api/v1/...`
paths that the gateway routes to it are kept; internal paths (`/internal/...`, probes) are not public
and are left out. Component names are prefixed with the service name (`user-service.LoginIn`) and every
`$ref` rewritten, so two services' `OrderOut` never clash; operation ids are prefixed the same way.
Security is the gateway's: a bearer token or an API key, except on public prefixes. The result is
cached for `openapi_cache_ttl_s`; a service that is down is left out and named in the description,
and comes back on the next rebuild.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from aitrading.jsonutil import loads
from api_gateway.routes import API_ROOT, RouteTable, Upstream
from api_gateway.settings import Settings
from api_gateway.upstream_http import UpstreamError, UpstreamHttp

_log = structlog.get_logger("api_gateway.openapi_merge")

_REF_ROOT = "#/components/"
_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
               "description": "An access token from POST /api/v1/auth/login"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
               "description": "An API key (atp_...), exchanged by the gateway for an access token"},
}


class MergedOpenApi:
    def __init__(self, routes: RouteTable, http: UpstreamHttp, settings: Settings) -> None:
        self.routes = routes
        self.http = http
        self.settings = settings
        self._document: dict[str, Any] | None = None
        self._built_at = float("-inf")
        self._lock = asyncio.Lock()

    def _fresh(self) -> dict[str, Any] | None:
        if time.monotonic() - self._built_at < self.settings.openapi_cache_ttl_s:
            return self._document
        return None

    async def document(self) -> dict[str, Any]:
        document = self._fresh()
        if document is not None:
            return document
        async with self._lock:  # one rebuild at a time; callers waiting meanwhile get its result
            document = self._fresh()
            if document is None:
                document = self._document = await self._build()
                self._built_at = time.monotonic()
            return document

    async def _build(self) -> dict[str, Any]:
        upstreams = [u for u in self.routes.upstreams.values() if u.prefixes]
        fetched = await asyncio.gather(*(self._fetch(upstream) for upstream in upstreams))
        return merge_documents(self.routes, self.settings, list(zip(upstreams, fetched, strict=True)))

    async def _fetch(self, upstream: Upstream) -> dict[str, Any] | str:
        """The service's document, or why it could not be had."""
        try:
            status, body = await self.http.fetch(upstream.origin, "/openapi.json",
                                                 timeout_s=self.settings.openapi_fetch_timeout_s,
                                                 headers=[(b"accept", b"application/json")])
            if status != 200:
                return f"answered {status}"
            document = loads(body)
        except (UpstreamError, TimeoutError, ValueError) as exc:
            return f"unreachable ({exc.__class__.__name__})"
        if not isinstance(document, dict) or not isinstance(document.get("paths"), dict):
            return "served no OpenAPI document"
        return document


def merge_documents(routes: RouteTable, settings: Settings,
                    fetched: list[tuple[Upstream, dict[str, Any] | str]]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    components: dict[str, dict[str, Any]] = {"securitySchemes": dict(_SECURITY_SCHEMES)}
    tags: list[dict[str, str]] = []
    included: list[str] = []
    missing: list[str] = []
    for upstream, document in fetched:
        if isinstance(document, str):
            missing.append(f"{upstream.name} ({document})")
            continue
        included.append(upstream.name)
        info = document.get("info") or {}
        tags.append({"name": upstream.name, "description": str(info.get("description", ""))})
        _merge_one(routes, upstream, document, paths, components)
    description = "The public API of the AI trading platform, served through the gateway."
    if included:
        description += "\n\nServices included: " + ", ".join(included) + "."
    if missing:
        description += ("\n\nNot included (unavailable when this document was built): "
                        + "; ".join(missing) + ".")
    return {
        "openapi": "3.1.0",
        "info": {"title": "AI Trading Platform API", "version": settings.version, "description": description},
        "paths": dict(sorted(paths.items())),
        "components": {section: dict(sorted(items.items())) for section, items in components.items()},
        "security": [{"bearer": []}, {"apiKey": []}],
        "tags": tags,
    }


def _merge_one(routes: RouteTable, upstream: Upstream, document: dict[str, Any], paths: dict[str, Any],
               components: dict[str, dict[str, Any]]) -> None:
    prefix = upstream.name + "."
    renamed = _rewrite_refs(document, prefix)
    for section, items in (renamed.get("components") or {}).items():
        if section == "securitySchemes" or not isinstance(items, dict):
            continue  # the gateway's security is the one that applies
        target = components.setdefault(section, {})
        for name, value in items.items():
            target[prefix + name] = value
    for path, item in (renamed.get("paths") or {}).items():
        if not path.startswith(API_ROOT) or not isinstance(item, dict):
            continue
        resolved = routes.resolve(path)
        if resolved is None or resolved[0].upstream is not upstream:
            continue
        route, rest = resolved
        public = route.is_public(rest)
        merged_item: dict[str, Any] = {}
        for key, operation in item.items():
            if key in _METHODS and isinstance(operation, dict):
                operation = dict(operation)
                if "operationId" in operation:
                    operation["operationId"] = prefix + str(operation["operationId"])
                operation["tags"] = [upstream.name]
                operation["security"] = [] if public else [{"bearer": []}, {"apiKey": []}]
            merged_item[key] = operation
        paths[path] = merged_item


def _rewrite_refs(node: Any, prefix: str) -> Any:
    """A copy of `node` with every local component `$ref` pointing at the prefixed name."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(_REF_ROOT):
                section, _, name = value[len(_REF_ROOT):].partition("/")
                out[key] = f"{_REF_ROOT}{section}/{prefix}{name}"
            else:
                out[key] = _rewrite_refs(value, prefix)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item, prefix) for item in node]
    return node
