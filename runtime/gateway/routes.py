"""The gateway's route table, readable on one screen, and its one error mapper.

``/function/`` and ``/async-function/`` are matched first by prefix: they carry
almost every request. Everything under ``/system/`` needs basic auth.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from runtime.gateway.auth import CHALLENGE, BasicAuth
from runtime.gateway.web import HttpError, error_response, text_response
from runtime.httpcore.server import Handler, Request, Response
from runtime.provider import ProviderError
from sdk.openfaas import RecordError

log = logging.getLogger(__name__)

ParamHandler = Callable[[Request, str], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoints:
    """Every handler the table routes to (built in ``app.py``)."""

    invoke: Handler
    async_invoke: Handler
    list_functions: Handler
    deploy_function: Handler
    update_function: Handler
    delete_function: Handler
    function_status: ParamHandler
    scale_function: ParamHandler
    info: Handler
    namespaces: Handler
    secrets: Handler
    logs: Handler
    queue: Handler
    queue_retry: Handler
    healthz: Handler
    metrics: Handler


def build_router(e: Endpoints, auth: BasicAuth) -> Handler:
    """The gateway's request handler: route, authenticate ``/system/*``, map errors."""
    system: dict[str, dict[str, Handler]] = {
        "/system/functions": {
            "GET": e.list_functions,
            "POST": e.deploy_function,
            "PUT": e.update_function,
            "DELETE": e.delete_function,
        },
        "/system/info": {"GET": e.info},
        "/system/namespaces": {"GET": e.namespaces},
        "/system/secrets": {m: e.secrets for m in ("GET", "POST", "PUT", "DELETE")},
        "/system/logs": {"GET": e.logs},
        "/system/queue": {"GET": e.queue},
        "/system/queue/retry": {"POST": e.queue_retry},
    }
    with_name: dict[str, dict[str, ParamHandler]] = {
        "/system/function/": {"GET": e.function_status},
        "/system/scale-function/": {"POST": e.scale_function},
    }
    public: dict[str, dict[str, Handler]] = {
        "/healthz": {"GET": e.healthz},
        "/metrics": {"GET": e.metrics},
    }

    async def route(request: Request) -> Response:
        target = request.target
        if target.startswith(b"/function/"):
            return await e.invoke(request)
        if target.startswith(b"/async-function/"):
            return await _guard(e.async_invoke, request)
        path = request.path
        if path.startswith("/system/"):
            if not auth.allows(request.header(b"authorization")):
                return error_response(401, "invalid credentials", CHALLENGE)
            methods = system.get(path)
            if methods is not None:
                return await _guard(_pick(methods, request), request)
            for prefix, named in with_name.items():
                name = path[len(prefix) :]
                if path.startswith(prefix) and name and "/" not in name:
                    handler = named.get(request.method)
                    if handler is None:
                        return _not_allowed(named)
                    return await _guard(lambda r, h=handler, n=name: h(r, n), request)
            return error_response(404, f"no such endpoint: {path}")
        methods = public.get(path)
        if methods is not None:
            return await _guard(_pick(methods, request), request)
        if path == "/":
            return text_response(
                200, "OpenFaaS-compatible gateway (ofc). API: /system/, functions: /function/<name>"
            )
        return error_response(404, f"no such endpoint: {path}")

    return route


def _pick(methods: dict[str, Handler], request: Request) -> Handler:
    handler = methods.get(request.method)
    if handler is None:
        allowed = _not_allowed(methods)

        async def refuse(_: Request) -> Response:
            return allowed

        return refuse
    return handler


def _not_allowed(methods: dict) -> Response:  # type: ignore[type-arg]
    allow = ", ".join(sorted(methods)).encode()
    return error_response(405, "method not allowed", [(b"allow", allow)])


async def _guard(handler: Handler, request: Request) -> Response:
    """Run ``handler`` and turn the platform's exceptions into answers."""
    try:
        return await handler(request)
    except HttpError as exc:
        return error_response(exc.status, exc.message, exc.headers)
    except RecordError as exc:
        return error_response(400, str(exc))
    except ProviderError as exc:
        return error_response(exc.status, str(exc))
