"""``GET /system/function/{name}``: one function's status, 404 when it is not deployed."""

from __future__ import annotations

from runtime.gateway.endpoints.list_functions import status_json
from runtime.gateway.metrics import GatewayMetrics
from runtime.gateway.web import json_response
from runtime.httpcore.server import Request, Response
from runtime.provider import Provider


def make_function_status_handler(provider: Provider, metrics: GatewayMetrics):  # type: ignore[no-untyped-def]
    async def function_status(request: Request, name: str) -> Response:
        return json_response(200, status_json(provider.get(name), metrics))

    return function_status
