"""Where a request goes, decided from its Host header and raw request-target alone.

With ``OFC_DOMAIN=example.com``::

    alice.example.com/hello/a?b=1      user function  -> gateway /function/alice-hello/a?b=1
    example.com/alice/hello/a?b=1      the same, path style (also on 127.0.0.1 or any IP literal)
    system.example.com/github-event    webhook        -> gateway /function/github-event
    system.example.com/dashboard/x     protected      -> gateway /function/dashboard/x
    system.example.com/                307 to /dashboard/
    system.example.com/git/..., example.com/git/...   -> git remote /git/...
    auth.system.example.com/...        edge-auth      -> edge-auth /...
    example.com/healthz, /metrics      the router's own

Whether a user function may be reached (it exists and its owner label names the user)
is decided afterwards, by :mod:`router.functions`. This module only guarantees the
shape: the upstream target always starts with ``/function/<name>`` built from a
validated name, or is a git or edge-auth path, so no request can reach the gateway's
``/system/`` or ``/async-function/``; request-targets that are not origin-form or hold
``.``/``..`` segments (in any percent-encoding) are refused before anything else.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

__all__ = ["Route", "RouteTable", "NotRouted", "RESERVED"]

# Kinds of route, also the ``route`` label of the router's metrics.
FUNCTION = "function"
GITHUB_EVENT = "github-event"
DASHBOARD = "dashboard"
GIT = "git"
AUTH = "auth"
HEALTHZ = "healthz"
METRICS = "metrics"
TO_DASHBOARD = "redirect"
NONE = "none"  # refused before routing

# Sub-domains and path-style first segments that are never user names.
RESERVED = frozenset({"system", "auth", "git", "healthz", "metrics", "dashboard", "www"})

_FUNCTION_NAME = re.compile(rb"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # DNS-1123, as deployed
_USER = re.compile(rb"[a-z0-9][-a-z0-9]{0,38}")  # GitHub logins, lower-cased
_IPV4 = re.compile(rb"\d{1,3}(\.\d{1,3}){3}")
MEMO_SIZE = 4096  # (Host, target) pairs whose route is remembered; most traffic repeats
MEMO_TARGET = 256  # only short targets without a query are remembered: memory stays small


class Route(NamedTuple):
    """A routed request: its kind, the upstream request-target and, for a user function,
    the user (lower case) and the deployed name ``<user>-<fn>``."""

    kind: str
    target: bytes = b""
    user: str = ""
    function: str = ""  # <fn> as in the URL
    name: str = ""  # <user>-<fn>, the name on the gateway


class NotRouted(Exception):
    """The request goes nowhere: answered ``status`` with ``message`` (for the user to act on)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RouteTable:
    """Maps (Host, request-target) to a :class:`Route` for one public domain."""

    def __init__(self, domain: str) -> None:
        self.domain = domain
        self._domain = domain.encode()
        self._suffix = b"." + self._domain
        self._memo: dict[tuple[bytes | None, bytes], Route] = {}

    def route(self, host: bytes | None, target: bytes) -> Route:
        """The route of a request; :class:`NotRouted` (400 or 404) when there is none."""
        key = (host, target)
        route = self._memo.get(key)
        if route is None:
            route = self._route(host, target)
            # A client chooses targets: remember only short ones without a query, so the
            # memo holds at most MEMO_SIZE small entries whatever is sent.
            if len(target) <= MEMO_TARGET and b"?" not in target and len(host or b"") <= 255:
                if len(self._memo) >= MEMO_SIZE:
                    self._memo.clear()  # a stream of distinct URLs only costs misses
                self._memo[key] = route
        return route

    def _route(self, host: bytes | None, target: bytes) -> Route:
        if not target.startswith(b"/"):
            # Absolute-form ("GET http://gateway/system/...") and "*" are proxy requests.
            raise NotRouted(400, "the request-target must be a path starting with /")
        path = target.partition(b"?")[0]
        if (b"." in path or b"%" in path or b"\\" in path) and _has_dot_segment(path):
            raise NotRouted(400, "the path must not contain '.' or '..' segments")
        name = _hostname(host)
        if name == self._domain or not name or _is_ip_literal(name):
            return self._bare(target)
        if name.endswith(self._suffix):
            sub = name[: -len(self._suffix)]
            if sub == b"system":
                return self._system(target)
            if sub == b"auth.system":
                return Route(AUTH, target)
            if b"." not in sub and sub.decode("latin-1") not in RESERVED:
                return self._function(sub, target.lstrip(b"/"))
        raise NotRouted(
            404,
            f"no such host: {name.decode('latin-1')!r}; functions are at "
            f"<user>.{self.domain}/<function>",
        )

    def _bare(self, target: bytes) -> Route:
        """The bare domain or an IP literal: the router's own paths, git, and path style."""
        first, rest = _split(target.lstrip(b"/"))
        if first in (b"healthz", b"metrics") and not rest.startswith(b"/"):
            return Route(HEALTHZ if first == b"healthz" else METRICS)
        if first == b"git":
            return Route(GIT, b"/git" + rest)
        if not first:
            raise NotRouted(
                404,
                f"no function named: call <user>.{self.domain}/<function> or /<user>/<function>",
            )
        user = first.lower()
        if user.decode("latin-1") in RESERVED:
            raise NotRouted(404, f"not found: /{first.decode('latin-1')}")
        return self._function(user, rest.lstrip(b"/"))

    def _system(self, target: bytes) -> Route:
        first, rest = _split(target.lstrip(b"/"))
        if first == b"github-event":
            return Route(GITHUB_EVENT, b"/function/github-event" + rest)
        if first == b"dashboard":
            return Route(DASHBOARD, b"/function/dashboard" + rest)
        if first == b"git":
            return Route(GIT, b"/git" + rest)
        if not first and not rest.startswith(b"/"):
            return Route(TO_DASHBOARD)
        raise NotRouted(
            404,
            f"not found: system.{self.domain} serves /dashboard/, /github-event and /git/ only",
        )

    def _function(self, user: bytes, target: bytes) -> Route:
        """``target`` (no leading slash) is ``<fn>[/rest][?query]`` for ``user``."""
        fn, rest = _split(target)
        user_str = user.decode("latin-1")
        if not _USER.fullmatch(user):
            raise NotRouted(404, f"no such user: {user_str!r}")
        if not fn:
            raise NotRouted(404, f"no function named: call {user_str}.{self.domain}/<function>")
        name = user + b"-" + fn
        fn_str = fn.decode("latin-1")
        if not _FUNCTION_NAME.fullmatch(name) or not _FUNCTION_NAME.fullmatch(fn):
            raise NotRouted(404, f"user {user_str!r} has no function {fn_str!r}")
        return Route(FUNCTION, b"/function/" + name + rest, user_str, fn_str, name.decode())


