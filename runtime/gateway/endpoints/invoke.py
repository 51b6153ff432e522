"""``/function/{name}[/{path}]``: synchronous invocation, proxied to a ready replica.

The function sees only the part of the path after ``/function/<name>`` (``/`` when
empty), with the query string and the raw encoding untouched, every header except
hop-by-hop ones, and ``X-Forwarded-For``/``X-Forwarded-Host``/``X-Call-Id``/
``X-Start-Time`` added as the OpenFaaS gateway does. Replicas take turns.
"""

from __future__ import annotations

import os
import time

from runtime.gateway.invoker import Invoker
from runtime.gateway.web import HttpError, error_response
from runtime.httpcore.server import Handler, Request, Response
from runtime.httpcore.upstream import (
    ClientAborted,
    UpstreamClosedEarly,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
    forwardable,
)

PREFIX = b"/function/"
# Hop-by-hop headers, and the two the gateway sets on the answer itself.
_RESPONSE_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"content-length",
        b"trailer",
        b"upgrade",
        b"x-call-id",
        b"x-start-time",
    }
)


# Methods a call may be sent again for when a replica went away without answering.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def split_function_target(target: bytes, prefix: bytes = PREFIX) -> tuple[str, bytes] | None:
    """Split ``/function/echo/a/b?x=1`` into ``("echo", b"/a/b?x=1")``; ``None`` when no name.

    A dotted ``name.namespace`` keeps only the name: this runtime has one namespace.
    """
    rest = target[len(prefix) :]
    cut = len(rest)
    for sep in (b"/", b"?"):
        i = rest.find(sep)
        if i != -1 and i < cut:
            cut = i
    name = rest[:cut]
    if not name:
        return None
    tail = rest[cut:]
    if not tail.startswith(b"/"):
        tail = b"/" + tail
    name_str = name.decode("latin-1")
    if "." in name_str:
        name_str = name_str.rsplit(".", 1)[0]
    return name_str, tail


def proxy_headers(request: Request) -> tuple[list[tuple[bytes, bytes]], bytes, bytes]:
    """What a function receives: the caller's headers minus hop-by-hop ones, plus
    ``X-Call-Id`` (the caller's, or a new one), ``X-Start-Time`` and, when absent,
    ``X-Forwarded-For``/``X-Forwarded-Host``, as the OpenFaaS gateway sends them.

    Returns the headers, the call id and the start time. One scan of the request's
    headers besides :func:`forwardable`'s: this runs on every call.
    """
    headers = forwardable(request.headers)
    call_id = forwarded_for = forwarded_host = host = None
    for name, value in request.headers:
        if name == b"x-call-id":
            call_id = value
        elif name == b"x-forwarded-for":
            forwarded_for = value
        elif name == b"x-forwarded-host":
            forwarded_host = value
        elif name == b"host":
            host = value
    if call_id is None:
        call_id = os.urandom(16).hex().encode()  # as unique as uuid4, without the object
        headers.append((b"x-call-id", call_id))
    start_ns = b"%d" % time.time_ns()
    headers.append((b"x-start-time", start_ns))
    if forwarded_for is None:
        headers.append((b"x-forwarded-for", request.client.encode()))
    if forwarded_host is None and host is not None:
        headers.append((b"x-forwarded-host", host))
    return headers, call_id, start_ns


def make_invoke_handler(invoker: Invoker, *, timeout: float) -> Handler:
    """Build the ``/function/`` handler proxying through ``invoker`` with ``timeout`` seconds."""
    pool = invoker.pool
    observe = invoker.metrics.observe

    async def invoke(request: Request) -> Response:
        split = split_function_target(request.target)
        if split is None:
            return error_response(400, "missing function name: call /function/<name>")
        name, target = split
        started = time.monotonic()
        headers, call_id, start_ns = proxy_headers(request)
        # A replica that refuses the connection never saw the call (it may have just
        # crashed): try the next one once, then tell the caller it is not ready. One that
        # accepts and closes before answering is exiting too; as nginx does, an
        # idempotent call with its body at hand goes to the next one as well.
        retry_early_close = request.method in IDEMPOTENT
        for attempt in (1, 2):
            try:
                endpoint = await invoker.acquire(name, timeout)
            except HttpError as exc:
                if exc.status != 404:  # unknown names must not grow the metric series
                    observe(name, exc.status, time.monotonic() - started)
                return error_response(exc.status, exc.message)
            try:
                limit = endpoint.timeout or timeout
                upstream = await pool.request(
                    endpoint.host,
                    endpoint.port,
                    request.method,
                    target,
                    headers,
                    request.body,
                    timeout=limit,
                )
                break
            except (UpstreamConnectError, UpstreamClosedEarly) as exc:
                invoker.release(name, endpoint)
                if isinstance(exc, UpstreamClosedEarly) and not (
                    retry_early_close and exc.replayable
                ):
                    observe(name, 502, time.monotonic() - started)
                    return error_response(502, f"function {name!r} broke off the exchange: {exc}")
                if attempt == 2:
                    observe(name, 503, time.monotonic() - started)
                    return error_response(
                        503, f"function {name!r} is not ready: no replica accepted the connection"
                    )
            except ClientAborted as exc:
                invoker.release(name, endpoint)  # its slot must not stay taken
                return error_response(400, str(exc))
            except UpstreamTimeout:
                invoker.release(name, endpoint)
                observe(name, 504, time.monotonic() - started)
                return error_response(504, f"function {name!r} did not answer within {limit:g} s")
            except UpstreamError as exc:
                invoker.release(name, endpoint)
                observe(name, 502, time.monotonic() - started)
                return error_response(502, f"function {name!r} broke off the exchange: {exc}")
        out = [(n, v) for n, v in upstream.headers if n not in _RESPONSE_DROP]
        out.append((b"x-call-id", call_id))
        out.append((b"x-start-time", start_ns))
        response = Response(upstream.status, out, upstream.body, upstream.length)

        def sent(ok: bool) -> None:
            invoker.release(name, endpoint)
            upstream.release(ok)
            observe(name, upstream.status, time.monotonic() - started)

        response.on_sent = sent
        return response

    return invoke
