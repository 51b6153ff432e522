"""Access to protected paths (the dashboard), decided by edge-auth and cached per session.

For a protected path the router asks edge-auth ``GET /q/?r=<path>`` with the request's
``Cookie`` and ``Authorization`` headers: 200 lets the request through, 401 (or a
redirect) means "sign in", 403 "signed in but not allowed"; anything else, or no
answer, means edge-auth cannot decide and the request is refused (503): protected
paths fail closed.

A page with many assets would ask edge-auth once per asset, so a "yes" is remembered
for the same session token (and Authorization header) for ``OFC_ROUTER_SESSION_TTL``
seconds, and never past the token's own expiry (edge-auth's ``X-OFC-Expires``, else
the token's ``exp`` claim; when neither is known the "yes" is not remembered). Only "yes" is remembered: signing in
takes effect at once. The token is held in memory only, as a dictionary key; it is
never logged.
"""

from __future__ import annotations

import hashlib
import logging
import time
from urllib.parse import quote_from_bytes

from router.config import Upstream
from router.metrics import RouterMetrics
from runtime.httpcore.server import Request
from runtime.httpcore.streams import BodyError, BodyTooLarge
from runtime.httpcore.upstream import UpstreamError, UpstreamPool, UpstreamTimeout
from sdk.tokens import COOKIE_NAME

__all__ = ["ALLOW", "FORBIDDEN", "LOGIN", "UNAVAILABLE", "SessionGate", "session_tokens"]

log = logging.getLogger(__name__)

ALLOW = "allowed"
LOGIN = "login"
FORBIDDEN = "forbidden"
UNAVAILABLE = "unavailable"

MAX_CACHED = 10_000  # sessions remembered at once; expired ones are dropped first
_COOKIE_PREFIX = COOKIE_NAME.encode() + b"="
EXPIRES_HEADER = b"x-ofc-expires"  # sent by edge-auth with a 200: the token's exp


def session_tokens(cookie_headers: list[bytes]) -> list[bytes]:
    """Every value of the session cookie among ``Cookie`` header values (usually one)."""
    found = []
    for header in cookie_headers:
        if _COOKIE_PREFIX not in header:
            continue
        for pair in header.split(b";"):
            pair = pair.strip()
            if pair.startswith(_COOKIE_PREFIX):
                found.append(pair[len(_COOKIE_PREFIX) :])
    return found


class SessionGate:
    """Asks edge-auth whether a request may reach a protected path; remembers each "yes"."""

    def __init__(
        self,
        pool: UpstreamPool,
        auth: Upstream,
        metrics: RouterMetrics,
        *,
        ttl: float,
        timeout: float,
        proto: bytes,
    ) -> None:
        self.pool = pool
        self.auth = auth
        self.metrics = metrics
        self.ttl = ttl
        self.timeout = timeout
        self.proto = proto
        # (token, authorization) -> (monotonic deadline, token exp in unix seconds)
        self._allowed: dict[bytes, tuple[float, float]] = {}

    async def decide(self, request: Request, path: bytes) -> str:
        """:data:`ALLOW`, :data:`LOGIN`, :data:`FORBIDDEN` or :data:`UNAVAILABLE`."""
        cookies: list[bytes] = []
        authorization = b""
        host = b""
        for name, value in request.headers:
            if name == b"cookie":
                cookies.append(value)
            elif name == b"authorization":
                authorization = value
            elif name == b"host":
                host = value
        tokens = session_tokens(cookies)
        token = tokens[0] if tokens else b""
        # Remembered per credentials; never with two session cookies, where edge-auth might
        # have judged another one than this key would name.
        # Hashed: the client chooses these bytes (up to the header limit) and they are kept.
        key = (
            hashlib.sha256(token + b"\0" + authorization).digest()
            if (token or authorization) and len(tokens) < 2
            else None
        )
        if key is not None:
            remembered = self._allowed.get(key)
            if remembered is not None:
                if remembered[0] > time.monotonic() and remembered[1] > time.time():
                    self.metrics.session("cached")
                    return ALLOW
                del self._allowed[key]
        decision, expires = await self._ask(path, cookies, authorization, host, request.client)
        self.metrics.session(decision)
        # Remembered only until the session's end as edge-auth states it (X-OFC-Expires).
        if decision == ALLOW and key is not None and expires is not None:
            self._remember(key, expires)
        return decision

    def _remember(self, key: bytes, expires: float) -> None:
        if len(self._allowed) >= MAX_CACHED:
            now_mono, now = time.monotonic(), time.time()
            self._allowed = {
                k: v for k, v in self._allowed.items() if v[0] > now_mono and v[1] > now
            }
            if len(self._allowed) >= MAX_CACHED:
                self._allowed.clear()
        self._allowed[key] = (time.monotonic() + self.ttl, expires)

    async def _ask(
        self, path: bytes, cookies: list[bytes], authorization: bytes, host: bytes, client: str
    ) -> tuple[str, float | None]:
        """edge-auth's decision, and until when (unix seconds) the session is valid when known."""
        headers = [(b"cookie", c) for c in cookies]
        if authorization:
            headers.append((b"authorization", authorization))
        headers += [
            (b"x-forwarded-for", client.encode()),
            (b"x-forwarded-host", host),
            (b"x-forwarded-proto", self.proto),
        ]
        target = self.auth.prefix + b"/q/?r=" + quote_from_bytes(path, safe="/").encode()
        started = time.monotonic()
        try:
            response = await self.pool.request(
                self.auth.host, self.auth.port, "GET", target, headers, b"", timeout=self.timeout
            )
        except UpstreamTimeout:
            log.warning("edge-auth at %s did not decide within %g s", self.auth.url, self.timeout)
            return UNAVAILABLE, None
        except UpstreamError as exc:
            log.warning("edge-auth at %s cannot be asked: %s", self.auth.url, exc)
            return UNAVAILABLE, None
        self.metrics.upstream("auth", time.monotonic() - started)
        ok = False
        try:
            await response.body.read_all(64 * 1024)  # small; read so the connection is reusable
            ok = True
        except (BodyError, BodyTooLarge):
            pass
        finally:
            response.release(ok)
        status = response.status
        if status == 200:
            return ALLOW, _expires_header(response.headers)
        if status == 401 or 300 <= status < 400:
            return LOGIN, None
        if status == 403:
            return FORBIDDEN, None
        log.warning("edge-auth at %s answered %d to an access query", self.auth.url, status)
        return UNAVAILABLE, None


def _expires_header(headers: list[tuple[bytes, bytes]]) -> float | None:
    """edge-auth's ``X-OFC-Expires`` (the token's exp, unix seconds), when it sent one."""
    for name, value in headers:
        if name == EXPIRES_HEADER:
            try:
                return float(value)
            except ValueError:
                return None
    return None
