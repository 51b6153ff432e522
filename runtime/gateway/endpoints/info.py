"""``GET /system/info``: provider and version, in the OpenFaaS shape."""

from __future__ import annotations

import platform

from runtime.gateway.web import json_response
from runtime.httpcore.server import Handler, Request, Response

VERSION = {"release": "0.1.0", "sha": "dev", "commit_message": ""}


def make_info_handler(provider_name: str) -> Handler:
    body = {
        "provider": {
            "provider": f"ofc-{provider_name}",
            "orchestration": provider_name,
            "version": VERSION,
        },
        "version": VERSION,
        "arch": platform.machine(),
    }

    async def info(request: Request) -> Response:
        return json_response(200, body)

    return info
