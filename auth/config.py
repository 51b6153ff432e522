"""edge-auth's configuration: one frozen object, read once at start.

Every setting comes from the environment (names in :meth:`AuthConfig.from_env`), with
defaults that work on one machine beside ``ofc up``: the platform's secrets are read from
the gateway's secret store in the same state directory. A malformed value stops the
service with a message naming the variable. A missing GitHub OAuth app (client id or
secret) does not: the service starts and ``/login`` says what to set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from runtime.config import default_state_dir
from sdk.config import ConfigError, env_bool, env_duration, env_int, env_str
from sdk.tokens import DEFAULT_TTL, token_audience, token_issuer

__all__ = [
    "CLIENT_SECRET",
    "CLIENT_SECRET_PLACEHOLDER",
    "PRIVATE_KEY",
    "PUBLIC_KEY",
    "AuthConfig",
    "ConfigError",
]

# Secret names (files in the secrets directory), as ``ofc up`` creates them.
PRIVATE_KEY = "jwt-private-key"
PUBLIC_KEY = "jwt-public-key"
CLIENT_SECRET = "oauth-client-secret"
# What ``ofc up`` stores as oauth-client-secret until the operator stores the OAuth app's
# real one; edge-auth recognises it and says so instead of sending it to GitHub.
CLIENT_SECRET_PLACEHOLDER = "placeholder: store the GitHub OAuth app's client secret here"

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class AuthConfig:
    """Settings of ``python -m auth``."""

    domain: str  # the platform's domain; the cookie is set for it and every subdomain
    scheme: str  # http or https, as browsers reach the router
    public_port: int  # the router's port, as browsers reach it
    host: str
    port: int
    client_id: str  # the GitHub OAuth app's; empty: sign-in is not configured
    secrets_dir: Path  # jwt-private-key, jwt-public-key, oauth-client-secret
    github_url: str  # where users sign in (https://github.com)
    github_api_url: str  # the REST API (https://api.github.com)
    customers_path: str  # the allow-list, as github-event reads it (empty: none)
    customers_url: str
    validate_customers: bool
    token_ttl: float  # seconds a session token (and its cookie) lasts
    github_timeout: float  # limit of one call to GitHub

    @property
    def issuer(self) -> str:
        """``iss`` of the tokens issued: ``<scheme>://auth.system.<domain>[:port]``."""
        return token_issuer(self.scheme, self.domain, self.public_port)

    @property
    def audience(self) -> str:
        """``aud`` of the tokens issued: ``<scheme>://system.<domain>[:port]``."""
        return token_audience(self.scheme, self.domain, self.public_port)

    @property
    def cookie_domain(self) -> str:
        """The session cookie's ``Domain``: the root domain, so every platform host gets it.

        A single-label domain such as ``localhost`` is one browsers refuse as a cookie
        domain (Chromium keeps such a cookie on edge-auth's host alone, and the dashboard
        never sees it): there it is ``system.<domain>``, which covers the dashboard and
        edge-auth and, as it happens, no user's function host.
        """
        return self.domain if "." in self.domain else f"system.{self.domain}"

    @property
    def callback_url(self) -> str:
        """The OAuth app's callback URL, as GitHub must have it registered."""
        return f"{self.issuer}/callback"

    @property
    def default_return_url(self) -> str:
        """Where a sign-in without ``r`` ends: the dashboard."""
        return f"{self.audience}/dashboard/"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> AuthConfig:
        """Build and validate the configuration from ``env``.

        ``OFC_DOMAIN`` (``localhost``): the platform's domain; edge-auth is
        ``auth.system.<domain>`` and the session cookie's ``Domain``.
        ``OFC_PUBLIC_SCHEME`` (``http``) and ``OFC_PUBLIC_PORT`` (``8000``): how browsers
        reach the router; they make the callback URL, the token's issuer and audience.
        ``OFC_AUTH_HOST`` (``127.0.0.1``) and ``OFC_AUTH_PORT`` (``8083``): where it listens.
        ``OFC_OAUTH_CLIENT_ID``: the GitHub OAuth app's client id (empty: ``/login`` 503).
        ``OFC_AUTH_SECRETS_DIR`` (``$OFC_STATE_DIR/secrets/functions``, where ``ofc up``
        stores the platform's secrets): ``jwt-private-key`` (required), ``jwt-public-key``
        (checked against it when present), ``oauth-client-secret``.
        ``OFC_GITHUB_URL`` (``https://github.com``) and ``OFC_GITHUB_API_URL``
        (``https://api.github.com``).
        ``customers_path`` or ``customers_url``, and ``validate_customers`` (on when either
        is set): the customers allow-list, the same settings github-event reads.
        ``OFC_AUTH_TOKEN_TTL`` (``48h``): how long a session lasts.
        ``OFC_GITHUB_TIMEOUT`` (``10s``): limit of one call to GitHub.
        """
        domain = _domain(env_str(env, "OFC_DOMAIN", "localhost"))
        scheme = env_str(env, "OFC_PUBLIC_SCHEME", "http").lower()
        if scheme not in ("http", "https"):
            raise ConfigError(f"OFC_PUBLIC_SCHEME={scheme!r}: expected http or https")
        path = env_str(env, "customers_path", "")
        url = env_str(env, "customers_url", "")
        validate = env_bool(env, "validate_customers", bool(path or url))
        if validate and not (path or url):
            raise ConfigError(
                "validate_customers is on but neither customers_path nor customers_url is set"
            )
        if path and url:
            raise ConfigError("set customers_path or customers_url, not both")
        ttl = env_duration(env, "OFC_AUTH_TOKEN_TTL", DEFAULT_TTL)
        if ttl < 60:
            raise ConfigError(f"OFC_AUTH_TOKEN_TTL={env['OFC_AUTH_TOKEN_TTL']!r}: at least 60s")
        timeout = env_duration(env, "OFC_GITHUB_TIMEOUT", 10.0)
        if timeout <= 0:
            raise ConfigError(f"OFC_GITHUB_TIMEOUT={env['OFC_GITHUB_TIMEOUT']!r}: must be above 0")
        secrets_default = default_state_dir(env) / "secrets" / "functions"
        return cls(
            domain=domain,
            scheme=scheme,
            public_port=env_int(env, "OFC_PUBLIC_PORT", 8000, minimum=1, maximum=65535),
            host=env_str(env, "OFC_AUTH_HOST", "127.0.0.1"),
            port=env_int(env, "OFC_AUTH_PORT", 8083, minimum=0, maximum=65535),
            client_id=env_str(env, "OFC_OAUTH_CLIENT_ID", ""),
            secrets_dir=Path(
                env_str(env, "OFC_AUTH_SECRETS_DIR", str(secrets_default))
            ).expanduser(),
            github_url=_url("OFC_GITHUB_URL", env_str(env, "OFC_GITHUB_URL", "https://github.com")),
            github_api_url=_url(
                "OFC_GITHUB_API_URL", env_str(env, "OFC_GITHUB_API_URL", "https://api.github.com")
            ),
            customers_path=path,
            customers_url=url,
            validate_customers=validate,
            token_ttl=ttl,
            github_timeout=timeout,
        )


def _domain(value: str) -> str:
    """A DNS name: lower case, dot-separated labels, no port, no trailing dot."""
    name = value.lower()
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ConfigError(
            f"OFC_DOMAIN={value!r}: expected a domain name such as localhost or example.com "
            "(no scheme, port or path)"
        )
    if labels[-1].isdigit():
        raise ConfigError(
            f"OFC_DOMAIN={value!r}: an IP address cannot have subdomains; use a name "
            "(localhost works on one machine)"
        )
    return name


def _url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.username or parts.password:
        raise ConfigError(f"{name}: a URL with credentials in it is not accepted")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigError(f"{name}={value!r}: expected an http(s) URL such as https://github.com")
    return value.rstrip("/")
