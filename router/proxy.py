"""Forwarding one request to an upstream and its answer back, streamed both ways.

What passes: the method, the raw request-target (rewritten by the route only), every
header except hop-by-hop ones, the body as it arrives (never buffered whole), and the
upstream's status, headers and body. What the router sets: ``X-Forwarded-For`` (the
client's address), ``X-Forwarded-Host`` (the Host it asked for) and
``X-Forwarded-Proto`` (the public scheme), replacing whatever the client sent: the
router is the edge, so client-supplied values are not to be trusted.

Session cookie: for every route but the protected dashboard and edge-auth itself, the
``openfaas_cloud_token`` cookie is taken out of the request (a user's function must
never see a visitor's platform session) and a ``Set-Cookie`` for it is taken out of
the answer (a function must not be able to plant or clear one for the whole domain).

Errors the router makes itself carry ``X-OpenFaaS-Internal: router``.
"""

from __future__ import annotations

import logging
import time

from router.config import Upstream
from router.metrics import RouterMetrics
from runtime.httpcore.server import Request, Response
from runtime.httpcore.upstream import (
    ClientAborted,
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamTimeout,
    forwardable,
)
from sdk.tokens import COOKIE_NAME

__all__ = ["Forwarder", "error_response", "strip_session_cookie"]

log = logging.getLogger(__name__)

TEXT = b"text/plain; charset=utf-8"
_SESSION = COOKIE_NAME.encode()
# Set by the router itself; a client's own values are dropped.
_FORWARDED = frozenset(
    {b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto", b"forwarded"}
)
# How messages name each upstream (the label is the metrics' ``upstream``).
_NAMES = {"gateway": "gateway", "git": "git remote", "auth": "sign-in service"}
# Hop-by-hop response headers, and content-length, which the server writes itself.
_RESPONSE_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"content-length",
        b"trailer",
        b"upgrade",
        b"proxy-connection",
    }
)


def error_response(
    status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> Response:
    """A short plain-text answer made by the router."""
    out = [(b"content-type", TEXT), (b"x-openfaas-internal", b"router")]
    if headers:
        out += headers
    return Response(status, out, (message.rstrip("\n") + "\n").encode())


def strip_session_cookie(value: bytes) -> bytes:
    """A ``Cookie`` header value without the platform's session cookie (``b""`` if nothing is left)."""
    pairs = [p.strip() for p in value.split(b";")]
    return b"; ".join(p for p in pairs if p and not _names_session(p))


def _names_session(pair: bytes) -> bool:
    """Whether ``name=value`` (a Cookie pair or a Set-Cookie value) is the session cookie.

    Browsers trim whitespace around the name (RFC 6265 5.2), so ``openfaas_cloud_token =x``
    sets the session too and must be caught as well.
    """
    return pair.partition(b"=")[0].strip() == _SESSION


class Forwarder:
    """Sends requests to upstreams through one pool of keep-alive connections."""

    def __init__(
        self, pool: UpstreamPool, metrics: RouterMetrics, *, proto: bytes, timeout: float
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.proto = proto
        self.timeout = timeout

    def headers(self, request: Request, keep_session: bool) -> list[tuple[bytes, bytes]]:
        """The headers sent upstream (one pass over the client's, after hop-by-hop removal)."""
        out: list[tuple[bytes, bytes]] = []
        for name, value in forwardable(request.headers):
            if name in _FORWARDED:
                continue
            if name == b"cookie" and not keep_session and _SESSION in value:
                value = strip_session_cookie(value)
                if not value:
                    continue
            out.append((name, value))
        out.append((b"x-forwarded-for", request.client.encode()))
        host = request.header(b"host")
        if host is not None:
            out.append((b"x-forwarded-host", host))
        out.append((b"x-forwarded-proto", self.proto))
        return out

    async def forward(
        self,
        request: Request,
        upstream: Upstream,
        target: bytes,
        *,
        label: str,
        keep_session: bool = False,
    ) -> Response:
        """Forward ``request`` to ``upstream`` as ``target``; map failures to 502 or 504.

        ``label`` names the upstream in metrics and messages (``gateway``, ``git``, ``auth``).
        """
        name = _NAMES.get(label, label)
        started = time.monotonic()
        try:
            answer = await self.pool.request(
                upstream.host,
                upstream.port,
                request.method,
                upstream.prefix + target,
                self.headers(request, keep_session),
                request.body,
                timeout=self.timeout,
            )
        except ClientAborted:
            return error_response(400, "the request body was cut short")
        except UpstreamTimeout:
            log.warning("%s %s: %s at %s did not answer within %g s",
                        request.method, request.path, label, upstream.url, self.timeout)  # fmt: skip
            return error_response(
                504, f"the {name} did not answer within {self.timeout:g} s; try again later"
            )
        except UpstreamConnectError as exc:
            log.warning("%s %s: %s", request.method, request.path, exc)
            return error_response(
                502,
                f"the {name} is not reachable; try again in a moment, and if this goes on, "
                "ask the platform's operator to check that it is running",
            )
        except UpstreamError as exc:
            log.warning("%s %s: %s at %s: %s",
                        request.method, request.path, label, upstream.url, exc)  # fmt: skip
            return error_response(502, f"the {name} broke off the exchange; try again")
        self.metrics.upstream(label, time.monotonic() - started)
        if keep_session:
            out = [(n, v) for n, v in answer.headers if n not in _RESPONSE_DROP]
        else:
            out = [
                (n, v)
                for n, v in answer.headers
                if n not in _RESPONSE_DROP
                and not (n == b"set-cookie" and _names_session(v))
            ]
        response = Response(answer.status, out, answer.body, answer.length)
        response.on_sent = answer.release
        return response
