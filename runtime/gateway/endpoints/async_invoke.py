"""``/async-function/{name}[/{path}]``: queue a call, answer 202 with its ``X-Call-Id``.

The call is committed to the durable queue before the 202 goes out, so a crash after
the answer loses nothing. ``X-Callback-Url`` (optional) must be an http(s) URL; the
worker POSTs the function's answer there when the call finishes.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from runtime.gateway.endpoints.invoke import proxy_headers, split_function_target
from runtime.gateway.web import HttpError, error_response
from runtime.httpcore.server import Handler, Request, Response
from runtime.httpcore.streams import BodyError, BodyTooLarge
from runtime.provider import Provider
from runtime.queue.store import CallStore, NewCall

PREFIX = b"/async-function/"


def _valid_callback(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def make_async_invoke_handler(
    provider: Provider, store: CallStore, wake: Callable[[], None], *, max_body: int
) -> Handler:
    """Build the handler that queues calls into ``store`` and wakes the workers."""

    async def async_invoke(request: Request) -> Response:
        if request.method != "POST":
            return error_response(405, "async calls must use POST", [(b"allow", b"POST")])
        split = split_function_target(request.target, PREFIX)
        if split is None:
            return error_response(400, "missing function name: call /async-function/<name>")
        name, target = split
        if provider.endpoints(name) is None:
            return error_response(404, f"function {name!r} not found")
        callback = request.header(b"x-callback-url")
        callback_url = callback.decode("latin-1").strip() if callback else None
        if callback_url is not None and not _valid_callback(callback_url):
            return error_response(400, f"X-Callback-Url {callback_url!r} is not an http(s) URL")
        try:
            body = await request.body.read_all(max_body)
        except BodyTooLarge as exc:
            return error_response(413, str(exc))
        except BodyError:
            return error_response(400, "request body was cut short")
        forwarded, call_id_bytes, start_ns = proxy_headers(request)
        call_id = call_id_bytes.decode("latin-1")
        path, _, query = target.partition(b"?")
        # Kept as the function will receive them, X-Call-Id included.
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in forwarded]
        try:
            store.enqueue(
                NewCall(
                    call_id=call_id,
                    function=name,
                    method=request.method,
                    path=path.decode("latin-1"),
                    query=query.decode("latin-1"),
                    headers=headers,
                    body=body,
                    callback_url=callback_url,
                )
            )
        except ValueError as exc:  # e.g. a call id that is already queued
            raise HttpError(409, str(exc)) from None
        wake()
        return Response(
            202,
            [
                (b"x-call-id", call_id_bytes),
                (b"x-start-time", start_ns),
                (b"content-type", b"text/plain; charset=utf-8"),
            ],
            b"",
        )

    return async_invoke
