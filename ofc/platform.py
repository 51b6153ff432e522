"""The secrets the platform's own functions need, created once on the local runtime.

``ofc up`` calls :func:`ensure_platform_secrets` before deploying the root stack:
each missing secret is generated (random tokens, an RSA key standing in for a GitHub
App key until a real one is stored with ``ofc secret create private-key --from-file``,
the EC key pair of the session token, and a placeholder for the GitHub OAuth app's
client secret, which edge-auth recognises and asks the operator to replace) and stored
through the gateway's ``/system/secrets``. Existing secrets are left as they
are, and no value is ever printed.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from auth.config import CLIENT_SECRET_PLACEHOLDER
from sdk.config import env_int, env_str
from sdk.gateway import GatewayClient
from sdk.tokens import generate_keypair, public_origin

if TYPE_CHECKING:
    from ofc.local import Local

__all__ = ["PLATFORM_SECRETS", "PublicUrls", "ensure_platform_secrets", "platform_env", "public_urls"]

PLATFORM_SECRETS = (
    "payload-secret",
    "github-webhook-secret",
    "basic-auth-user",
    "basic-auth-password",
    "private-key",
    "jwt-private-key",
    "jwt-public-key",
    "oauth-client-secret",
)


def _placeholder_app_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def ensure_platform_secrets(client: GatewayClient) -> list[str]:
    """Create the missing platform secrets; returns the names it created."""
    existing = set(client.list_secrets())
    # The session token's key pair (edge-auth signs, the dashboard verifies): when either
    # half is missing both are made anew, so the two secrets always match.
    if {"jwt-private-key", "jwt-public-key"} - existing:
        existing -= {"jwt-private-key", "jwt-public-key"}
        jwt_private, jwt_public = generate_keypair()
    values = {
        "payload-secret": lambda: secrets.token_hex(32).encode(),
        "github-webhook-secret": lambda: secrets.token_hex(32).encode(),
        # The platform's functions call the gateway API with its own credentials.
        "basic-auth-user": lambda: client.user.encode(),
        "basic-auth-password": lambda: client.password.encode(),
        "private-key": _placeholder_app_key,
        "jwt-private-key": lambda: jwt_private,
        "jwt-public-key": lambda: jwt_public,
        # Until the operator stores the GitHub OAuth app's own (edge-auth's /login says so).
        "oauth-client-secret": lambda: CLIENT_SECRET_PLACEHOLDER.encode(),
    }
    created = []
    for name in PLATFORM_SECRETS:
        if name not in existing:
            client.create_secret(name, values[name]())
            created.append(name)
    return created


@dataclass(frozen=True)
class PublicUrls:
    """What users see: the edge-router's addresses (OFC_DOMAIN, OFC_PUBLIC_SCHEME/PORT).

    ``*.localhost`` names reach loopback in browsers and curl without DNS; the path
    style on the router's own address works with any client.
    """

    scheme: str
    domain: str
    port: int
    router_url: str  # loopback address of the router

    def function(self, owner: str, name: str) -> str:
        return public_origin(self.scheme, f"{owner.lower()}.{self.domain}", self.port) + f"/{name}"

    @property
    def function_template(self) -> str:
        """``function_url_template`` for the pipeline (sdk/urls.py placeholders)."""
        return self.function("{owner}", "{short_name}")

    @property
    def path_style(self) -> str:
        return f"{self.router_url}/<user>/<function>"

    @property
    def git(self) -> str:
        return f"{self.router_url}/git"

    @property
    def dashboard(self) -> str:
        return public_origin(self.scheme, f"system.{self.domain}", self.port) + "/dashboard/"


def public_urls(local: Local, env: Mapping[str, str]) -> PublicUrls:
    """The edge's public addresses for ``local`` (router port unless OFC_PUBLIC_PORT says)."""
    router_port = int(local.router_url.rsplit(":", 1)[-1])
    return PublicUrls(
        scheme=env_str(env, "OFC_PUBLIC_SCHEME", "http"),
        domain=env_str(env, "OFC_DOMAIN", "localhost"),
        port=env_int(env, "OFC_PUBLIC_PORT", router_port, minimum=1, maximum=65535),
        router_url=local.router_url,
    )


def platform_env(local: Local, env: Mapping[str, str]) -> dict[str, str]:
    """What the root stack.yml substitutes on the embedded runtime, over ``env``.

    On OpenFaaS these default to the in-cluster addresses; here the platform's
    functions reach the gateway, the builder and the built-in git remote on loopback,
    and keep build logs in the state directory. An operator's own values win, except
    that the built-in remote is always added to ``GIT_HOSTS`` (git-tar may clone from it).
    """
    remote_host = urlsplit(local.git_url).netloc
    public = public_urls(local, env)
    hosts = [h for h in env.get("GIT_HOSTS", "github.com").split(",") if h.strip()]
    if remote_host not in hosts:
        hosts.append(remote_host)
    defaults = {
        "GATEWAY_URL": local.gateway_url,
        "BUILDER_URL": local.builder_url,
        "PIPELINE_LOG_DIR": str(local.state_dir / "pipeline-logs"),
        # Users reach their functions through the edge-router, at user-prefixed hosts.
        "FUNCTION_URL_TEMPLATE": public.function_template,
        # The edge's public port names the session token's issuer and audience: the
        # dashboard must agree with edge-auth and the router, which ofc up gives the same.
        "OFC_PUBLIC_PORT": str(public.port),
        "DASHBOARD_URL": public.dashboard.rstrip("/"),
        "GIT_REMOTE_URL": env.get("OFC_GIT_PUBLIC_URL", "").rstrip("/") or local.git_url,
        # The registry of `ofc up --containers`' engine, where users' images go.
        "PUSH_REPOSITORY_URL": env.get("OFC_REGISTRY") or "127.0.0.1:5000",
    }
    out = {key: env.get(key) or value for key, value in defaults.items()}
    out["GIT_HOSTS"] = ",".join(hosts)
    return out
