"""``POST /system/scale-function/{name}`` with ``{"replicas": N}``.

Like the OpenFaaS CE gateway, the count is clamped to the function's
``com.openfaas.scale.max`` label (default 5); 0 is allowed and leaves the function
deployed with no replica (calls get 503 until it is scaled up again).
"""

from __future__ import annotations

from runtime.gateway.web import optional_namespace, read_json, text_response
from runtime.httpcore.server import Request, Response
from runtime.provider import Provider
from sdk.openfaas import RecordError

DEFAULT_MAX_REPLICAS = 5


def make_scale_function_handler(provider: Provider):  # type: ignore[no-untyped-def]
    async def scale_function(request: Request, name: str) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise RecordError("body must be a JSON object with replicas")
        replicas = body.get("replicas")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise RecordError("replicas must be a whole number of 0 or more")
        service = body.get("serviceName")
        if service not in (None, "", name):
            raise RecordError(f"serviceName {service!r} does not match the path's {name!r}")
        optional_namespace(body)
        labels = provider.get(name).deployment.labels
        try:
            maximum = int(labels.get("com.openfaas.scale.max", DEFAULT_MAX_REPLICAS))
        except ValueError:
            maximum = DEFAULT_MAX_REPLICAS
        replicas = min(replicas, max(1, maximum))
        await provider.scale(name, replicas)
        return text_response(202, f"scaling {name} to {replicas}")

    return scale_function
