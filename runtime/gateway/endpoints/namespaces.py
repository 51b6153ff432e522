"""``GET /system/namespaces``: the namespaces functions live in; this runtime has one."""

from __future__ import annotations

from runtime.gateway.web import json_response
from runtime.httpcore.server import Handler, Request, Response

NAMESPACE = "openfaas-fn"


def make_namespaces_handler() -> Handler:
    """Answer ``["openfaas-fn"]``: a JSON array of names, as ``faas-cli namespace list`` reads."""

    async def namespaces(request: Request) -> Response:
        return json_response(200, [NAMESPACE])

    return namespaces
