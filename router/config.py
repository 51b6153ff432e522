"""The edge router's configuration: one frozen object, read once at start.

Every setting comes from the environment (names below), with defaults that work on one
machine beside ``ofc up``: the gateway on 8080, the git remote on 8082, edge-auth on
8083, and ``*.localhost`` (which resolves to 127.0.0.1 without any DNS set-up) as the
public domain. A malformed value stops the router with a message naming the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from runtime.config import default_state_dir
from sdk.config import ConfigError, env_duration, env_int, env_str
from sdk.tokens import public_origin

__all__ = ["ConfigError", "RouterConfig", "Upstream"]

_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
)


@dataclass(frozen=True)
class Upstream:
    """A plain-HTTP service the router forwards to: ``http://host:port[/prefix]``."""

    host: str
    port: int
    prefix: bytes  # prepended to forwarded paths; b"" or b"/something" without a trailing slash

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.prefix.decode()}"


@dataclass(frozen=True)
class RouterConfig:
    """Settings of ``python -m router``."""

    host: str
    port: int
    domain: str  # public domain: <user>.<domain>, system.<domain>, auth.system.<domain>
    public_scheme: str  # http or https, as browsers see the platform
    public_port: int  # as browsers see the router; left out of URLs when the scheme's default
    gateway: Upstream
    auth: Upstream
    git: Upstream
    gateway_secrets_dir: Path  # basic-auth-user and basic-auth-password for /system/functions
    upstream_timeout: float  # seconds to the response headers of a forwarded request
    connect_timeout: float
    auth_timeout: float  # limit of one edge-auth decision
    idle_timeout: float  # a client's idle keep-alive connection is closed after this
    refresh_interval: float  # background refresh of the function list
    refresh_min_interval: float  # refreshes (on a miss) start at most this often
    session_ttl: float  # a positive edge-auth decision is reused this long (never past exp)
    max_idle_per_upstream: int
    access_log: str  # "-": standard output; "off": none; else a file path (appended)

    def public_origin(self, subdomain: str = "") -> str:
        """``<scheme>://[<subdomain>.]<domain>[:port]``, e.g. ``http://auth.system.localhost:8000``."""
        host = f"{subdomain}.{self.domain}" if subdomain else self.domain
        return public_origin(self.public_scheme, host, self.public_port)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> RouterConfig:
        """Build and validate the configuration from ``env``.

        ``OFC_ROUTER_HOST`` (``127.0.0.1``) and ``OFC_ROUTER_PORT`` (``8000``): where it listens.
        ``OFC_DOMAIN`` (``localhost``): users' functions are at ``<user>.<domain>/<fn>``.
        ``OFC_PUBLIC_SCHEME`` (``http``) and ``OFC_PUBLIC_PORT`` (``8000``): how browsers
        reach the router (behind a TLS terminator: ``https`` and ``443``); used in the
        login redirect and ``X-Forwarded-Proto``.
        ``OFC_GATEWAY_URL`` (``http://127.0.0.1:8080``), ``OFC_AUTH_URL``
        (``http://127.0.0.1:8083``), ``OFC_GIT_URL`` (``http://127.0.0.1:8082``): upstreams.
        ``OFC_ROUTER_GATEWAY_SECRETS_DIR`` (``$OFC_STATE_DIR/secrets/gateway``): holds
        ``basic-auth-user`` and ``basic-auth-password``, read to list the functions.
        ``OFC_ROUTER_UPSTREAM_TIMEOUT`` (``60s``): wait for a forwarded request's answer.
        ``OFC_ROUTER_CONNECT_TIMEOUT`` (``5s``), ``OFC_ROUTER_AUTH_TIMEOUT`` (``5s``),
        ``OFC_ROUTER_IDLE_TIMEOUT`` (``75s``): idle client keep-alive connections.
        ``OFC_ROUTER_REFRESH_INTERVAL`` (``2s``): background refresh of the function list.
        ``OFC_ROUTER_REFRESH_MIN_INTERVAL`` (``250ms``): a request for a function not in the
        list waits for a refresh; refreshes start at most this often.
        ``OFC_ROUTER_SESSION_TTL`` (``5s``): how long an edge-auth "yes" is reused per token.
        ``OFC_ROUTER_MAX_IDLE_PER_UPSTREAM`` (``64``): idle keep-alive connections kept per
        upstream; below waitress' default limit of 100 connections (edge-auth runs on it),
        which idle ones would otherwise use up.
        ``OFC_ROUTER_ACCESS_LOG`` (``-``): ``-`` for standard output, ``off``, or a file.
        """
        state_dir = default_state_dir(env)
        scheme = env_str(env, "OFC_PUBLIC_SCHEME", "http").lower()
        if scheme not in ("http", "https"):
            raise ConfigError(f"OFC_PUBLIC_SCHEME={scheme!r}: expected http or https")
        domain = env_str(env, "OFC_DOMAIN", "localhost").lower().rstrip(".")
        if not _DOMAIN.match(domain):
            raise ConfigError(
                f"OFC_DOMAIN={domain!r}: expected a DNS name such as localhost or example.com"
            )
        secrets = env_str(
            env, "OFC_ROUTER_GATEWAY_SECRETS_DIR", str(state_dir / "secrets" / "gateway")
        )
        return cls(
            host=env_str(env, "OFC_ROUTER_HOST", "127.0.0.1"),
            port=env_int(env, "OFC_ROUTER_PORT", 8000, minimum=0, maximum=65535),
            domain=domain,
            public_scheme=scheme,
            public_port=env_int(env, "OFC_PUBLIC_PORT", 8000, minimum=1, maximum=65535),
            gateway=_upstream(env, "OFC_GATEWAY_URL", "http://127.0.0.1:8080"),
            auth=_upstream(env, "OFC_AUTH_URL", "http://127.0.0.1:8083"),
            git=_upstream(env, "OFC_GIT_URL", "http://127.0.0.1:8082"),
            gateway_secrets_dir=Path(secrets).expanduser(),
            upstream_timeout=_positive(env, "OFC_ROUTER_UPSTREAM_TIMEOUT", 60.0),
            connect_timeout=_positive(env, "OFC_ROUTER_CONNECT_TIMEOUT", 5.0),
            auth_timeout=_positive(env, "OFC_ROUTER_AUTH_TIMEOUT", 5.0),
            idle_timeout=_positive(env, "OFC_ROUTER_IDLE_TIMEOUT", 75.0),
            refresh_interval=_positive(env, "OFC_ROUTER_REFRESH_INTERVAL", 2.0),
            refresh_min_interval=env_duration(env, "OFC_ROUTER_REFRESH_MIN_INTERVAL", 0.25),
            session_ttl=env_duration(env, "OFC_ROUTER_SESSION_TTL", 5.0),
            max_idle_per_upstream=env_int(
                env, "OFC_ROUTER_MAX_IDLE_PER_UPSTREAM", 64, minimum=1, maximum=10000
            ),
            access_log=env_str(env, "OFC_ROUTER_ACCESS_LOG", "-"),
        )


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    seconds = env_duration(env, name, default)
    if seconds <= 0:
        raise ConfigError(f"{name}={env[name]!r}: must be above 0")
    return seconds


def _upstream(env: Mapping[str, str], name: str, default: str) -> Upstream:
    value = env_str(env, name, default)
    parts = urlsplit(value)
    if parts.username or parts.password:
        # The value is not repeated: it holds a password.
        raise ConfigError(f"{name}: a URL with credentials in it is not accepted")
    if parts.scheme != "http" or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(
            f"{name}={value!r}: expected a plain http URL such as http://127.0.0.1:8080 "
            "(the router reaches its upstreams without TLS, on loopback or a private network)"
        )
    try:
        port = parts.port or 80
    except ValueError:
        raise ConfigError(f"{name}={value!r}: the port is not a number from 1 to 65535") from None
    return Upstream(parts.hostname, port, parts.path.rstrip("/").encode())
