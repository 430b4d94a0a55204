"""The gateway's own routes (the proxy paths are in `proxy`): the merged OpenAPI document."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from aitrading.jsonutil import dumps
from api_gateway.openapi_merge import MergedOpenApi

router = APIRouter()


@router.get("/openapi.json", include_in_schema=False)
async def merged_openapi(request: Request) -> Response:
    merged: MergedOpenApi = request.app.state.openapi
    return Response(dumps(await merged.document()), media_type="application/json")
