"""``DELETE /system/functions`` with ``{"functionName": ...}``: remove a function."""

from __future__ import annotations

from runtime.gateway.metrics import GatewayMetrics
from runtime.gateway.web import optional_namespace, read_json, text_response
from runtime.httpcore.server import Handler, Request, Response
from runtime.provider import Provider
from sdk.openfaas import RecordError, validate_name


def make_delete_function_handler(provider: Provider, metrics: GatewayMetrics) -> Handler:
    async def delete_function(request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise RecordError("body must be a JSON object with functionName")
        name = validate_name("functionName", body.get("functionName"))
        optional_namespace(body)
        await provider.remove(name)
        metrics.forget(name)
        return text_response(200, f"removed {name}")

    return delete_function
