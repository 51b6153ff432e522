"""Response helpers and the one error type the gateway's endpoints raise.

Endpoints raise :class:`HttpError` (or a provider/record error, mapped in
``routes.py``); the message goes to the client as plain text and is written for a
user to act on. Platform-generated errors carry ``X-OpenFaaS-Internal: gateway`` so a
client can tell them from a function's own 4xx/5xx, as faas-provider does.
"""

from __future__ import annotations

import json
from typing import Any

from runtime.httpcore.server import Request, Response
from runtime.httpcore.streams import BodyError, BodyTooLarge
from sdk.openfaas import RecordError, validate_name

JSON = [(b"content-type", b"application/json")]
TEXT = b"text/plain; charset=utf-8"


class HttpError(Exception):
    """An error answered as ``status`` with ``message``; ``headers`` are added to the answer."""

    def __init__(
        self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


def json_response(status: int, payload: Any) -> Response:
    """``payload`` as a JSON body."""
    return Response(status, list(JSON), json.dumps(payload).encode())


def text_response(status: int, text: str, *, internal: bool = False) -> Response:
    """Plain text; ``internal`` marks an error the gateway itself produced."""
    headers = [(b"content-type", TEXT)]
    if internal:
        headers.append((b"x-openfaas-internal", b"gateway"))
    return Response(status, headers, (text.rstrip("\n") + "\n").encode())


def error_response(status: int, message: str, extra: list[tuple[bytes, bytes]] = ()) -> Response:  # type: ignore[assignment]
    response = text_response(status, message, internal=True)
    response.headers.extend(extra)
    return response


async def read_json(request: Request, limit: int = 1024 * 1024) -> Any:
    """Decode a JSON request body; 400 with a reason when it is not JSON, 413 when too large."""
    try:
        raw = await request.body.read_all(limit)
    except BodyTooLarge as exc:
        raise HttpError(413, str(exc)) from None
    except BodyError:
        raise HttpError(400, "request body was cut short") from None
    if not raw.strip():
        raise HttpError(400, "request body is empty: expected a JSON object")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HttpError(400, f"request body is not valid JSON: {exc}") from None


def optional_namespace(body: dict[str, Any]) -> str:
    """The optional ``namespace`` of a request body ("" when absent), checked as a name.

    This runtime has one namespace and ignores the value, but a malformed one is still
    refused (400), as ``FunctionDeployment`` refuses it on deploy.
    """
    namespace = body.get("namespace")
    if namespace is None or namespace == "":
        return ""
    if not isinstance(namespace, str):
        raise RecordError("namespace must be a string")
    return validate_name("namespace", namespace)


def query_params(request: Request) -> dict[str, str]:
    """The query string as a dict (last value wins)."""
    from urllib.parse import parse_qsl

    return dict(parse_qsl(request.query.decode("latin-1"), keep_blank_values=True))
