"""``PUT /system/functions``: replace a function; the old version serves until the new one is healthy."""

from __future__ import annotations

from runtime.gateway.endpoints.deploy_function import read_deployment
from runtime.gateway.web import read_json, text_response
from runtime.httpcore.server import Handler, Request, Response
from runtime.provider import Provider


def make_update_function_handler(provider: Provider) -> Handler:
    async def update_function(request: Request) -> Response:
        spec = read_deployment(await read_json(request))
        await provider.update(spec)
        return text_response(200, f"updating {spec.service}")

    return update_function