def _split(target: bytes) -> tuple[bytes, bytes]:
    """``b"fn/a/b?q"`` -> ``(b"fn", b"/a/b?q")``; ``b"fn?q"`` -> ``(b"fn", b"?q")``."""
    cut = len(target)
    slash = target.find(b"/")
    if slash != -1:
        cut = slash
    query = target.find(b"?", 0, cut)
    if query != -1:
        cut = query
    return target[:cut], target[cut:]


def _hostname(host: bytes | None) -> bytes:
    """Lower-case host name of a Host header, without port or trailing dot."""
    if not host:
        return b""
    host = host.strip().lower()
    if host.startswith(b"["):  # IPv6 literal, [::1]:8000
        return host[: host.find(b"]") + 1]
    name, colon, port = host.rpartition(b":")
    if colon and port.isdigit():
        host = name
    return host.rstrip(b".")


def _is_ip_literal(name: bytes) -> bool:
    return name.startswith(b"[") or (name[:1].isdigit() and _IPV4.fullmatch(name) is not None)


def _has_dot_segment(path: bytes) -> bool:
    """True when ``path`` has a ``.`` or ``..`` segment once percent-decoded (``%2e%2e``,
    ``..%2f``), with ``\\`` also taken as a separator as some servers do."""
    decoded = unquote_to_bytes(path).replace(b"\\", b"/")
    return any(segment in (b".", b"..") for segment in decoded.split(b"/"))
