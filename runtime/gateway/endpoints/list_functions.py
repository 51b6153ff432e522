"""``GET /system/functions``: every deployed function with replicas and invocation counts."""

from __future__ import annotations

from runtime.gateway.metrics import GatewayMetrics
from runtime.gateway.web import json_response
from runtime.httpcore.server import Handler, Request, Response
from runtime.provider import Provider


def status_json(status, metrics: GatewayMetrics) -> dict:  # type: ignore[no-untyped-def]
    """A FunctionStatus as JSON with the gateway's invocation count filled in."""
    out = status.to_json()
    out["invocationCount"] = float(metrics.invocations(status.deployment.service))
    return out


def make_list_functions_handler(provider: Provider, metrics: GatewayMetrics) -> Handler:
    async def list_functions(request: Request) -> Response:
        return json_response(200, [status_json(s, metrics) for s in provider.list()])

    return list_functions
