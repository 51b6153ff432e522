"""The secrets the platform's own functions need, created once on the local runtime.

``ofc up`` calls :func:`ensure_platform_secrets` before deploying the root stack:
each missing secret is generated (random tokens, an RSA key standing in for a GitHub
App key until a real one is stored with ``ofc secret create private-key --from-file``)
and stored through the gateway's ``/system/secrets``. Existing secrets are left as they
are, and no value is ever printed.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sdk.gateway import GatewayClient

if TYPE_CHECKING:
    from ofc.local import Local

__all__ = ["PLATFORM_SECRETS", "ensure_platform_secrets", "platform_env"]

PLATFORM_SECRETS = (
    "payload-secret",
    "github-webhook-secret",
    "basic-auth-user",
    "basic-auth-password",
    "private-key",
)


def _placeholder_app_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def ensure_platform_secrets(client: GatewayClient) -> list[str]:
    """Create the missing platform secrets; returns the names it created."""
    existing = set(client.list_secrets())
    values = {
        "payload-secret": lambda: secrets.token_hex(32).encode(),
        "github-webhook-secret": lambda: secrets.token_hex(32).encode(),
        # The platform's functions call the gateway API with its own credentials.
        "basic-auth-user": lambda: client.user.encode(),
        "basic-auth-password": lambda: client.password.encode(),
        "private-key": _placeholder_app_key,
    }
    created = []
    for name in PLATFORM_SECRETS:
        if name not in existing:
            client.create_secret(name, values[name]())
            created.append(name)
    return created


def platform_env(local: Local, env: Mapping[str, str]) -> dict[str, str]:
    """What the root stack.yml substitutes on the embedded runtime, over ``env``.

    On OpenFaaS these default to the in-cluster addresses; here the platform's
    functions reach the gateway, the builder and the built-in git remote on loopback,
    and keep build logs in the state directory. An operator's own values win, except
    that the built-in remote is always added to ``GIT_HOSTS`` (git-tar may clone from it).
    """
    remote_host = urlsplit(local.git_url).netloc
    hosts = [h for h in env.get("GIT_HOSTS", "github.com").split(",") if h.strip()]
    if remote_host not in hosts:
        hosts.append(remote_host)
    defaults = {
        "GATEWAY_URL": local.gateway_url,
        "BUILDER_URL": local.builder_url,
        "PIPELINE_LOG_DIR": str(local.state_dir / "pipeline-logs"),
        "FUNCTION_URL_TEMPLATE": local.gateway_url + "/function/{name}",
        "GIT_REMOTE_URL": env.get("OFC_GIT_PUBLIC_URL", "").rstrip("/") or local.git_url,
    }
    out = {key: env.get(key) or value for key, value in defaults.items()}
    out["GIT_HOSTS"] = ",".join(hosts)
    return out
