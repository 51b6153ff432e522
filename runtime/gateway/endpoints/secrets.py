"""``/system/secrets``: list (names only), create, update, delete.

Values go in, never out: ``GET`` answers ``[{"name", "namespace"}]`` like faasd.
A value is given as ``value`` (text) or ``rawValue`` (base64 bytes).
"""

from __future__ import annotations

import base64
import binascii

from runtime.gateway.web import json_response, optional_namespace, read_json
from runtime.httpcore.server import Handler, Request, Response
from runtime.secrets import SecretStore
from sdk.openfaas import RecordError, validate_name

NAMESPACE = "openfaas-fn"


async def _read_secret(request: Request, *, need_value: bool) -> tuple[str, bytes]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise RecordError("body must be a JSON object with name and value")
    name = validate_name("name", body.get("name"))
    optional_namespace(body)
    if not need_value:
        return name, b""
    value, raw = body.get("value"), body.get("rawValue")
    if raw not in (None, ""):
        if not isinstance(raw, str):
            raise RecordError("rawValue must be a base64 string")
        try:
            return name, base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise RecordError("rawValue is not valid base64") from None
    if not isinstance(value, str) or value == "":
        raise RecordError("value (or rawValue) is required")
    return name, value.encode()


def make_secrets_handler(store: SecretStore) -> Handler:
    async def secrets(request: Request) -> Response:
        if request.method == "GET":
            return json_response(200, [{"name": n, "namespace": NAMESPACE} for n in store.names()])
        if request.method == "POST":
            name, value = await _read_secret(request, need_value=True)
            store.create(name, value)
            return Response(201)
        if request.method == "PUT":
            name, value = await _read_secret(request, need_value=True)
            store.update(name, value)
            return Response(200)
        name, _ = await _read_secret(request, need_value=False)
        store.delete(name)
        return Response(204)

    return secrets
